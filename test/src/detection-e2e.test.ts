// Issue 5 (live detection) under real QEMU: one capture of the demo VM, shadows restored from it,
// real faults injected directly (machine check, memory pressure through the balloon, an unknown
// NMI, a kernel panic through the guest channel), each watched by a ShadowObserver: the failure is
// recognised with the right class, shadows hitting the same failure get the same fingerprints, and
// the control shadow is healthy and gives the latency threshold. The fingerprints end up in a
// SignatureDb that survives a reopen.
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { captureVm } from "@shadowvm/agent/capture/capture-service";
import { CaptureStore } from "@shadowvm/agent/capture/store/index";
import { type DemoVm, startDemoVm } from "@shadowvm/agent/demo/demo-vm";
import {
  assessControl,
  type ControlVerdict,
  type DetectedFailure,
  type ObservationResult,
  ShadowObserver,
} from "@shadowvm/agent/detection/index";
import { GuestChannel } from "@shadowvm/agent/guest/guest-channel";
import { QemuDriver } from "@shadowvm/agent/hypervisor/qemu/qemu-driver";
import { QmpClient } from "@shadowvm/agent/hypervisor/qemu/qmp-client";
import { type RestoredCapture, restoreCapture } from "@shadowvm/agent/shadow/restored-capture";
import { type ShadowVm, startShadow } from "@shadowvm/agent/shadow/shadow-vm";
import { SignatureDb } from "@shadowvm/agent/signatures/index";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ensureGuestImage, tempWorkDir } from "./support/demo-guest.js";

const T0 = Date.now();
function log(msg: string): void {
  process.stderr.write(`[detection-e2e +${((Date.now() - T0) / 1000).toFixed(1)}s] ${msg}\n`);
}

const work = tempWorkDir("svm-det-");
let vm: DemoVm | undefined;
let store: CaptureStore | undefined;
let restored: RestoredCapture;
let control: ControlVerdict;
const results = new Map<string, ObservationResult>();
let startQueue: Promise<unknown> = Promise.resolve();

interface Injection {
  shadow: ShadowVm;
  qmp: QmpClient;
  observer: ShadowObserver;
}

/**
 * Starts a shadow from the capture, observes it, waits until the guest answers a probe, injects the
 * fault, waits for the failure `until` accepts (or for `observeMs` when there is none to wait for),
 * finishes the observation and always stops the shadow.
 */
async function observeShadow(
  id: string,
  inject: (x: Injection) => Promise<void>,
  until: ((f: DetectedFailure) => boolean) | { observeMs: number },
  probeTimeoutMs = 5000,
): Promise<ObservationResult> {
  // One start at a time: startShadow's own QMP handshake has a 5 s greeting deadline, which
  // seven QEMUs initialising at once on two cores can miss.
  const starting = startQueue.then(() => startShadow(restored, { id, workDir: join(work, id) }));
  startQueue = starting.catch(() => undefined);
  const shadow = await starting;
  const startedAtMs = Date.now();
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(shadow.qmpSocket, { connectTimeoutMs: 30_000, commandTimeoutMs: 30_000 });
    const observer = new ShadowObserver({
      qmp,
      consoleLog: shadow.consoleLog,
      process: shadow.process,
      probe: {
        url: `http://127.0.0.1:${shadow.httpPort}/cgi-bin/health`,
        intervalMs: 500,
        timeoutMs: probeTimeoutMs,
      },
      heartbeat: { consoleSilenceMs: 0, probeFailures: 6 },
      startedAtMs,
      ...(control?.latencyThresholdMs !== undefined
        ? { latencyThresholdMs: control.latencyThresholdMs }
        : {}),
    });
    observer.on("failure", (f) =>
      log(`${id}: ${f.source}/${f.class} "${f.title}" at +${Math.round(f.offsetMs)} ms`),
    );
    observer.on("note", (n) => log(`${id}: note: ${n}`));
    observer.start();
    await waitFor(() => observer.probeSamples().some((s) => s.ok), {
      timeoutMs: 60_000,
      what: `${id}: a first successful probe`,
    });
    await inject({ shadow, qmp, observer });
    if (typeof until === "function") {
      await observer.waitForFailure(until, 150_000);
    } else {
      await waitFor(() => observer.now() >= until.observeMs, {
        timeoutMs: until.observeMs + 60_000,
        intervalMs: 200,
        what: `${id}: ${until.observeMs} ms of observation`,
      });
    }
    const result = await observer.finish(control ? { control } : {});
    results.set(id, result);
    for (const f of result.failures) {
      assert.ok(
        f.offsetMs >= 0 && f.offsetMs <= result.finishedAtMs - result.startedAtMs,
        `${id}: offset of ${f.title}: ${f.offsetMs}`,
      );
    }
    log(
      `${id}: ${result.outcome} after ${result.finishedAtMs - result.startedAtMs} ms; ` +
        `failures: ${result.failures.map((f) => `${f.class}:${f.title}`).join(" | ") || "none"}; ` +
        `probes ${result.probes.ok}/${result.probes.sent} ok, p50 ${result.probes.p50Ms} ms`,
    );
    return result;
  } finally {
    qmp?.close();
    await shadow.stop();
  }
}

