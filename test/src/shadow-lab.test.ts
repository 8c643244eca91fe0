// Issue 4 under real QEMU, through the agent's CLI (`shadowvm-agent shadow run`):
// - K=3 shadows of one capture of the demo VM run concurrently: an unstressed control for
//   3 minutes that must stay clean, one with disk I/O errors (blkdebug under its overlay), one
//   starved of CPU (cgroup quota); the two stressed guests really suffer (kernel reports on the
//   console, failed service probes); afterwards no QEMU process, overlay, namespace or cgroup is
//   left.
// - An agent killed with SIGKILL in the middle of a run (netns mode, so namespaces and in-netns
//   forwarders are left too) leaves its shadows running; the next agent reaps all of it.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { DemoVm } from "@shadowvm/agent/demo/demo-vm";
import { startDemoVm } from "@shadowvm/agent/demo/demo-vm";
import { detectCgroups, ShadowCgroups } from "@shadowvm/agent/host/cgroups";
import { shadowsTag } from "@shadowvm/agent/shadow/registry";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ensureGuestImage, qemuProcesses, tempWorkDir } from "./support/demo-guest.js";
import { AGENT_BIN, runCli } from "./support/run-cli.js";

const T0 = Date.now();
const log = (m: string) =>
  process.stderr.write(`[shadow-lab +${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);

const data = tempWorkDir("svm-lab-");
const shadows = join(data, "shadows");
const tag = shadowsTag(shadows);
const env = {
  SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: "[]",
  SHADOWVM_AGENT__SHADOW__PROBE_PATH: "/cgi-bin/health",
};
let vm: DemoVm | undefined;
let captureId = "";

const idle = { cpu_load: 0, memory_load: 0, io_load: 0, net_latency_ms: 0, net_loss_pct: 0 };

/** Everything a shadow of this data directory could leave on the host. */
function traces(): {
  qemu: number;
  forwarders: number;
  netns: string[];
  cgroups: string[];
  dirs: string[];
  restored: string[];
} {
  const netns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(`svm${tag}-`));
  const cg = ShadowCgroups.forTag(detectCgroups(), tag);
  const cgroups = cg.parentDirs().filter((d) => existsSync(d));
  const forwarders = readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const cmd = execFileSync("cat", [`/proc/${p}/cmdline`], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "ignore"],
        });
        return cmd.includes("netns-forwarder.js") && cmd.includes(data);
      } catch {
        return false;
      }
    }).length;
  return {
    qemu: qemuProcesses(shadows).length,
    forwarders,
    netns,
    cgroups: [...cgroups, ...cg.children()],
    dirs: existsSync(shadows) ? readdirSync(shadows) : [],
    restored: existsSync(join(data, "restored")) ? readdirSync(join(data, "restored")) : [],
  };
}

const clean = { qemu: 0, forwarders: 0, netns: [], cgroups: [], dirs: [], restored: [] };

test.before(async () => {
  const { dir } = await ensureGuestImage();
  vm = await startDemoVm({ name: "lab-prod", workDir: join(data, "vm"), guestDir: dir });
  const ready = await vm.waitReady(180_000);
  log(`production ready in ${ready.readyMs} ms`);
  const cap = await runCli(
    AGENT_BIN,
    ["capture", vm.qmpSocket, "--qmp", vm.qmpSocket, "--data-dir", data, "--json"],
    {
      env,
      timeoutMs: 300_000,
    },
  );
  assert.is(cap.code, 0, cap.stderr);
  captureId = (JSON.parse(cap.stdout) as { id: string }).id;
  log(`captured ${captureId}`);
});

test.after(async () => {
  await vm?.stop({ timeoutMs: 10_000 });
  // Whatever a failed test left: the agent's own reaper, then the directory.
  await runCli(AGENT_BIN, ["shadow", "reap", "--data-dir", data], { env, timeoutMs: 120_000 }).catch(
    () => undefined,
  );
  execFileSync("rm", ["-rf", data]);
});

test("K=3 concurrent shadows: the control runs clean for 3 minutes, disk I/O errors and CPU starvation break the guest, nothing is left", async () => {
  const disk = { ...idle, faults: [{ kind: "disk_io_error", rate: 0.5, at_s: 10 }], duration_s: 150 };
  const cpu = { ...idle, cpu_load: 30, duration_s: 150 };
  const t0 = Date.now();
  const run = await runCli(
    AGENT_BIN,
    [
      "shadow",
      "run",
      captureId,
      "--data-dir",
      data,
      "--profile",
      JSON.stringify([disk, cpu]),
      "--control",
      "--control-duration",
      "180",
      "--json",
    ],
    { env, timeoutMs: 600_000 },
  );
  log(`shadow run took ${Date.now() - t0} ms, exit ${run.code}\n${run.stderr}`);
  assert.is(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout) as {
    control?: { healthy: boolean };
    runs: {
      shadow: string;
      control: boolean;
      profile: { cpu_load: number; faults: { kind: string }[] };
      outcome: string;
      failures: { class: string; title: string; fingerprint: string; source: string }[];
      probes?: { sent: number; ok: number; failed: number };
      ran_ms?: number;
      start_ms?: number;
      console_tail?: string[];
    }[];
  };
  assert.is(result.runs.length, 3);
  for (const r of result.runs) {
    assert.ok(r.start_ms !== undefined, `${r.shadow} started`);
    for (const f of r.failures) {
      assert.type(f.class, "string");
      assert.type(f.title, "string");
      assert.match(f.fingerprint, /^[0-9a-f]+$/);
    }
  }

  // Concurrency: all three were running before the first one stopped.
  const lines = run.stderr.split("\n");
  const firstStop = lines.findIndex((l) => / stopped \(/.test(l));
  const starts = lines.filter(
    (l, i) => / started( \(control\))? in \d+ ms/.test(l) && (firstStop < 0 || i < firstStop),
  );
  assert.is(starts.length, 3, `three shadows running at once:\n${run.stderr}`);

  const control = result.runs.find((r) => r.control)!;
  assert.is(control.outcome, "ok", `control: ${JSON.stringify(control)}`);
  assert.equal(control.failures, []);
  assert.ok((control.ran_ms ?? 0) >= 180_000, `the control ran 3 minutes (${control.ran_ms} ms)`);
  assert.ok(
    control.probes && control.probes.sent >= 100 && control.probes.failed === 0,
    `control probes: ${JSON.stringify(control.probes)}`,
  );
  assert.is(result.control?.healthy, true, "the control validates the capture");

  const diskRun = result.runs.find((r) => r.profile.faults.some((f) => f.kind === "disk_io_error"))!;
  assert.is(diskRun.outcome, "failed");
  const diskConsole = diskRun.failures.filter((f) => f.source === "console");
  assert.ok(
    diskConsole.some((f) => f.class === "io_error") && diskConsole.some((f) => f.class === "fs_error"),
    `the guest kernel reports I/O and file system errors: ${JSON.stringify(diskRun.failures)}`,
  );

  const cpuRun = result.runs.find((r) => r.profile.cpu_load === 30)!;
  assert.is(cpuRun.outcome, "failed");
  assert.ok(
    cpuRun.failures.some((f) => f.source === "heartbeat" && f.class === "hang"),
    `its service stops answering: ${JSON.stringify(cpuRun.failures)}`,
  );
  assert.ok(
    cpuRun.probes && cpuRun.probes.failed >= 6,
    `failed service probes: ${JSON.stringify(cpuRun.probes)}`,
  );
  // Under TCG a starved guest's own clock slows with it, so its lockup detectors (guest-time
  // based) fire only sometimes; its timekeeping watchdog complains every time.
  const starvedConsole = (cpuRun.console_tail ?? []).filter((l) =>
    /clocksource|rcu.*stall|soft lockup|blocked for more than/.test(l),
  );
  assert.ok(
    starvedConsole.length > 0 || cpuRun.failures.some((f) => f.source === "console"),
    `the starved guest's kernel says so on the console: ${JSON.stringify(cpuRun.console_tail)}`,
  );
  log(`starved guest's console: ${starvedConsole.join(" | ")}`);

  assert.equal(traces(), clean, "no QEMU, forwarder, namespace, cgroup, shadow or restored directory left");
});

