// Captures whose restored guests fail unstressed, made on purpose: a delayed sysrq crash is pending
// in the demo VM (`sysrq c <seconds>` on its guest channel) when `explore` captures it.
//
// 1. A bad capture (seen for real under TCG: a vCPU caught mid local-APIC write restored into
//    shadows that all crashed at once, the control too): the crash is defused in production right
//    after the first capture. The failing control must end its batch, the campaign must take a
//    fresh capture and finish on it, and the collector must not call the VM doomed.
// 2. A VM that fails unstressed: every capture holds a pending crash. The campaign must stop after
//    the fresh capture's control fails the same way (no third capture), and the collector, fed the
//    agent's spool over a real WebSocket, must assess the VM as failing now.
// Production never crashes in either. The two take about 5 minutes together.
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type DemoVm, startDemoVm } from "@shadowvm/agent/demo/demo-vm";
import type { GuestChannel } from "@shadowvm/agent/guest/guest-channel";
import { Spool } from "@shadowvm/agent/spool/spool";
import { CollectorSession } from "@shadowvm/agent/telemetry/collector-session";
import { CredentialsFileStore } from "@shadowvm/agent/telemetry/credentials";
import { SpoolShipper } from "@shadowvm/agent/telemetry/spool-shipper";
import { collectorConfigSchema } from "@shadowvm/collector/config/collector-config";
import type { RiskAssessment } from "@shadowvm/collector/risk/risk-engine";
import { type CollectorService, startCollector } from "@shadowvm/collector/service";
import { silentLogger, waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ensureGuestImage, qemuProcesses, tempWorkDir } from "./support/demo-guest.js";
import { AGENT_BIN, type CliResult, runCli } from "./support/run-cli.js";
import { spooledByClass } from "./support/spool-stats.js";

