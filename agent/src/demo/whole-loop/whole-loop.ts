// The whole loop on the embedded demo, with the product's own binaries as separate processes:
//
//   Alertmanager (real, loopback) <- alerts -- shadowvm-collector serve (DuckDB in the work dir)
//                                                 ^ wire (ws:// on loopback)
//   demo-production (leaking) --QMP--> shadowvm-agent serve: telemetry of both VMs; a campaign on
//   demo-healthy                        demo-production: capture, explorer batches of shadows,
//                                       failures, signatures -> spool -> collector
//
// The collector's risk engine sets the shadows' failure boundary against each VM's telemetry (and
// gives the healthy VM, which shares the image label, the fleet's evidence) and alerts. The job
// shows what happens (LoopMonitor), ends with the risk table, the alerts as Alertmanager received
// them and an HTML report, and tears everything down unless asked to keep it. With
// untilProductionFails it goes on until the production VM's own console shows the OOM kill and
// reports the lead time of the alert.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describeError, type RiskAssessment, ShadowvmError } from "@shadowvm/shared";
import { type DemoVm, freePort, startDemoVm } from "../demo-vm.js";
import { type Alertmanager, type AlertmanagerAlert, startAlertmanager } from "./alertmanager.js";
import { CollectorApi } from "./collector-api.js";
import { ConsoleWatch } from "./console-watch.js";
import { demoAgentConfig, demoCollectorConfig, writeJsonConfig } from "./loop-config.js";
import { LoopMonitor } from "./loop-monitor.js";
import { ServiceProcess } from "./service-process.js";

const ROOT = resolve(fileURLToPath(new URL("../../../../", import.meta.url)));
export const AGENT_BIN = join(ROOT, "agent/bin/shadowvm-agent.js");
export const COLLECTOR_BIN = join(ROOT, "collector/bin/shadowvm-collector.js");

export const PRODUCTION_VM = "demo-production";
export const HEALTHY_VM = "demo-healthy";

export interface WholeLoopOptions {
  /** Default: a new directory under /tmp (socket paths must stay short). */
  workDir?: string;
  /** Where the HTML report goes (outlives the work dir). Default ~/.cache/shadowvm/demo-reports. */
  reportsDir?: string;
  guestDir?: string;
  keep?: boolean;
  untilProductionFails?: boolean;
  /** The production VM's leak, KiB/s. */
  leakKbS?: number;
  budget?: number;
  parallel?: number;
  durationS?: number;
  firstDelayS?: number;
  horizonH?: number;
  telemetryIntervalS?: number;
  /** Overall deadline after set-up, seconds. */
  timeoutS?: number;
  signal?: AbortSignal;
  /** Progress lines. */
  say?: (line: string) => void;
}

export interface WholeLoopSummary {
  ok: boolean;
  /** Why ok is false. */
  problems: string[];
  mode: "campaign" | "until-production-fails";
  work_dir: string;
  kept: boolean;
  leak_kb_s: number;
  started_at_ms: number;
  services_ready_at_ms?: number;
  vms_ready_at_ms?: number;
  agent_started_at_ms?: number;
  capture_at_ms?: number;
  campaign_finished_at_ms?: number;
  first_shadow_failure_stored_at_ms?: number;
  /**
   * First sighting in Alertmanager (polled every second) of demo-production's alert for the class
   * of failure it then showed (any class while it has not failed).
   */
  alert_received_at_ms?: number;
  alert?: AlertmanagerAlert;
  production_failed_at_ms?: number;
  production_failure?: { title: string; class: string; line: number };
  /** production_failed_at_ms - alert_received_at_ms, seconds. */
  lead_time_s?: number;
  healthy_alerted: boolean;
  /** Every alert Alertmanager held for the demo VMs (latest copy). */
  alertmanager_alerts: AlertmanagerAlert[];
  risk: (RiskAssessment & { vm_name: string })[];
  /** Risk rows whose signature was found by this run's shadows (fingerprint among stored failures). */
  risk_from_shadow_failures: number;
  shadow_runs: { id: string; control: boolean; outcome: string; failures: number; profile: unknown }[];
  failures: { class: string; title: string; fingerprint: string; run: string; received_at_ms: number }[];
  report_html?: string;
  risk_table?: string;
  finished_at_ms?: number;
  duration_s?: number;
  pids?: Record<string, number | undefined>;
}

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a service's CLI (plain node, as an operator would) and returns its output. */
export function runCli(bin: string, args: string[], timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((res) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        res({ code, stdout, stderr });
      },
    );
  });
}