test("an agent killed with SIGKILL mid-run leaves its shadows behind; the next agent reaps every trace", async () => {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      AGENT_BIN,
      "shadow",
      "run",
      captureId,
      "--data-dir",
      data,
      "--network",
      "netns",
      "--profile",
      JSON.stringify({ ...idle, cpu_load: 2, duration_s: 600 }),
      "--control",
      "--json",
    ],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise((r) => child.once("exit", r));
  try {
    const deadline = Date.now() + 180_000;
    while ((stderr.match(/ started( \(control\))? in \d+ ms/g) ?? []).length < 2) {
      assert.ok(Date.now() < deadline && child.exitCode === null, `two shadows start:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // The stress is applied after calibration: wait for it, so the cgroup quota is set too.
    while (!/ stress cpu: /.test(stderr)) {
      assert.ok(Date.now() < deadline, `stress applied:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    child.kill("SIGKILL");
    await exited;
  }
  log(`agent killed after:\n${stderr}`);
  const left = traces();
  assert.is(left.qemu, 2, "both shadows' QEMUs outlive the agent");
  assert.is(left.netns.length, 2, "and their namespaces");
  assert.ok(left.forwarders >= 2, "and their service forwarders");
  assert.ok(left.cgroups.length >= 2, "and their cgroups");
  assert.is(left.dirs.length, 2, "and their directories");
  assert.is(left.restored.length, 1, "and the restored capture");

  const reap = await runCli(AGENT_BIN, ["shadow", "reap", "--data-dir", data, "--json"], {
    env,
    timeoutMs: 120_000,
  });
  assert.is(reap.code, 0, reap.stderr);
  const report = JSON.parse(reap.stdout) as { shadows: string[]; killed: number[]; netns: string[] };
  assert.is(report.shadows.length, 2, reap.stdout);
  assert.ok(report.killed.length >= 2, reap.stdout);
  assert.is(report.netns.length, 2, reap.stdout);
  assert.equal(traces(), clean, "every trace is gone after the restart");
});

test("host guard: a shadow over the budget is refused with the reason; shadows die first when the host runs short", async () => {
  const profile = JSON.stringify({ ...idle, duration_s: 120 });
  const refused = await runCli(
    AGENT_BIN,
    ["shadow", "run", captureId, "--data-dir", data, "--profile", profile, "--json"],
    { env: { ...env, SHADOWVM_AGENT__SHADOW__MEMORY_BUDGET_MB: "200" }, timeoutMs: 120_000 },
  );
  assert.is(refused.code, 1, "no shadow could run");
  const r1 = JSON.parse(refused.stdout) as { runs: { outcome: string; notes: string[] }[] };
  assert.is(r1.runs[0]!.outcome, "inconclusive");
  assert.match(
    r1.runs[0]!.notes.join(" "),
    /refused: it needs ~352 MiB of memory and shadows already hold 0 MiB of their 200 MiB budget \(shadow.memory_budget_mb\)/,
  );
  assert.match(refused.stderr, / refused: /);

  const short = await runCli(
    AGENT_BIN,
    ["shadow", "run", captureId, "--data-dir", data, "--profile", profile, "--control", "--json"],
    {
      env: {
        ...env,
        SHADOWVM_AGENT__SHADOW__EMERGENCY_AVAILABLE_MB: "100000000",
        SHADOWVM_AGENT__SHADOW__WATCH_INTERVAL_MS: "500",
      },
      timeoutMs: 180_000,
    },
  );
  assert.is(short.code, 0, short.stderr);
  const r2 = JSON.parse(short.stdout) as {
    runs: { control: boolean; outcome: string; stop_reason: string }[];
  };
  for (const run of r2.runs) {
    assert.is(run.outcome, "inconclusive");
    assert.match(
      run.stop_reason,
      /^host guard: host memory short: \d+ MiB available, below the 100000000 MiB floor/,
    );
  }
  // The guard chose the stressed shadow first, the control after it.
  const order = short.stderr.split("\n").filter((l) => / host guard stops it: /.test(l));
  assert.is(order.length, 2, short.stderr);
  assert.not.match(order[0]!, /-c host guard/, `the control is stopped last:\n${short.stderr}`);
  assert.match(order[1]!, /-c host guard/);
  assert.equal(traces(), clean);
});

test("SIGTERM to the agent mid-run: every shadow is torn down before it exits", async () => {
  const child = spawn(
    process.execPath,
    [
      AGENT_BIN,
      "shadow",
      "run",
      captureId,
      "--data-dir",
      data,
      "--network",
      "netns",
      "--count",
      "2",
      "--profile",
      JSON.stringify({ ...idle, duration_s: 600 }),
    ],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (d) => {
    out += d;
  });
  child.stderr!.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const deadline = Date.now() + 180_000;
  while ((out.match(/ started in \d+ ms/g) ?? []).length < 2) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `two shadows start:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.is(traces().qemu, 2);
  child.kill("SIGTERM");
  const code = await exited;
  log(`agent after SIGTERM (exit ${code}):\n${out}`);
  assert.is(code, 0, out);
  assert.match(out, /SIGTERM: stopping every shadow/);
  assert.is((out.match(/stopped \(campaign aborted\); every trace removed/g) ?? []).length, 2, out);
  assert.equal(traces(), clean);
});

test.run();