async function sysrqCrash({ shadow }: Injection): Promise<void> {
  const channel = await GuestChannel.connect(shadow.guestChannels["org.shadowvm.guest.0"]!, {
    connectTimeoutMs: 30_000,
  });
  try {
    await channel.sysrq("c", { check: true, timeoutMs: 30_000 });
  } finally {
    await channel.close();
  }
}

const nonProbe = (r: ObservationResult) => r.failures.filter((f) => f.source !== "probe");

test.before(async () => {
  const { dir } = await ensureGuestImage();
  vm = await startDemoVm({ name: "det-e2e", workDir: join(work, "vm"), guestDir: dir });
  const ready = await vm.waitReady(180_000);
  log(`demo VM ready in ${ready.readyMs} ms`);
  store = await CaptureStore.open({ dir: join(work, "captures"), keyFile: join(work, "capture.key") });
  mkdirSync(join(work, "staging"), { recursive: true, mode: 0o700 });
  const record = await captureVm({
    driver: new QemuDriver({ sockets: [vm.qmpSocket] }),
    store,
    vm: vm.qmpSocket,
    stagingRoot: join(work, "staging"),
  });
  log(`captured ${record.id} (pause ${record.pause_ms} ms)`);
  await vm.stop(); // production is not needed any more: the shadows get the CPU
  restored = await restoreCapture(store, record.id, join(work, "restored"));
});

test.after(async () => {
  await vm?.stop();
  await store?.close();
  rmSync(work, { recursive: true, force: true });
  log("cleaned up");
});

test("control shadow: no fault, healthy, gives the latency threshold", async () => {
  const result = await observeShadow("ctl", async () => {}, { observeMs: 8000 });
  assert.is(result.outcome, "ok", JSON.stringify(result.failures));
  assert.equal(result.failures, []);
  control = assessControl(result, { factor: 5, minMs: 500 });
  assert.ok(control.healthy, control.reason);
  assert.ok(control.latencyThresholdMs! >= 500, String(control.latencyThresholdMs));
  log(
    `control: probes p50 ${result.probes.p50Ms} ms p99 ${result.probes.p99Ms} ms -> threshold ${control.latencyThresholdMs} ms`,
  );
});

test("real faults are recognised with the right class; the same failure has the same fingerprint", async () => {
  const [mce, balloon, nmiA, nmiB, crashA, crashB, hung] = await Promise.all([
    observeShadow(
      "mce",
      async ({ qmp }) => {
        // An uncorrected memory error at guest-physical 16 MiB (PCC set: fatal)
        await qmp.hmp("mce 0 9 0xbd00000000000000 0x86 0x1000000 0x8c");
      },
      (f) => f.source === "console" && f.class === "memory_error",
    ),
    observeShadow(
      "balloon",
      async ({ qmp }) => {
        await qmp.execute("balloon", { value: 40 * 1024 * 1024 });
      },
      (f) => f.source === "console" && f.title.startsWith("kernel panic"),
    ),
    observeShadow(
      "nmi-a",
      async ({ qmp }) => void (await qmp.execute("inject-nmi")),
      (f) => f.class === "nmi",
    ),
    observeShadow(
      "nmi-b",
      async ({ qmp }) => void (await qmp.execute("inject-nmi")),
      (f) => f.class === "nmi",
    ),
    observeShadow("crash-a", sysrqCrash, (f) => f.source === "console" && f.class === "panic"),
    observeShadow("crash-b", sysrqCrash, (f) => f.source === "console" && f.class === "panic"),
    observeShadow(
      "hung",
      async ({ shadow }) => {
        // The service process stops (SIGSTOP): the kernel still accepts connections, nothing answers.
        const channel = await GuestChannel.connect(shadow.guestChannels["org.shadowvm.guest.0"]!, {
          connectTimeoutMs: 30_000,
        });
        try {
          await channel.stop("httpd", { check: true, timeoutMs: 30_000 });
        } finally {
          await channel.close();
        }
      },
      (f) => f.kind === "heartbeat:service",
      1500,
    ),
  ]);

  // Machine check: the MCE report and its panic on the console (flushed after the observer let
  // the panicked guest finish), MEMORY_FAILURE and GUEST_PANICKED from QEMU.
  assert.is(mce.outcome, "failed");
  assert.is(mce.failures[0]!.class, "memory_error", mce.failures[0]!.title);
  assert.is(mce.failures[0]!.source, "console");
  const mceKinds = mce.failures.map((f) => `${f.source}/${f.class}/${f.title}`);
  assert.ok(
    mceKinds.includes("qemu_event/memory_error/QEMU: guest memory failure (inject)"),
    mceKinds.join("\n"),
  );
  assert.ok(mceKinds.includes("qemu_event/panic/QEMU: guest panicked"), mceKinds.join("\n"));
  assert.ok(
    mce.failures.some((f) => f.source === "console" && f.title === "kernel panic: Fatal local machine check"),
    mceKinds.join("\n"),
  );

  // Memory pressure: OOM kills, then the deadlock panic (class oom) first.
  assert.is(balloon.outcome, "failed");
  assert.is(balloon.failures[0]!.title, "kernel panic: System is deadlocked on memory");
  assert.is(balloon.failures[0]!.class, "oom");
  assert.ok(
    balloon.failures.some((f) => f.kind === "oom-kill" && f.title.startsWith("OOM kill of ")),
    balloon.failures.map((f) => f.title).join("\n"),
  );
  assert.ok(balloon.failures.some((f) => f.title === "QEMU: guest panicked"));

  // Unknown NMI: the guest survives; the NMI is the failure.
  for (const r of [nmiA, nmiB]) {
    assert.is(r.outcome, "failed");
    assert.is(r.failures[0]!.title, "NMI received for unknown reason");
    assert.is(r.failures[0]!.class, "nmi");
  }

  // Kernel panic through sysrq.
  for (const r of [crashA, crashB]) {
    assert.is(r.outcome, "failed");
    assert.is(r.failures[0]!.title, "kernel panic: sysrq triggered crash");
    assert.is(r.failures[0]!.class, "panic");
    assert.is(r.failures[0]!.source, "console");
    assert.ok(r.failures.some((f) => f.title === "QEMU: guest panicked" && f.source === "qemu_event"));
  }

  // A service that stops answering while the guest runs: a hang seen by the heartbeat.
  assert.is(hung.outcome, "failed");
  const hang = hung.failures.find((f) => f.kind === "heartbeat:service")!;
  assert.is(hang.title, "service unresponsive");
  assert.is(hang.class, "hang");
  assert.equal(
    nonProbe(hung).map((f) => f.title),
    ["service unresponsive"],
    "nothing else failed in that guest",
  );

  // Same failure, same fingerprints (all guest-side failures, in the same order).
  const fps = (r: ObservationResult) => nonProbe(r).map((f) => `${f.title} ${f.fingerprint}`);
  assert.equal(fps(nmiA), fps(nmiB));
  assert.equal(fps(crashA), fps(crashB));
  // Different failures, different primary fingerprints.
  const primaries = new Set([mce, balloon, nmiA, crashA, hung].map((r) => nonProbe(r)[0]!.fingerprint));
  assert.is(primaries.size, 5);
});