const T0 = Date.now();
const log = (m: string) =>
  process.stderr.write(`[unusable-capture +${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);

const VM_NAME = "badcap-prod";
/** Seconds from planting the crash to its trigger: well after the capture, well inside a run. */
const BOMB_S = 45;
const DURATION_S = 75;

const root = tempWorkDir("svm-badcap-");
let vm: DemoVm | undefined;
let ch: GuestChannel | undefined;
let collector: CollectorService | undefined;

test.before(async () => {
  const { dir } = await ensureGuestImage();
  vm = await startDemoVm({ name: VM_NAME, workDir: join(root, "vm"), guestDir: dir });
  await vm.waitReady(240_000);
  ch = await vm.channel({ connectTimeoutMs: 30_000 });
  collector = await startCollector(
    collectorConfigSchema.parse({
      data_dir: join(root, "collector"),
      log_level: "silent",
      tls: { required: false },
      ingest: { host: "127.0.0.1", port: 0 },
      metrics: { enabled: false },
      api: { enabled: false },
      reports: { schedule: "" },
    }),
    silentLogger(),
  );
});

test.after(async () => {
  await ch?.close();
  await vm?.stop({ timeoutMs: 10_000 });
  await collector?.close();
  rmSync(root, { recursive: true, force: true });
});

/** `explore --vm` on real shadows (one run, K=1); `onCaptured(n)` after the n-th capture. */
async function exploreOnce(
  agentId: string,
  onCaptured: (n: number) => Promise<unknown>,
): Promise<{ r: CliResult; lines: string[]; data: string; reactions: Promise<unknown>[] }> {
  const data = join(root, agentId);
  const lines: string[] = [];
  const reactions: Promise<unknown>[] = [];
  const r = await runCli(
    AGENT_BIN,
    [
      "explore",
      "--vm",
      VM_NAME,
      "--data-dir",
      data,
      "--budget",
      "1",
      "--batch-size",
      "1",
      "--duration",
      String(DURATION_S),
      "--strategy",
      "baseline",
      "--seed",
      "3",
      "--json",
    ],
    {
      env: {
        SHADOWVM_AGENT__AGENT_ID: agentId,
        SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: JSON.stringify([vm!.qmpSocket]),
        SHADOWVM_AGENT__SHADOW__PROBE_PATH: "/cgi-bin/health",
        SHADOWVM_AGENT__SHADOW__HOST_RESERVE_MB: "512",
        // Stressed shadows run on past their own failures, so the one that ends them early here
        // is the failing control, which stops its whole batch.
        SHADOWVM_AGENT__SHADOW__STOP_ON_FAILURE: "false",
      },
      timeoutMs: 15 * 60_000,
      onStderrLine: (line) => {
        lines.push(line);
        log(`${agentId}: ${line.slice(0, 300)}`);
        if (/campaign: captured/.test(line))
          reactions.push(onCaptured(lines.filter((l) => /campaign: captured/.test(l)).length));
      },
    },
  );
  // Torn down: no shadow QEMU of this data dir, no restored plaintext.
  assert.equal(qemuProcesses(data), []);
  assert.equal(readdirSync(join(data, "restored")), []);
  return { r, lines, data, reactions };
}

/** Ships an explore run's spool to the collector (as `serve` would), then one risk round. */
async function shipAndAssess(data: string, agentId: string): Promise<RiskAssessment[]> {
  const spool = await Spool.open({ dir: join(data, "spool"), agentId, maxBytes: 64 * 2 ** 20 });
  const shipper = new SpoolShipper({
    spool,
    logger: silentLogger(),
    connect: () =>
      CollectorSession.connect({
        url: `ws://127.0.0.1:${collector!.ingestPort}`,
        agentId,
        hostname: agentId,
        ca: undefined,
        allowInsecure: true,
        credentials: new CredentialsFileStore(join(data, "collector-credentials.json"), silentLogger()),
        enrollmentToken: () => collector!.auth.createToken({ ttlMs: 3_600_000 }).token,
        maxFrameBytes: 4 << 20,
        handshakeTimeoutMs: 10_000,
      }),
    window: 64,
    maxInFlightBytes: 16 << 20,
    ackTimeoutMs: 30_000,
    reconnectMinMs: 100,
    reconnectMaxMs: 1000,
  });
  shipper.start();
  try {
    await waitFor(() => spool.pendingFrames === 0, {
      timeoutMs: 60_000,
      what: `${agentId}'s spool to drain`,
    });
  } finally {
    await shipper.stop();
    await spool.close();
  }
  const round = await collector!.risk.recompute("test");
  return round.filter((a) => a.vm_name === VM_NAME);
}

const capturingLines = (lines: string[]) => lines.filter((l) => /campaign: capturing/.test(l));

