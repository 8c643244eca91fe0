import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_PROFILE_BOUNDS } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import type { SignatureBoundary } from "./boundary.js";
import { formatSummary, parseExploreArgs, runExploreCommand } from "./cli.js";
import { ProfileSpace } from "./space.js";

const dir = mkdtempSync(join(tmpdir(), "explorer-cli-"));
const oracleFile = join(dir, "oracle.mjs");
writeFileSync(
  oracleFile,
  `import { createInterface } from "node:readline";
let n = 0;
for await (const line of createInterface({ input: process.stdin })) {
  const p = JSON.parse(line);
  n++;
  if (process.argv[2] === "break" && n === 3) { console.log("oops"); continue; }
  const sigs = p.cpu_load > 1.4 ? ["cpu-starved"] : [];
  console.log(JSON.stringify({ failed: sigs.length > 0, signatures: sigs }));
}`,
);
const oracle = `${JSON.stringify(process.execPath)} ${JSON.stringify(oracleFile)}`;

function capture() {
  const out = { stdout: "", stderr: "" };
  const io = {
    stdout: (t: string) => {
      out.stdout += t;
    },
    stderr: (t: string) => {
      out.stderr += t;
    },
  };
  return { out, io };
}

test("--json prints trials, signatures_found and boundary", async () => {
  const { out, io } = capture();
  const code = await runExploreCommand(["--oracle", oracle, "--budget", "12", "--seed", "3", "--json"], io);
  assert.is(code, 0, out.stderr);
  const res = JSON.parse(out.stdout);
  assert.is(res.trials.length, 12);
  assert.equal(Object.keys(res.trials[0]).sort(), ["outcome", "profile"]);
  assert.ok(Array.isArray(res.signatures_found));
  assert.type(res.boundary, "object");
  for (const s of res.signatures_found) assert.ok(res.boundary[s].observed_min_stress > 0);
});

test("readable summary, baseline strategy, vm profile and fault list", async () => {
  const vm = join(dir, "vm.json");
  writeFileSync(
    vm,
    JSON.stringify({ average_cpu_usage: 1.2, average_memory_usage: 0.5, average_disk_io: 0.3 }),
  );
  const { out, io } = capture();
  const code = await runExploreCommand(
    [
      "--oracle",
      oracle,
      "--budget=8",
      "--strategy",
      "baseline",
      "--vm-profile",
      vm,
      "--faults",
      "memory_error",
    ],
    io,
  );
  assert.is(code, 0, out.stderr);
  assert.match(out.stdout, /strategy baseline, seed 1: 8 trials/);
  // cpu 1.2 * 1.2 = 1.44 +- 0.2 often crosses the oracle's 1.4.
  assert.match(out.stdout, /cpu-starved: first at trial \d+/);
  assert.match(out.stderr, /8\/8 trials/);
});

test("the readable summary says which knobs could stand in for a need the runs leave open", () => {
  // Full CPU, everything else idle.
  const space = new ProfileSpace({ bounds: DEFAULT_PROFILE_BOUNDS, faultKinds: [], durationS: 60 });
  const profile = space.fromUnit(space.dims.map((d) => (d.kind === "knob" && d.knob === "cpu_load" ? 1 : 0)));
  const boundary: SignatureBoundary = {
    trials_with_signature: 1,
    observed_min_stress: 1.9,
    observed_min_profile: profile,
    min_stress: 0.95,
    min_stress_profile: profile,
    needs: [
      {
        knob: "cpu_load",
        at_least: 1.9,
        between: [1.8, 2],
        established: false,
        stand_ins: ["io_load", "fault:nmi"],
      },
      { knob: "memory_load", at_least: 0.5, between: [0.4, 0.6], established: false, stand_ins: [] },
      { knob: "net_loss_pct", at_least: 20, between: [10, 30], established: true },
    ],
    runs_meeting_needs_without_it: 0,
    min_stress_interval: null,
    bootstrap_support: null,
    model_min_stress: null,
  };
  const text = formatSummary({
    strategy: "adaptive",
    seed: 1,
    trials: [{ profile, outcome: { failed: true, signatures: ["hang"] }, strategy: "adaptive" }],
    signatures_found: ["hang"],
    boundary: { hang: boundary },
  });
  assert.match(text, "cpu_load >= 1.90 (runs: 1.80-2.00) (or instead: io_load, fault:nmi)");
  assert.match(text, "memory_load >= 0.50 (runs: 0.40-0.60) (may not be needed)");
  assert.match(text, /net_loss_pct >= 20 \(runs: 10-30\)(,|\n|$)/);
});

test("bad arguments exit 2 with a message", async () => {
  for (const argv of [
    [],
    ["--oracle", oracle, "--budget", "x"],
    ["--oracle", oracle, "--strategy", "greedy"],
    ["--oracle", oracle, "--faults", "meteor_strike"],
    ["--oracle", oracle, "--vm-id", "a"],
    ["--oracle", oracle, "--vm-profile", join(dir, "missing.json")],
    ["--oracle", oracle, "--frobnicate", "1"],
  ]) {
    const { out, io } = capture();
    assert.is(await runExploreCommand(argv, io), 2, argv.join(" "));
    assert.match(out.stderr, /^explore: /);
  }
  assert.is(parseExploreArgs(["--help"]), "help");
});

test("a broken oracle exits 1, still printing the trials before the break", async () => {
  const { out, io } = capture();
  const code = await runExploreCommand(["--oracle", `${oracle} break`, "--budget", "8", "--json"], io);
  assert.is(code, 1);
  const res = JSON.parse(out.stdout);
  assert.is(res.trials.length, 2);
  assert.match(res.error.message, /answer 3 is not JSON: "oops"/);
  assert.match(out.stderr, /stopped early/);
});

test("--state-db/--vm-id resume a VM's campaign; --prior-vm imports another's", async () => {
  const db = join(dir, "state");
  const run = async (...extra: string[]) => {
    const { out, io } = capture();
    const code = await runExploreCommand(
      ["--oracle", oracle, "--budget", "4", "--json", "--state-db", db, ...extra],
      io,
    );
    assert.is(code, 0, out.stderr);
    return out;
  };
  await run("--vm-id", "a");
  await run("--vm-id", "a");
  const b = await run("--vm-id", "b", "--prior-vm", "a,ghost");
  assert.match(b.stderr, /no saved state for prior VM "ghost"/);
});

test.run();