async function cliOk(bin: string, args: string[], what: string): Promise<string> {
  const r = await runCli(bin, args);
  if (r.code !== 0) {
    throw new ShadowvmError(
      "demo",
      "cli-failed",
      `${what} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout.trim();
}

function aborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new ShadowvmError("demo", "interrupted", "interrupted");
}

/** Sleeps `ms` or until aborted. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((res) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      res();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

let emergencyStop: (() => void) | undefined;

/** Kills what the running loop started, at once (a second Ctrl-C); synchronous. */
export function stopWholeLoopNow(): void {
  emergencyStop?.();
}

export function defaultReportsDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env["SHADOWVM_CACHE"] || join(homedir(), ".cache", "shadowvm"), "demo-reports");
}

export async function runWholeLoop(o: WholeLoopOptions = {}): Promise<WholeLoopSummary> {
  const say = o.say ?? ((l: string) => process.stdout.write(`${l}\n`));
  const t0 = Date.now();
  const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s]`;
  const event = (l: string) => say(`${stamp()} ${l}`);
  const step = (l: string) => say(`\n==> ${l}`);
  const leakKbS = o.leakKbS ?? 350;
  const workDir = o.workDir ?? mkdtempSync("/tmp/shadowvm-demo-");
  mkdirSync(workDir, { recursive: true });
  const reportsDir = o.reportsDir ?? defaultReportsDir();
  const summary: WholeLoopSummary = {
    ok: false,
    problems: [],
    mode: o.untilProductionFails ? "until-production-fails" : "campaign",
    work_dir: workDir,
    kept: false,
    leak_kb_s: leakKbS,
    started_at_ms: t0,
    healthy_alerted: false,
    alertmanager_alerts: [],
    risk: [],
    risk_from_shadow_failures: 0,
    shadow_runs: [],
    failures: [],
  };

  let am: Alertmanager | undefined;
  let collector: ServiceProcess | undefined;
  let agent: ServiceProcess | undefined;
  let watch: ConsoleWatch | undefined;
  const vms: DemoVm[] = [];
  const collectorConfigFile = join(workDir, "collector.yaml");
  const agentConfigFile = join(workDir, "agent.yaml");
  let keep = false;
  let monitor: LoopMonitor | undefined;

  // A second Ctrl-C does not wait for the orderly teardown: everything is killed at once, the
  // agent's shadows reaped from its registry, the work dir removed (all synchronous).
  emergencyStop = () => {
    watch?.stop();
    if (keep) return;
    agent?.killNow();
    if (existsSync(agentConfigFile)) {
      try {
        execFileSync(process.execPath, [AGENT_BIN, "shadow", "reap", "--config", agentConfigFile], {
          stdio: "ignore",
          timeout: 30_000,
        });
      } catch {
        /* best effort */
      }
    }
    collector?.killNow();
    am?.process.killNow();
    for (const vm of vms) vm.process.kill("SIGKILL");
    rmSync(workDir, { recursive: true, force: true });
  };

  const teardown = async () => {
    watch?.stop();
    if (keep) return;
    // The agent first: on SIGTERM it stops its campaign and tears its shadows down.
    if (agent) {
      const r = await agent.stop(90_000);
      if (r.code !== 0) event(`agent exited with ${r.code ?? r.signal}`);
      // Whatever a killed agent could not remove (shadow QEMUs, cgroups, plaintext restores).
      await runCli(AGENT_BIN, ["shadow", "reap", "--config", agentConfigFile], 60_000).catch(() => undefined);
    }
    if (collector) await collector.stop(30_000);
    await am?.stop();
    await Promise.all(vms.map((vm) => vm.stop({ timeoutMs: 10_000 })));
    rmSync(workDir, { recursive: true, force: true });
  };

  try {
    // --- 1. Alertmanager and the collector ------------------------------------------------------
    step("starting Alertmanager and the collector (DuckDB in the work dir)");
    say(`work dir: ${workDir}`);
    am = await startAlertmanager({ dir: join(workDir, "alertmanager") });
    event(`Alertmanager ready on ${am.url}`);
    aborted(o.signal);
    const [ingestPort, metricsPort, apiPort, agentMetricsPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    writeJsonConfig(
      collectorConfigFile,
      demoCollectorConfig({
        dir: workDir,
        ingestPort,
        metricsPort,
        apiPort,
        alertmanagerUrl: am.url,
        reportsDir,
        horizonH: o.horizonH ?? 1,
      }),
    );
    const cfg = ["--config", collectorConfigFile];
    /** `shadowvm-collector risk`: from the database, or from the running collector's API (--keep). */
    const showRiskTable = async () => {
      step("risk table (shadowvm-collector risk)");
      const table = await runCli(COLLECTOR_BIN, ["risk", ...cfg]);
      summary.risk_table = (table.stdout || table.stderr).trimEnd();
      say(summary.risk_table);
    };
    const enrollToken = await cliOk(
      COLLECTOR_BIN,
      ["token", "create", "--ttl", "6h", "--description", "demo agent", ...cfg],
      "shadowvm-collector token create",
    );
    const tokenFile = join(workDir, "enrollment-token");
    writeFileSync(tokenFile, `${enrollToken}\n`, { mode: 0o600 });
    const apiToken = await cliOk(
      COLLECTOR_BIN,
      ["api-token", "create", "--scope", "read", "--description", "demo progress", ...cfg],
      "shadowvm-collector api-token create",
    );
    event("enrollment token and read API token created (shadowvm-collector token / api-token create)");
    collector = ServiceProcess.start({
      name: "shadowvm-collector",
      command: process.execPath,
      args: [COLLECTOR_BIN, "serve", ...cfg],
      logFile: join(workDir, "collector.log"),
    });
    const api = new CollectorApi(`http://127.0.0.1:${apiPort}`, apiToken, `http://127.0.0.1:${metricsPort}`);
    await waitUntil(
      async () => {
        collector?.assertRunning();
        const r = await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined);
        return r?.status === 200 || undefined;
      },
      { timeoutMs: 60_000, what: "the collector's /readyz", signal: o.signal },
    );
    event(
      `collector ready: ingest ws://127.0.0.1:${ingestPort}, API ${api.baseUrl}/api/v1, pid ${collector.pid}`,
    );
    summary.services_ready_at_ms = Date.now();

    // --- 2. the two production VMs ------------------------------------------------------------------
    step(`booting ${PRODUCTION_VM} (memory leak of ${leakKbS} KiB/s) and ${HEALTHY_VM} under QEMU`);
    const started = await Promise.allSettled([
      startDemoVm({
        name: PRODUCTION_VM,
        workDir: join(workDir, "vms", PRODUCTION_VM),
        extraKernelArgs: [`shadowvm.leak_kb_s=${leakKbS}`],
        ...(o.guestDir ? { guestDir: o.guestDir } : {}),
      }),
      startDemoVm({
        name: HEALTHY_VM,
        workDir: join(workDir, "vms", HEALTHY_VM),
        ...(o.guestDir ? { guestDir: o.guestDir } : {}),
      }),
    ]);
    for (const s of started) if (s.status === "fulfilled") vms.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    const [prod, healthy] = vms as [DemoVm, DemoVm];
    watch = new ConsoleWatch(prod.consoleLog, (f) =>
      event(`${PRODUCTION_VM} console: ${f.failure.class} "${f.failure.title}" (line ${f.failure.line})`),
    );
    const ready = await abortable(Promise.all(vms.map((vm) => vm.waitReady(240_000))), o.signal);
    summary.vms_ready_at_ms = Date.now();
    event(
      `both VMs ready (${ready.map((r, i) => `${vms[i]?.name} ${(r.readyMs / 1000).toFixed(1)} s`).join(", ")}), QEMU pids ${prod.pid} and ${healthy.pid}`,
    );
    aborted(o.signal);

    // --- 3. the agent ---------------------------------------------------------------------------------
    const budget = o.budget ?? 9;
    const parallel = o.parallel ?? 3;
    const durationS = o.durationS ?? 75;
    const firstDelayS = o.firstDelayS ?? 25;
    writeJsonConfig(
      agentConfigFile,
      demoAgentConfig({
        dir: workDir,
        collectorUrl: `ws://127.0.0.1:${ingestPort}`,
        tokenFile,
        metricsPort: agentMetricsPort,
        qmpSockets: vms.map((vm) => vm.qmpSocket),
        campaignVms: [PRODUCTION_VM],
        firstDelayS,
        budget,
        parallel,
        durationS,
        telemetryIntervalS: o.telemetryIntervalS ?? 2,
      }),
    );
    step(
      `starting the agent: telemetry of both VMs; after ${firstDelayS} s a campaign on ${PRODUCTION_VM} (${budget} stressed shadows, ${parallel} at a time, ${durationS} s each, plus a control)`,
    );
    const mon = new LoopMonitor({ api, alertmanager: am, say: event });
    monitor = mon;
    agent = ServiceProcess.start({
      name: "shadowvm-agent",
      command: process.execPath,
      args: [AGENT_BIN, "serve", "--config", agentConfigFile],
      logFile: join(workDir, "agent.log"),
      onLine: (line) => mon.onAgentLine(line),
    });
    summary.agent_started_at_ms = Date.now();
    event(`shadowvm-agent serve running (pid ${agent.pid}, log ${join(workDir, "agent.log")})`);

    // --- 4. watch it work -----------------------------------------------------------------------------
    const deadline = Date.now() + (o.timeoutS ?? (o.untilProductionFails ? 1500 : 900)) * 1000;
    let doneAt: number | undefined;
    let announcedWaitForProduction = false;
    let lastPollError = "";
    for (;;) {
      aborted(o.signal);
      agent.assertRunning();
      collector.assertRunning();
      am.process.assertRunning();
      await mon.poll().then(
        () => {
          lastPollError = "";
        },
        (err) => {
          const m = describeError(err);
          if (m !== lastPollError) event(`(collector API: ${m})`);
          lastPollError = m;
        },
      );
      const s = mon.state;
      if (s.campaignError)
        throw new ShadowvmError("demo", "campaign-failed", `the campaign failed: ${s.campaignError}`);
      if (mon.firstAlert(HEALTHY_VM)) summary.healthy_alerted = true;
      const oom = watch.first("oom");
      if (oom && summary.production_failed_at_ms === undefined) {
        summary.production_failed_at_ms = oom.seenAtMs;
        summary.production_failure = {
          title: oom.failure.title,
          class: oom.failure.class,
          line: oom.failure.line,
        };
        event(`${PRODUCTION_VM} itself failed: ${oom.failure.class} "${oom.failure.title}"`);
      }
      // The campaign's results are in and a risk round has taken them all into account.
      if (doneAt === undefined && s.campaignFinishedAtMs !== undefined) {
        const lastFailure = mon.lastFailureStoredMs();
        if (mon.lastRiskRoundMs() > lastFailure && (lastFailure > 0 || s.runs.size > 0)) doneAt = Date.now();
      }
      const alertOrGrace =
        mon.firstAlert(PRODUCTION_VM) !== undefined || (doneAt !== undefined && Date.now() - doneAt > 20_000);
      if (doneAt !== undefined && alertOrGrace) {
        if (!o.untilProductionFails) break;
        if (summary.production_failed_at_ms !== undefined) break;
        if (!announcedWaitForProduction) {
          announcedWaitForProduction = true;
          event(`waiting for ${PRODUCTION_VM} itself to fail (its serial console, ${prod.consoleLog})`);
        }
      }
      if (Date.now() > deadline) {
        summary.problems.push(
          `deadline of ${o.timeoutS ?? (o.untilProductionFails ? 1500 : 900)} s passed (${doneAt === undefined ? "the campaign's results were not all assessed" : "production did not fail"})`,
        );
        break;
      }
      await pause(1000, o.signal);
    }
    // A last look, so the summary has the final state of everything.
    await mon.poll().catch(() => undefined);

    // --- 5. results --------------------------------------------------------------------------------------
    fillSummary(summary, mon, watch, o);
    if (summary.risk_from_shadow_failures === 0)
      summary.problems.push("no risk row was built from this run's shadow failures");
    if (o.untilProductionFails && summary.production_failed_at_ms === undefined)
      summary.problems.push(`${PRODUCTION_VM} did not fail before the deadline`);

    step("alerts as Alertmanager received them (GET /api/v2/alerts)");
    if (summary.alertmanager_alerts.length === 0) say("none");
    for (const a of summary.alertmanager_alerts) say(formatAlert(a));

    step("HTML report (shadowvm-collector report --now)");
    const reportId = await cliOk(
      COLLECTOR_BIN,
      ["report", "--now", ...cfg],
      "shadowvm-collector report --now",
    );
    summary.report_html = await cliOk(
      COLLECTOR_BIN,
      ["report", "show", reportId.split("\n")[0]!.trim(), "--format", "html", ...cfg],
      "shadowvm-collector report show",
    );
    say(summary.report_html);

    if (o.keep) {
      await showRiskTable();
      keep = true;
      summary.kept = true;
      for (const vm of vms) vm.detach();
      for (const p of [agent, collector, am.process]) p.detach();
      summary.pids = {
        agent: agent.pid,
        collector: collector.pid,
        alertmanager: am.process.pid,
        [PRODUCTION_VM]: prod.pid,
        [HEALTHY_VM]: healthy.pid,
      };
      const stopScript = writeStopScript(workDir, summary.pids, agentConfigFile);
      step("--keep: everything keeps running");
      say(
        [
          `collector API  ${api.baseUrl}/api/v1 (read token in ${join(workDir, "api-token")})`,
          `Alertmanager   ${am.url}`,
          `agent log      ${join(workDir, "agent.log")}`,
          `pids           ${Object.entries(summary.pids)
            .map(([k, v]) => `${k} ${v}`)
            .join(", ")}`,
          `stop it all    bash ${stopScript}`,
        ].join("\n"),
      );
      writeFileSync(join(workDir, "api-token"), `${apiToken}\n`, { mode: 0o600 });
    } else {
      step("stopping the agent (its shadows are torn down) and the collector");
      const r = await agent.stop(90_000);
      await runCli(AGENT_BIN, ["shadow", "reap", "--config", agentConfigFile], 60_000).catch(() => undefined);
      agent = undefined;
      if (r.code !== 0) event(`agent exited with ${r.code ?? r.signal}`);
      await collector.stop(30_000);
      collector = undefined;
      await showRiskTable();
    }
    summary.ok = summary.problems.length === 0;
    return summary;
  } catch (err) {
    if (monitor) fillSummary(summary, monitor, watch, o);
    summary.problems.push(describeError(err));
    throw Object.assign(err instanceof Error ? err : new Error(String(err)), { summary });
  } finally {
    summary.finished_at_ms = Date.now();
    summary.duration_s = (summary.finished_at_ms - t0) / 1000;
    await teardown().catch((err) => say(`cleanup: ${describeError(err)}`));
  }
}

/** `p`, or a rejection as soon as `signal` aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((res, rej) => {
    const onAbort = () => rej(new ShadowvmError("demo", "interrupted", "interrupted"));
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(res, rej).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Times, alerts, risk, runs and failures from what the monitor and the console watch saw. */
function fillSummary(
  summary: WholeLoopSummary,
  monitor: LoopMonitor,
  watch: ConsoleWatch | undefined,
  o: WholeLoopOptions,
): void {
  const s = monitor.state;
  summary.capture_at_ms = s.captureAtMs;
  summary.campaign_finished_at_ms = s.campaignFinishedAtMs;
  summary.first_shadow_failure_stored_at_ms = s.firstFailureStoredAtMs;
  const oom = watch?.first("oom");
  if (oom) {
    summary.production_failed_at_ms = oom.seenAtMs;
    summary.production_failure = {
      title: oom.failure.title,
      class: oom.failure.class,
      line: oom.failure.line,
    };
  }
  // The lead time is for the failure production showed, so the alert is the first of that class.
  const prodAlert = monitor.firstAlert(PRODUCTION_VM, summary.production_failure?.class);
  const otherAlert = monitor.firstAlert(PRODUCTION_VM);
  if (!prodAlert && summary.production_failure && otherAlert)
    summary.problems.push(
      `${PRODUCTION_VM} failed with ${summary.production_failure.class}, but no alert named that class (the first named ${otherAlert.alert.labels["failure_class"]})`,
    );
  if (prodAlert) {
    summary.alert_received_at_ms = prodAlert.seenAtMs;
    summary.alert = prodAlert.alert;
  }
  summary.healthy_alerted = monitor.firstAlert(HEALTHY_VM) !== undefined;
  summary.alertmanager_alerts = [...s.allAlerts.values()].map((a) => a.alert);
  if (
    o.untilProductionFails &&
    summary.production_failed_at_ms !== undefined &&
    summary.alert_received_at_ms !== undefined
  ) {
    summary.lead_time_s = (summary.production_failed_at_ms - summary.alert_received_at_ms) / 1000;
  }
  const fingerprints = new Set([...s.failures.values()].map((f) => f.fingerprint));
  summary.failures = [...s.failures.values()].map((f) => ({
    class: f.class,
    title: f.title,
    fingerprint: f.fingerprint,
    run: f.shadow_run_id,
    received_at_ms: f.received_at_ms,
  }));
  summary.shadow_runs = [...s.runs.values()].map((r) => ({
    id: r.id,
    control: r.control,
    outcome: r.outcome,
    failures: r.failure_count,
    profile: r.profile,
  }));
  summary.risk = [...s.risk.values()].map((a) => ({ ...a, vm_name: s.vmsSeen.get(a.vm_uuid) ?? a.vm_uuid }));
  summary.risk_from_shadow_failures = summary.risk
    .flatMap((a) => a.signatures)
    .filter((sig) => fingerprints.has(sig.fingerprint)).length;
}

async function waitUntil<T>(
  fn: () => Promise<T | undefined>,
  o: { timeoutMs: number; what: string; signal?: AbortSignal | undefined },
): Promise<T> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    aborted(o.signal);
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new ShadowvmError("demo", "timeout", `timed out waiting for ${o.what}`);
    await pause(200, o.signal);
  }
}

