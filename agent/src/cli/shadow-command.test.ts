import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { loadAgentConfig } from "../config/agent-config.js";
import { newRecord, writeRecord } from "../shadow/registry.js";
import { main } from "./main.js";
import { describeReap, parseProfiles, reapFoundNothing, reapShadowLeftovers } from "./shadow-command.js";

const P = { cpu_load: 2, memory_load: 0, io_load: 0, net_latency_ms: 0, net_loss_pct: 0, duration_s: 30 };

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) }, {});
  return { code, out, err };
}

test("profiles: inline object, inline array, file; validated with the key named", () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-prof-"));
  try {
    const file = join(dir, "p.json");
    writeFileSync(file, JSON.stringify([P, { ...P, faults: [{ kind: "nmi", rate: 0.5, at_s: 3 }] }]));
    const ps = parseProfiles([JSON.stringify(P), file]);
    assert.is(ps.length, 3);
    assert.equal(ps[2]!.faults, [{ kind: "nmi", rate: 0.5, at_s: 3 }]);
    assert.throws(
      () => parseProfiles([JSON.stringify({ ...P, cpu_load: -1 })]),
      /cpu_load must be a number >= 0 \(actual: -1\)/,
    );
    assert.throws(
      () => parseProfiles([JSON.stringify([P, { ...P, faults: [{ kind: "meteor", rate: 1, at_s: 0 }] }])]),
      /profile 2: .*faults\[0\]\.kind/,
    );
    assert.throws(() => parseProfiles([join(dir, "missing.json")]), /not JSON and no such file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("shadow: usage errors exit 2 with the reason", async () => {
  const data = mkdtempSync(join(tmpdir(), "svm-cli-"));
  try {
    const none = await run(["shadow", "--data-dir", data]);
    assert.is(none.code, 2);
    assert.match(none.err, /shadow needs an action: run, capabilities or reap/);
    const noProfile = await run(["shadow", "run", "cap-1", "--data-dir", data]);
    assert.is(noProfile.code, 2);
    assert.match(noProfile.err, /needs --profile/);
    const count = await run([
      "shadow",
      "run",
      "cap-1",
      "--data-dir",
      data,
      "--profile",
      JSON.stringify([P, P]),
      "--count",
      "3",
    ]);
    assert.is(count.code, 2);
    assert.match(count.err, /--count 3 does not match the 2 profiles/);
    const net = await run([
      "shadow",
      "run",
      "cap-1",
      "--data-dir",
      data,
      "--profile",
      JSON.stringify(P),
      "--network",
      "bridge",
    ]);
    assert.is(net.code, 2);
    assert.match(net.err, /--network must be user or netns/);
    const help = await run(["shadow", "--help"]);
    assert.is(help.code, 0);
    assert.match(help.out, /shadowvm-agent shadow run <capture-id> --profile <json\|file>/);
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
});

test("reap at start-up: a missing data directory or one that is a file is nothing to reap, and nothing is created", async () => {
  const root = mkdtempSync(join(tmpdir(), "svm-reap-"));
  try {
    const missing = join(root, "not-yet");
    const fresh = await reapShadowLeftovers(loadAgentConfig({ file: undefined, dataDir: missing }, {}));
    assert.ok(reapFoundNothing(fresh), describeReap(fresh));
    assert.equal(fresh.restored, []);
    assert.not.ok(existsSync(missing), "the reaper created the data directory");
    // A data directory that is a file: the reaper does not throw, it has nothing to reap there.
    const file = join(root, "a-file");
    writeFileSync(file, "");
    const odd = await reapShadowLeftovers(loadAgentConfig({ file: undefined, dataDir: file }, {}));
    assert.is(odd.shadows.length + odd.dirs.length + odd.restored.length, 0);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("reap at start-up: a dead agent's shadow and restored capture go, a live agent's stay; the report says so", async () => {
  const data = mkdtempSync(join(tmpdir(), "svm-reap-"));
  try {
    const config = loadAgentConfig({ file: undefined, dataDir: data }, {});
    const shadows = join(data, "shadows");
    const dead = join(shadows, "dead-1");
    const live = join(shadows, "live-1");
    mkdirSync(dead, { recursive: true });
    mkdirSync(live, { recursive: true });
    writeRecord({ ...newRecord("dead-1", "c", dead), agent: { pid: 2 ** 22 + 1, startTicks: 1 } });
    writeFileSync(join(dead, "overlay-0.qcow2"), "");
    writeRecord(newRecord("live-1", "c", live)); // owned by this (live) process
    const deadRun = join(data, "restored", "run-1");
    const liveRun = join(data, "restored", "run-2");
    mkdirSync(deadRun, { recursive: true });
    mkdirSync(liveRun, { recursive: true });
    writeFileSync(join(deadRun, "owner.pid"), String(2 ** 22 + 1));
    writeFileSync(join(liveRun, "owner.pid"), String(process.pid));

    const report = await reapShadowLeftovers(config);
    assert.equal(report.shadows, ["dead-1"]);
    assert.equal(report.skipped, ["live-1"]);
    assert.equal(report.restored, ["run-1"]);
    assert.equal(report.errors, []);
    assert.not.ok(existsSync(dead));
    assert.ok(existsSync(live));
    assert.not.ok(existsSync(deadRun));
    assert.ok(existsSync(liveRun));
    assert.not.ok(reapFoundNothing(report));
    assert.match(
      describeReap(report),
      /reaped 1 shadow\(s\).*1 restored capture\(s\) removed; 1 shadow\(s\) of a live agent left alone/,
    );
    // The report is what serve logs: plain JSON.
    assert.equal(JSON.parse(JSON.stringify(report)), report);
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
});

test.run();