test("the runs' failures roll up in the signature database, which survives a reopen", async () => {
  const dbDir = join(work, "signatures");
  let db = await SignatureDb.open(dbDir);
  const vmUuid = restored.inventory.uuid || restored.vm;
  for (const [id, result] of results) {
    await db.recordRun({
      vm: vmUuid,
      shadowRunId: id,
      finishedAtMs: result.finishedAtMs,
      failures: nonProbe(result),
    });
  }
  await db.close();
  db = await SignatureDb.open(dbDir);
  try {
    const crash = results.get("crash-a")!.failures[0]!;
    const sig = (await db.get(crash.fingerprint))!;
    assert.is(sig.title, "kernel panic: sysrq triggered crash");
    assert.is(sig.count, 2, "both crash shadows");
    assert.equal(sig.vms, [vmUuid]);
    const panicked = (await db.list()).find((s) => s.title === "QEMU: guest panicked")!;
    assert.is(panicked.count, 4, "mce, balloon and the two crash shadows");
    const pending = await db.pendingUpdates();
    assert.is(pending.length, (await db.list()).length, "one queued update per signature");
  } finally {
    await db.close();
  }
});

test("a task blocked on I/O is named by its frame: the guest's console shows the hung task's stack", async () => {
  // The guest's disk allows one write a second: the writer's fdatasync blocks in D state, and
  // after hung_task_timeout_secs (15) the kernel reports it. Its stack is printed at KERN_INFO,
  // which the console shows only because the guest's init raises the console log level.
  const blocked = await observeShadow(
    "blocked-io",
    async ({ qmp }) => {
      const blocks = await qmp.execute<{ qdev?: string; inserted?: unknown }[]>("query-block");
      const disks = blocks.filter((b) => b.inserted && b.qdev);
      assert.ok(disks.length > 0, "the shadow has a disk");
      for (const d of disks) {
        await qmp.execute("block_set_io_throttle", {
          id: d.qdev,
          bps: 0,
          bps_rd: 0,
          bps_wr: 1,
          iops: 0,
          iops_rd: 0,
          iops_wr: 1,
        });
      }
    },
    (f) => f.source === "console" && f.title.startsWith("INFO: task hung in "),
  );
  const hungTask = blocked.failures.find((f) => f.source === "console" && f.class === "hang")!;
  assert.ok(hungTask, blocked.failures.map((f) => f.title).join("\n"));
  assert.is.not(hungTask.title, "INFO: task hung in corrupted", "the report has its stack");
  assert.ok(hungTask.frame, `a frame names it: ${hungTask.title}`);
  assert.is(hungTask.title, `INFO: task hung in ${hungTask.frame}`);
});

test.run();
