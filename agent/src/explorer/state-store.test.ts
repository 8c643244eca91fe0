import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StressProfile } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { explore } from "./explore.js";
import { FunctionRunner } from "./runner.js";
import { ExplorerStateStore } from "./state-store.js";

const evaluator = (p: StressProfile) => {
  const sigs = p.cpu_load > 1.5 ? ["cpu-starved"] : [];
  if (p.memory_load > 0.9) sigs.push("oom");
  return { failed: sigs.length > 0, signatures: sigs };
};

test("state survives a LevelDB close and reopen, and a resumed campaign continues where it stopped", async () => {
  const dir = mkdtempSync(join(tmpdir(), "explorer-state-"));
  try {
    const common = {
      strategy: "adaptive" as const,
      seed: 5,
      initialDesign: 8,
      boundaryBootstrap: 0,
      batchSize: 4,
    };
    // Reference: one uninterrupted campaign of 16.
    const whole = await explore({ ...common, runner: new FunctionRunner(evaluator), budget: 16 });

    let store = new ExplorerStateStore(dir);
    await store.open();
    const first = await explore({
      ...common,
      runner: new FunctionRunner(evaluator),
      budget: 8,
      store,
      vmId: "vm-1",
    });
    await store.close();

    store = new ExplorerStateStore(dir);
    await store.open();
    const saved = await store.load("vm-1");
    assert.ok(saved);
    assert.is(saved!.trials.length, 8);
    assert.is(saved!.vm_id, "vm-1");
    assert.equal(await store.list(), ["vm-1"]);
    assert.is(await store.load("vm-unknown"), undefined);

    const second = await explore({
      ...common,
      runner: new FunctionRunner(evaluator),
      budget: 8,
      store,
      vmId: "vm-1",
    });
    assert.equal(
      [...first.trials, ...second.trials].map((t) => t.profile),
      whole.trials.map((t) => t.profile),
      "8 + 8 across a restart = the same 16 as one campaign",
    );
    assert.equal(second.signatures_found.sort(), whole.signatures_found.sort());
    assert.is((await store.load("vm-1"))!.trials.length, 16);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("priors are imported once from a stored similar VM, not again on resume", async () => {
  const dir = mkdtempSync(join(tmpdir(), "explorer-priors-"));
  try {
    const store = new ExplorerStateStore(dir);
    await store.open();
    await explore({
      runner: new FunctionRunner(evaluator),
      budget: 12,
      strategy: "random",
      seed: 1,
      store,
      vmId: "vm-a",
    });
    const a = (await store.load("vm-a"))!;
    const opts = {
      runner: new FunctionRunner(evaluator),
      budget: 4,
      strategy: "adaptive" as const,
      seed: 2,
      store,
    };
    await explore({ ...opts, vmId: "vm-b", priors: [a], priorWeight: 0.25 });
    await explore({ ...opts, vmId: "vm-b", priors: [a], priorWeight: 0.25 });
    const b = (await store.load("vm-b"))!;
    assert.is(b.priors.length, 12);
    assert.ok(b.priors.every((t) => t.source === "vm-a" && t.weight === 0.25));
    assert.is(b.trials.length, 8);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