test("a capture whose restored guests crash unstressed is replaced by a fresh one, and the campaign finishes", async () => {
  const planted = await ch!.sysrqAfter("c", BOMB_S, { check: true, timeoutMs: 30_000 });
  log(`crash planted in production: ${JSON.stringify(planted)}`);
  // The first capture holds the pending crash; production is defused once it is taken.
  const { r, lines, data, reactions } = await exploreOnce("badcap-host", (n) =>
    n === 1 ? ch!.kill("timebomb", "KILL", { check: true, timeoutMs: 30_000 }) : Promise.resolve(),
  );
  const [defused] = (await Promise.all(reactions)) as [{ pids?: number[] }];
  assert.ok(
    (defused?.pids ?? []).length > 0,
    `the crash was still pending at the capture: ${JSON.stringify(defused)}`,
  );
  assert.is(r.code, 0, r.stderr.slice(-4000));

  const out = JSON.parse(r.stdout) as { trials: unknown[]; capture: string; captures?: string[] };
  assert.is(out.trials.length, 1, "the campaign's one run has an outcome");
  assert.is(out.captures?.length, 2, `two captures: ${JSON.stringify(out.captures)}`);
  assert.is(out.capture, out.captures![1], "the run that counts used the fresh capture");

  const capturing = capturingLines(lines);
  assert.is(capturing.length, 2);
  assert.match(capturing[1]!, /reason=the control shadow of capture \S+ was unhealthy: control run failed/);
  // The first batch ended when its control crashed, not at its duration: the control stopped on
  // its failure, and it stopped the stressed shadow.
  const firstBatch = lines.slice(0, lines.indexOf(capturing[1]!));
  const stopped = firstBatch.filter((l) => /shadow: stopped/.test(l));
  assert.ok(
    stopped.some((l) => /shadow=\S+-c reason=failure seen \(/.test(l)),
    `the control stopped on its crash:\n${stopped.join("\n")}`,
  );
  assert.ok(
    stopped.some((l) => /shadow=\S+-1 reason=the control shadow failed \(/.test(l)),
    `the stressed shadow was stopped by the failing control:\n${stopped.join("\n")}`,
  );
  assert.match(firstBatch.join("\n"), /control verdict verdict=\{"healthy":false/);

  // Both captures are shipped; the collector does not call the VM doomed for one bad capture.
  const byClass = await spooledByClass(data, "badcap-host");
  assert.is(byClass.capture.frames, 2, `capture records spooled: ${JSON.stringify(byClass)}`);
  const risk = await shipAndAssess(data, "badcap-host");
  assert.equal(
    risk.filter((a) => a.fails_unstressed).map((a) => a.title),
    [],
    "one bad capture is not a VM that fails unstressed",
  );

  await ch!.send("ping", { check: true, timeoutMs: 30_000 });
  assert.not.match(await vm!.consoleText(), /Kernel panic|sysrq triggered crash/, "production never crashed");
});

test("a VM that fails unstressed on every capture: no third capture, and the collector says it fails now", async () => {
  await ch!.sysrqAfter("c", BOMB_S, { check: true, timeoutMs: 30_000 });
  // Each capture holds a pending crash: after the first, production's is put off (defused and
  // planted again, long enough for the second capture to be taken before it fires); after the
  // second it is defused for good.
  const { r, lines, data, reactions } = await exploreOnce("doomed-host", async (n) => {
    await ch!.kill("timebomb", "KILL", { check: true, timeoutMs: 30_000 });
    if (n === 1) await ch!.sysrqAfter("c", 100, { check: true, timeoutMs: 30_000 });
  });
  await Promise.all(reactions);
  assert.is(r.code, 1, "the campaign ends with an error");
  const out = JSON.parse(r.stdout) as { trials: unknown[]; captures?: string[]; error?: { message: string } };
  assert.match(
    out.error?.message ?? "",
    /^the control shadow failed the same way on a fresh capture \(kernel panic: sysrq triggered crash\): the VM fails without stress/,
  );
  assert.is(out.trials.length, 0, "no stressed outcome counted");
  assert.is(capturingLines(lines).length, 2, "no third capture");

  const risk = await shipAndAssess(data, "doomed-host");
  const doomed = risk.find((a) => a.fails_unstressed);
  assert.ok(
    doomed,
    `an assessment that the VM fails unstressed: ${JSON.stringify(risk.map((a) => a.title))}`,
  );
  log(
    `collector: ${doomed.title}: P ${doomed.probability}, ${doomed.confidence_level}; ${doomed.explanation.slice(0, 200)}`,
  );
  assert.is(doomed.title, "kernel panic: sysrq triggered crash");
  assert.is(doomed.probability, 1);
  assert.is(doomed.time_to_failure_h, 0);
  assert.is(doomed.confidence_level, "high");
  assert.match(
    doomed.explanation,
    /^Fails without stress: badcap-prod's unstressed control shadows failed .* on 2 separate live captures/,
  );
  assert.match(doomed.mitigations[0]?.action ?? "", /^restart badcap-prod /);

  await ch!.send("ping", { check: true, timeoutMs: 30_000 });
  assert.not.match(await vm!.consoleText(), /Kernel panic|sysrq triggered crash/, "production never crashed");
});

test.run();
