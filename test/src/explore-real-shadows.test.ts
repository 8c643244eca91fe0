// Issue 6 on real shadows: `shadowvm-agent explore --vm <demo VM>` without an oracle runs a
// 12-run adaptive campaign on isolated shadows of a live capture of the demo VM (QEMU under TCG),
// finds at least two distinct real failure signatures and reports its boundary estimate; every
// run, failure and signature update is spooled for the collector; no shadow is left behind.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { needLabel, type SignatureBoundary } from "@shadowvm/agent/explorer/boundary";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { qemuProcesses, tempWorkDir, withDemoVm } from "./support/demo-guest.js";
import { AGENT_BIN, runCli } from "./support/run-cli.js";
import { spooledByClass } from "./support/spool-stats.js";

const T0 = Date.now();
const log = (m: string) =>
  process.stderr.write(`[explore-real +${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);

test("a 12-run adaptive campaign on real shadows finds >= 2 distinct failure signatures", async () => {
  const data = tempWorkDir("svm-explore-");
  await withDemoVm({ name: "explore-prod", readyTimeoutMs: 240_000 }, async (vm) => {
    const env = {
      SHADOWVM_AGENT__AGENT_ID: "explore-host",
      SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: JSON.stringify([vm.qmpSocket]),
      SHADOWVM_AGENT__SHADOW__PROBE_PATH: "/cgi-bin/health",
      SHADOWVM_AGENT__SHADOW__HOST_RESERVE_MB: "512",
    };
    const t0 = Date.now();
    const r = await runCli(
      AGENT_BIN,
      [
        "explore",
        "--vm",
        "explore-prod",
        "--data-dir",
        data,
        "--budget",
        "12",
        "--batch-size",
        "3",
        "--duration",
        "40",
        "--strategy",
        "adaptive",
        "--seed",
        "7",
        "--json",
      ],
      { env, timeoutMs: 20 * 60_000 },
    );
    log(`explore exited ${r.code} after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    process.stderr.write(r.stderr.split("\n").slice(-60).join("\n"));
    assert.is(r.code, 0, r.stderr.slice(-3000));
    const out = JSON.parse(r.stdout) as {
      trials: { profile: Record<string, unknown>; outcome: { failed: boolean; signatures: string[] } }[];
      signatures_found: string[];
      boundary: Record<string, SignatureBoundary>;
      signatures: Record<string, { title: string; class: string }>;
      capture: string;
    };
    assert.is(out.trials.length, 12);
    log(
      `signatures: ${out.signatures_found.map((fp) => `${out.signatures[fp]?.class}: ${out.signatures[fp]?.title}`).join(" | ")}`,
    );
    assert.ok(out.signatures_found.length >= 2, `distinct signatures: ${JSON.stringify(out.signatures)}`);
    // A boundary estimate per signature: what it needs and its least stress, never above the least
    // stress it was seen at.
    for (const fp of out.signatures_found) {
      assert.ok(out.signatures[fp]?.title, `signature ${fp} has a title`);
      const b = out.boundary[fp];
      assert.ok(b, `boundary estimate for ${fp}`);
      assert.ok(b.trials_with_signature >= 1);
      assert.type(b.observed_min_stress, "number");
      assert.ok(b.min_stress <= b.observed_min_stress, `${fp}: ${b.min_stress} > ${b.observed_min_stress}`);
      assert.ok(b.needs.length >= 1, `${fp} needs some stress`);
      for (const n of b.needs) {
        // The estimate lies in the bracket the runs without and with the signature put it in.
        assert.ok(n.between[0] <= n.at_least && n.at_least <= n.between[1], `${fp} ${JSON.stringify(n)}`);
      }
      // And the interval it likely lies in holds the estimate, under the least stress seen.
      assert.ok(b.min_stress_interval, `${fp}: an interval`);
      const [lo, hi] = b.min_stress_interval;
      assert.ok(
        lo <= b.min_stress && b.min_stress <= hi && hi <= b.observed_min_stress,
        `${fp}: [${lo}, ${hi}]`,
      );
      const needs = b.needs.map((n) => `${needLabel(n)} (runs ${n.between.join("-")})`).join(" ");
      log(
        `boundary ${out.signatures[fp]?.title}: least stress seen ${b.observed_min_stress}, estimated ${b.min_stress} (likely ${lo}-${hi}), needs ${needs}`,
      );
    }
    const failed = out.trials.filter((t) => t.outcome.failed).length;
    log(`${failed} of 12 runs failed`);

    // The runs wait in the spool for the collector: 1 capture, every run twice (started,
    // finished; control included), the failures inside them, one update per signature.
    const byClass = await spooledByClass(data, "explore-host");
    log(`spooled: ${JSON.stringify(byClass)}`);
    assert.is(byClass.capture.frames, 1);
    assert.ok(byClass.shadow_run.frames >= 2 * 13, "12 stressed runs and a control, started and finished");
    assert.ok(byClass.signature.frames >= out.signatures_found.length);
  });
  // Torn down: no shadow QEMU of this data dir, no restored plaintext.
  assert.equal(qemuProcesses(data), []);
  assert.equal(readdirSync(join(data, "restored")), []);
});

test.run();
