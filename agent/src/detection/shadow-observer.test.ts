// ShadowObserver against a scripted console file, a fake QMP event source and a local HTTP server.
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import type { QmpEvent } from "../hypervisor/qemu/qmp-client.js";
import { assessControl, failureToProto } from "./outcome.js";
import { latencyThresholdFromControl } from "./service-probe.js";
import { ShadowObserver, type ShadowObserverOptions } from "./shadow-observer.js";
import type { DetectedFailure, ObservationResult } from "./types.js";

// Console output of the demo guest (Debian 6.1) ballooned down to 40 MiB, shortened.
const OOM_KILL = `[    9.959306] svm-channel invoked oom-killer: gfp_mask=0x400dc0(GFP_KERNEL_ACCOUNT|__GFP_ZERO), order=1, oom_score_adj=0
[    9.961652] CPU: 0 PID: 126 Comm: svm-channel Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[    9.961959] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[    9.962329] Call Trace:
[    9.963040]  <TASK>
[    9.963487]  dump_stack_lvl+0x44/0x5c
[    9.964147]  dump_header+0x4c/0x22b
[    9.964241]  oom_kill_process.cold+0xb/0x10
[    9.964336]  out_of_memory+0x1fd/0x4c0
[    9.964459]  __alloc_pages_slowpath.constprop.0+0x67f/0xe70
[    9.964594]  __alloc_pages+0x305/0x330
[    9.965988]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[    9.968927]  </TASK>
[    9.969223] Mem-Info:
[    9.969531] active_anon:5432 inactive_anon:562 isolated_anon:0
[    9.975641] 0 pages HighMem/MovableOnly
[    9.975731] 51067 pages reserved
[    9.975808] 0 pages hwpoisoned
[    9.978004] Out of memory: Killed process 126 (svm-channel) total-vm:2260kB, anon-rss:140kB, file-rss:4kB, shmem-rss:1728kB, UID:0 pgtables:32kB oom_score_adj:0
`;
const OOM_PANIC = `[   14.744658] Out of memory and no killable processes...
[   14.746042] Kernel panic - not syncing: System is deadlocked on memory
[   14.746243] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[   14.746413] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   14.746565] Call Trace:
[   14.746622]  <TASK>
[   14.746671]  dump_stack_lvl+0x44/0x5c
[   14.746752]  panic+0x118/0x2f4
[   14.746820]  out_of_memory.cold+0x2f/0x7e
[   14.746897]  __alloc_pages_slowpath.constprop.0+0x67f/0xe70
[   14.749406]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[   14.758156]  </TASK>
`;
// `sysrq c` on the demo guest, as far as it gets before pvpanic pauses it.
const SYSRQ_PANIC = `[    8.232659] sysrq: Trigger a crash
[    8.234831] Kernel panic - not syncing: sysrq triggered crash
[    8.235127] CPU: 0 PID: 126 Comm: svm-channel Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[    8.235639] Call Trace:
[    8.236127]  <TASK>
[    8.236440]  dump_stack_lvl+0x44/0x5c
[    8.237091]  panic+0x118/0x2f4
[    8.237235]  sysrq_handle_crash+0x16/0x20
[    8.237327]  __handle_sysrq.cold+0x44/0x11c
[    8.237408]  write_sysrq_trigger+0x24/0x40
[    8.237485]  proc_reg_write+0x56/0xa0
[    8.237558]  vfs_write+0xc7/0x3f0
[    8.241017]  </TASK>
`;

class FakeQmp extends EventEmitter<{ event: [QmpEvent]; close: [Error | undefined] }> {
  readonly commands: { command: string; args: Record<string, unknown> | undefined }[] = [];
  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.commands.push({ command, args });
    return {} as T;
  }
  send(event: string, data: Record<string, unknown> = {}, timestampMs = Date.now()): void {
    this.emit("event", { event, data, timestampMs });
  }
}

type Mode = { kind: "ok" } | { kind: "slow"; ms: number } | { kind: "hang" } | { kind: "error" };