export function formatAlert(a: AlertmanagerAlert): string {
  const l = a.labels;
  const n = a.annotations;
  return [
    `${l["alertname"]} ${l["severity"]} vm=${l["vm"]} failure_class=${l["failure_class"]} dimension=${l["dimension"]} (${a.status.state}, since ${a.startsAt})`,
    `  summary:         ${n["summary"] ?? "-"}`,
    `  probability:     ${n["probability"] ?? "-"}   confidence: ${n["confidence"] ?? "-"}   time to failure: ${n["time_to_failure"] ?? "-"}`,
    `  evidence:        ${n["evidence_source"] ?? "-"}`,
    `  mitigation:      ${(n["mitigation"] ?? "-").split("\n").join("\n                   ")}`,
    `  link:            ${n["link"] ?? "-"}`,
  ].join("\n");
}

function writeStopScript(
  workDir: string,
  pids: Record<string, number | undefined>,
  agentConfig: string,
): string {
  const file = join(workDir, "stop.sh");
  const order = ["agent", "collector", "alertmanager", PRODUCTION_VM, HEALTHY_VM];
  writeFileSync(
    file,
    [
      "#!/usr/bin/env bash",
      "# Stops what the demo left running (--keep), in order, and removes its work dir.",
      "set -u",
      ...order.flatMap((name) => {
        const pid = pids[name];
        if (!pid) return [];
        return [
          `kill -TERM ${pid} 2>/dev/null && for _ in $(seq 90); do kill -0 ${pid} 2>/dev/null || break; sleep 1; done`,
          `kill -KILL ${pid} 2>/dev/null || true`,
        ];
      }),
      `${JSON.stringify(process.execPath)} ${JSON.stringify(AGENT_BIN)} shadow reap --config ${JSON.stringify(agentConfig)} >/dev/null 2>&1 || true`,
      `rm -rf ${JSON.stringify(workDir)}`,
      `echo "shadowvm demo stopped"`,
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
  return file;
}