interface Fixture {
  dir: string;
  consoleLog: string;
  qmp: FakeQmp;
  url: string;
  mode: Mode;
  requests: number;
  observers: ShadowObserver[];
  observe(extra?: Partial<ShadowObserverOptions>): ShadowObserver;
  close(): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), "svm-observer-"));
  const consoleLog = join(dir, "console.log");
  writeFileSync(consoleLog, "");
  const f = { mode: { kind: "ok" } as Mode, requests: 0 } as Fixture;
  const server: Server = createServer((_req, res) => {
    f.requests++;
    const mode = f.mode;
    if (mode.kind === "hang") return; // never answers; the probe times out
    if (mode.kind === "error") {
      res.writeHead(503).end("down");
      return;
    }
    const answer = () => res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    if (mode.kind === "slow") setTimeout(answer, mode.ms);
    else answer();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  Object.assign(f, {
    dir,
    consoleLog,
    qmp: new FakeQmp(),
    url: `http://127.0.0.1:${port}/cgi-bin/health`,
    observers: [],
    observe(extra: Partial<ShadowObserverOptions> = {}) {
      const o = new ShadowObserver({
        qmp: f.qmp,
        consoleLog,
        probe: { url: f.url, intervalMs: 40, timeoutMs: 300 },
        heartbeat: { consoleSilenceMs: 0, probeFailures: 3 },
        consolePollMs: 50,
        consoleSettleMs: 200,
        ...extra,
      });
      f.observers.push(o);
      return o.start();
    },
    async close() {
      await Promise.all(f.observers.map((o) => o.finish()));
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    },
  });
  return f;
}

async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const f = await fixture();
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

const brief = (r: ObservationResult) => r.failures.map((f) => `${f.source}/${f.class}: ${f.title}`);

test("OOM report arriving in chunks, split mid-line: emitted live once complete, then the panic; failed", async () => {
  await withFixture(async (f) => {
    const obs = f.observe({ consoleSettleMs: 1500 });
    const emitted: DetectedFailure[] = [];
    obs.on("failure", (x) => emitted.push(x));
    const cut = OOM_KILL.indexOf("Mem-Info") + 4;
    appendFileSync(f.consoleLog, OOM_KILL.slice(0, cut));
    await waitFor(() => obs.consoleBytes === cut, { timeoutMs: 5000, what: "first chunk read" });
    assert.equal(obs.failures(), [], "an incomplete OOM report is not a failure yet");
    appendFileSync(f.consoleLog, OOM_KILL.slice(cut));
    const kill = await obs.waitForFailure((x) => x.class === "oom", 5000);
    assert.is(kill.title, "OOM kill of svm-channel");
    assert.is(kill.source, "console");
    assert.is(kill.line, 1);
    appendFileSync(f.consoleLog, OOM_PANIC.slice(0, 100));
    appendFileSync(f.consoleLog, OOM_PANIC.slice(100));
    const panic = await obs.waitForFailure((x) => x.title.includes("deadlocked"), 5000);
    assert.is(panic.class, "oom");
    assert.ok(panic.offsetMs >= kill.offsetMs, "offsets follow arrival");
    const result = await obs.finish();
    assert.is(result.outcome, "failed");
    assert.equal(brief(result), [
      "console/oom: kernel panic: System is deadlocked on memory",
      "console/oom: OOM kill of svm-channel",
      "console/oom: OOM: no killable processes",
    ]);
    assert.is(emitted[0]!.title, "OOM kill of svm-channel", "emitted as it completed, before the rest came");
    assert.equal(
      emitted.map((x) => x.fingerprint).sort(),
      result.failures.map((x) => x.fingerprint).sort(),
      "each failure emitted once",
    );
    assert.is(result.console.lines, OOM_KILL.split("\n").length - 1 + OOM_PANIC.split("\n").length - 1);
    assert.ok(result.probes.ok > 0 && result.probes.failed === 0);
  });
});

test("a report cut by a pause longer than the settle time: emitted live as cut, the result holds the whole parse", async () => {
  await withFixture(async (f) => {
    const obs = f.observe({ consoleSettleMs: 200 });
    const cut = OOM_KILL.indexOf("Mem-Info") + 4;
    appendFileSync(f.consoleLog, OOM_KILL.slice(0, cut));
    const early = await obs.waitForFailure(() => true, 5000);
    assert.is(early.title, "OOM: oom-killer invoked by svm-channel", "what the console showed so far");
    appendFileSync(f.consoleLog, OOM_KILL.slice(cut));
    await waitFor(() => obs.consoleBytes === OOM_KILL.length, { timeoutMs: 5000, what: "the rest read" });
    const result = await obs.finish();
    assert.equal(brief(result), ["console/oom: OOM kill of svm-channel"]);
    assert.ok(
      result.notes.some((n) => n.includes("OOM: oom-killer invoked by svm-channel")),
      result.notes.join("\n"),
    );
  });
});

test("panic: console report + GUEST_PANICKED; the observer lets the paused guest finish its panic", async () => {
  await withFixture(async (f) => {
    const obs = f.observe();
    appendFileSync(f.consoleLog, SYSRQ_PANIC);
    f.qmp.send("GUEST_PANICKED", { action: "pause" });
    f.qmp.send("STOP");
    const qemu = await obs.waitForFailure((x) => x.source === "qemu_event", 2000);
    assert.is(qemu.title, "QEMU: guest panicked");
    assert.is(qemu.class, "panic");
    await waitFor(() => f.qmp.commands.some((c) => c.command === "cont"), { timeoutMs: 2000, what: "cont" });
    assert.equal(
      f.qmp.commands.map((c) => [c.command, c.args]),
      [
        ["set-action", { reboot: "shutdown", shutdown: "pause" }],
        ["cont", undefined],
      ],
    );
    // The continued guest flushes, reboots, and QEMU turns the reboot into a paused shutdown.
    f.qmp.send("RESUME");
    f.qmp.send("SHUTDOWN", { guest: true, reason: "guest-reset" });
    f.qmp.send("STOP");
    await obs.waitForFailure((x) => x.source === "console", 5000);
    // The guest is paused: failing probes are no hang.
    f.mode = { kind: "error" };
    const n = f.requests;
    await waitFor(() => f.requests >= n + 5, { timeoutMs: 5000, what: "probes against the dead guest" });
    const result = await obs.finish();
    assert.is(result.outcome, "failed");
    assert.equal(brief(result), [
      "console/panic: kernel panic: sysrq triggered crash",
      "qemu_event/panic: QEMU: guest panicked",
    ]);
    assert.ok(
      result.notes.some((n) => n.includes("after the guest panicked")),
      result.notes.join("\n"),
    );
    const wire = failureToProto(result.failures[1]!, "run-1");
    assert.is(wire.source, 2);
    assert.is(wire.shadow_run_id, "run-1");
    assert.ok(wire.evidence![0]!.startsWith("GUEST_PANICKED"));
  });
});

test("MEMORY_FAILURE and BLOCK_IO_ERROR events: memory_error and io_error, stable titles", async () => {
  await withFixture(async (f) => {
    const obs = f.observe({ probe: undefined });
    const t = Date.now();
    f.qmp.send(
      "MEMORY_FAILURE",
      { recipient: "guest", action: "inject", flags: { recursive: false, "action-required": false } },
      t,
    );
    const io = { device: "", "node-name": "disk0", operation: "write", action: "report" };
    f.qmp.send("BLOCK_IO_ERROR", { ...io, reason: "Input/output error" }, t + 1);
    f.qmp.send("BLOCK_IO_ERROR", io, t + 2);
    f.qmp.send("MEMORY_FAILURE", { recipient: "hypervisor", action: "ignore", flags: {} });
    f.qmp.send("VSERPORT_CHANGE", { open: false, id: "channel0" });
    const result = await obs.finish();
    assert.equal(brief(result), [
      "qemu_event/memory_error: QEMU: guest memory failure (inject)",
      "qemu_event/io_error: QEMU: block write error",
    ]);
    assert.is(result.failures[1]!.count, 2);
    assert.is(result.outcome, "failed");
  });
});

test("latency breach: threshold from the control's latencies, slow service = performance failure", async () => {
  await withFixture(async (f) => {
    // control: a healthy, fast service
    const control = f.observe();
    await waitFor(() => control.probeSamples().filter((s) => s.ok).length >= 10, {
      timeoutMs: 10_000,
      what: "10 control probes",
    });
    const controlResult = await control.finish();
    const verdict = assessControl(controlResult, { factor: 3, minMs: 60 });
    assert.ok(verdict.healthy, verdict.reason);
    assert.is(
      verdict.latencyThresholdMs,
      latencyThresholdFromControl(controlResult.probes.latenciesMs, { minMs: 60 }),
    );

    f.mode = { kind: "slow", ms: 150 };
    const obs = f.observe({ latencyThresholdMs: verdict.latencyThresholdMs!, latencyWindow: 3 });
    const breach = await obs.waitForFailure((x) => x.kind === "probe:latency", 10_000);
    assert.is(breach.title, "service probe latency breach");
    assert.is(breach.class, "performance");
    assert.is(breach.source, "probe");
    assert.ok(breach.evidence.length >= 4, breach.evidence.join("\n"));
    const result = await obs.finish({ control: verdict });
    assert.is(result.outcome, "failed");
    assert.is(result.failures[0]!.fingerprint, breach.fingerprint);
    assert.equal(
      result.failures.map((x) => x.kind),
      ["probe:latency"],
      "slow but answering: no unresponsive service",
    );
  });
});

test("threshold known only at finish (control ran in parallel): recorded probes are judged then", async () => {
  await withFixture(async (f) => {
    f.mode = { kind: "slow", ms: 120 };
    const obs = f.observe({ latencyWindow: 3 });
    await waitFor(() => obs.probeSamples().length >= 4, { timeoutMs: 10_000, what: "probes" });
    assert.equal(obs.failures(), []);
    const result = await obs.finish({ control: { healthy: true, latencyThresholdMs: 60 } });
    assert.equal(brief(result), ["probe/performance: service probe latency breach"]);
    assert.is(result.latencyThresholdMs, 60);
  });
});

test("service unresponsive while the guest runs = hang; not while QEMU has it paused", async () => {
  await withFixture(async (f) => {
    const obs = f.observe();
    await waitFor(() => obs.probeSamples().some((s) => s.ok), { timeoutMs: 5000, what: "a good probe" });
    f.qmp.send("STOP");
    f.mode = { kind: "hang" };
    const n = obs.probeSamples().length;
    await waitFor(() => obs.probeSamples().length >= n + 4, {
      timeoutMs: 10_000,
      what: "probes while paused",
    });
    assert.equal(obs.failures(), [], "a paused guest does not answer, and that is no hang");
    f.qmp.send("RESUME");
    const hang = await obs.waitForFailure((x) => x.kind === "heartbeat:service", 10_000);
    assert.is(hang.title, "service unresponsive");
    assert.is(hang.class, "hang");
    assert.is(hang.source, "heartbeat");
    assert.ok(
      hang.evidence.some((e) => e.includes("timeout")),
      hang.evidence.join("\n"),
    );
    // it comes back, then fails again: one failure, two episodes
    f.mode = { kind: "ok" };
    await waitFor(() => obs.probeSamples().at(-1)?.ok === true, { timeoutMs: 5000, what: "recovery" });
    f.mode = { kind: "error" };
    await waitFor(() => obs.failures()[0]?.count === 2, { timeoutMs: 10_000, what: "second episode" });
    const result = await obs.finish();
    assert.is(result.outcome, "failed");
    assert.ok(result.probes.timedOut >= 3);
  });
});

test("console silence heartbeat: only when enabled, only while the guest runs", async () => {
  await withFixture(async (f) => {
    const obs = f.observe({ probe: undefined, heartbeat: { consoleSilenceMs: 300, probeFailures: 0 } });
    appendFileSync(f.consoleLog, "[    1.000000] heartbeat\n");
    const silent = await obs.waitForFailure((x) => x.kind === "heartbeat:console", 5000);
    assert.is(silent.title, "guest console silent");
    assert.ok(silent.offsetMs >= 250, String(silent.offsetMs));
    const result = await obs.finish();
    assert.equal(brief(result), ["heartbeat/hang: guest console silent"]);
  });
});

test("QEMU dying before any guest failure = inconclusive; a failure first = failed", async () => {
  await withFixture(async (f) => {
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const obs = f.observe({ process: child, probe: undefined });
    child.kill("SIGKILL");
    await waitFor(() => child.exitCode !== null || child.signalCode !== null, {
      timeoutMs: 5000,
      what: "exit",
    });
    const result = await obs.finish();
    assert.is(result.outcome, "inconclusive");
    assert.match(result.interruption!.reason, /QEMU process exited \(signal SIGKILL\)/);
    assert.match(result.notes[0]!, /^inconclusive: QEMU process exited/);
  });
  await withFixture(async (f) => {
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const obs = f.observe({ process: child, probe: undefined });
    appendFileSync(f.consoleLog, SYSRQ_PANIC);
    await obs.waitForFailure(() => true, 5000);
    child.kill("SIGKILL");
    await waitFor(() => child.signalCode !== null, { timeoutMs: 5000, what: "exit" });
    const result = await obs.finish();
    assert.is(result.outcome, "failed");
    assert.ok(result.interruption);
  });
  await withFixture(async (f) => {
    // pid only: polled
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const obs = f.observe({ pid: child.pid!, probe: undefined, processPollMs: 50 });
    child.kill("SIGKILL");
    await waitFor(() => obs.guestRunning === false, { timeoutMs: 5000, what: "death seen through the pid" });
    assert.is((await obs.finish()).outcome, "inconclusive");
  });
});

test("host-initiated shutdown interrupts; a guest power-off is a failure; finish() first = clean stop", async () => {
  await withFixture(async (f) => {
    const obs = f.observe({ probe: undefined });
    f.qmp.send("SHUTDOWN", { guest: false, reason: "host-signal" });
    const result = await obs.finish();
    assert.is(result.outcome, "inconclusive");
    assert.match(result.interruption!.reason, /from the host \(host-signal\)/);
  });
  await withFixture(async (f) => {
    const obs = f.observe({ probe: undefined });
    f.qmp.send("SHUTDOWN", { guest: true, reason: "guest-shutdown" });
    const result = await obs.finish();
    assert.equal(brief(result), ["qemu_event/crash: QEMU: guest powered off"]);
    assert.is(result.outcome, "failed");
  });
  await withFixture(async (f) => {
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const obs = f.observe({ process: child });
    await waitFor(() => obs.probeSamples().length >= 3, { timeoutMs: 5000, what: "probes" });
    const result = await obs.finish();
    f.qmp.send("SHUTDOWN", { guest: false, reason: "host-signal" });
    child.kill("SIGKILL");
    assert.is(result.outcome, "ok");
    assert.equal(result.failures, []);
    assert.is(result.interruption, undefined);
    assert.ok(result.probes.p50Ms !== null);
  });
});

test("an unhealthy control makes the run inconclusive", async () => {
  await withFixture(async (f) => {
    f.mode = { kind: "error" };
    const control = f.observe();
    await waitFor(() => control.failures().length > 0, { timeoutMs: 5000, what: "control failure" });
    const verdict = assessControl(await control.finish());
    assert.not.ok(verdict.healthy);
    assert.match(verdict.reason!, /control run failed: service unresponsive/);
    f.mode = { kind: "ok" };
    const obs = f.observe();
    appendFileSync(f.consoleLog, SYSRQ_PANIC);
    await obs.waitForFailure(() => true, 5000);
    const result = await obs.finish({ control: verdict });
    assert.is(result.outcome, "inconclusive");
    assert.match(result.notes[0]!, /control shadow was unhealthy/);
    assert.is(result.failures.length, 1, "the failures are still reported");
  });
});

test("two shadows hitting the same failure get the same fingerprints", async () => {
  const runs: ObservationResult[] = [];
  for (const shift of [0, 1]) {
    await withFixture(async (f) => {
      const obs = f.observe({ probe: undefined });
      // other timestamps, pids and addresses in the second shadow
      const text = shift
        ? SYSRQ_PANIC.replaceAll("8.23", "9.41")
            .replaceAll("PID: 126", "PID: 131")
            .replaceAll("0x16/0x20", "0x16/0x30")
        : SYSRQ_PANIC;
      appendFileSync(f.consoleLog, `[    7.000000] some noise ${shift}\n${text}`);
      f.qmp.send("GUEST_PANICKED", { action: "pause" });
      await obs.waitForFailure((x) => x.source === "console", 5000);
      runs.push(await obs.finish());
    });
  }
  assert.equal(
    runs[0]!.failures.map((f) => f.fingerprint),
    runs[1]!.failures.map((f) => f.fingerprint),
  );
  assert.is(runs[0]!.failures.length, 2);
});

test("a console file that appears late and is then truncated is still followed", async () => {
  await withFixture(async (f) => {
    rmSync(f.consoleLog);
    const obs = f.observe({ probe: undefined });
    await new Promise((r) => setTimeout(r, 120));
    writeFileSync(f.consoleLog, "[    1.0] noise\n".repeat(50));
    await waitFor(() => obs.consoleBytes > 0, { timeoutMs: 5000, what: "file read" });
    writeFileSync(f.consoleLog, SYSRQ_PANIC);
    const panic = await obs.waitForFailure(() => true, 5000);
    assert.is(panic.title, "kernel panic: sysrq triggered crash");
    const result = await obs.finish();
    assert.ok(
      result.notes.some((n) => n.includes("truncated")),
      result.notes.join("\n"),
    );
  });
});

test.run();
