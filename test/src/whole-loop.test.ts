// The issue-8 scenario across the whole loop, with real processes only: the README's main job
// (agent/dist/demo/main-job.js, what `bash deploy/demo.sh` runs) with --until-production-fails.
// demo-production leaks memory toward the guest's OOM killer; the agent's campaign captures it and
// shadows it under memory pressure (where the leak, carried in the capture, reaches the OOM killer
// early); the collector turns the shadows' OOM boundary and production's telemetry into a risk and
// alerts a real Alertmanager; the job waits until production's own console shows its OOM kill.
//
// Asserted: an alert for demo-production reached Alertmanager before production's OOM kill, with
// the OOM signature (class and fingerprint of the shadows' failure), a confidence and a mitigation;
// no alert for demo-healthy (same image, no leak, fleet evidence only); a risk table built from the
// run's real shadow failures; the lead time (> 0) is printed. Everything is torn down by the job
// itself; if the job dies or overruns, this test stops it and removes whatever it left.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultGuestDir } from "@shadowvm/agent/demo/demo-vm";
import type { WholeLoopSummary } from "@shadowvm/agent/demo/whole-loop/whole-loop";
import { test } from "uvu";
import * as assert from "uvu/assert";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MAIN_JOB = join(ROOT, "agent/dist/demo/main-job.js");
const AGENT_BIN = join(ROOT, "agent/bin/shadowvm-agent.js");
const LOG_DIR = join(ROOT, "test-artifacts/logs");
/**
 * The job's own deadline (a run takes ~460 s); the test's is a little longer so the job can report
 * and clean up, and both end before run-tests' per-file deadline (1200 s) would stop the test.
 */
const JOB_TIMEOUT_S = 900;

const scratch = mkdtempSync("/tmp/svm-loop-");
const workDir = join(scratch, "w");
const summaryFile = join(scratch, "summary.json");
let job: ChildProcess | undefined;

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once("exit", (code) => r(code)));
}

/** Processes whose command line mentions `dir` (what the job started there: QEMU, services). */
function processesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dir)) pids.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return pids;
}

test.after(async () => {
  if (job && job.exitCode === null && job.signalCode === null) {
    job.kill("SIGINT"); // the job's own teardown: agent (and its shadows), collector, Alertmanager, VMs
    const t = setTimeout(() => job?.kill("SIGKILL"), 180_000);
    await exited(job);
    clearTimeout(t);
  }
  const left = processesUnder(workDir);
  for (const pid of left) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  if (left.length) console.log(`whole-loop: killed ${left.length} process(es) the job left behind`);
  if (existsSync(join(workDir, "agent.yaml"))) {
    try {
      execFileSync(process.execPath, [AGENT_BIN, "shadow", "reap", "--config", join(workDir, "agent.yaml")], {
        stdio: "ignore",
        timeout: 60_000,
      });
    } catch {
      /* best effort */
    }
  }
  rmSync(scratch, { recursive: true, force: true });
});

test("an alert for the leaking VM reaches Alertmanager before the VM itself fails", async () => {
  assert.ok(
    existsSync(join(defaultGuestDir(), "guest.json")),
    "the demo guest image is built (bash scripts/setup.sh or deploy/guest/build-guest-image.sh)",
  );
  assert.ok(existsSync("/usr/bin/prometheus-alertmanager"), "prometheus-alertmanager is installed");
  mkdirSync(LOG_DIR, { recursive: true });
  const log = createWriteStream(join(LOG_DIR, "whole-loop.log"));
  const t0 = Date.now();
  let stdout = "";
  job = spawn(
    process.execPath,
    [
      MAIN_JOB,
      "--until-production-fails",
      "--json-summary",
      summaryFile,
      "--work-dir",
      workDir,
      "--reports-dir",
      join(scratch, "reports"),
      "--timeout",
      String(JOB_TIMEOUT_S),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  for (const s of [job.stdout!, job.stderr!]) {
    s.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      log.write(d);
      process.stdout.write(d);
    });
  }
  const deadline = setTimeout(() => job?.kill("SIGINT"), (JOB_TIMEOUT_S + 240) * 1000);
  const code = await exited(job);
  clearTimeout(deadline);
  log.end();
  const seconds = (Date.now() - t0) / 1000;

  assert.ok(
    existsSync(summaryFile),
    `the job wrote its summary (exit ${code}); see ${LOG_DIR}/whole-loop.log`,
  );
  const s = JSON.parse(readFileSync(summaryFile, "utf8")) as WholeLoopSummary;
  assert.equal(s.problems, [], "the job reports no problem");
  assert.is(code, 0, "exit code 0");

  // A risk table from this run's real shadow failures.
  const oomFailures = s.failures.filter((f) => f.class === "oom");
  assert.ok(
    oomFailures.length > 0,
    `the shadows found the OOM (${JSON.stringify(s.failures.map((f) => f.title))})`,
  );
  assert.ok(s.risk_from_shadow_failures > 0, "risk rows built from the shadows' failures");
  assert.ok(
    s.shadow_runs.some((r) => !r.control && r.outcome === "failed"),
    "stressed shadow runs failed",
  );
  assert.match(s.risk_table ?? "", /demo-production/, "the risk table names the production VM");

  // The production alert, as Alertmanager received it.
  const alert = s.alert;
  assert.ok(alert, "an alert for demo-production reached Alertmanager");
  assert.is(alert.labels["alertname"], "ShadowvmFailureRisk");
  assert.is(alert.labels["vm"], "demo-production");
  assert.is(alert.labels["failure_class"], "oom", "the OOM signature's class");
  assert.ok(
    oomFailures.some((f) => f.fingerprint === alert.labels["signature"]),
    "the alert's signature is the shadows' OOM fingerprint",
  );
  assert.match(alert.annotations["confidence"] ?? "", /^\d\.\d\d \((low|medium|high)\)$/, "a confidence");
  assert.ok((alert.annotations["mitigation"] ?? "").length > 10, "a mitigation");
  assert.match(alert.annotations["mitigation"] ?? "", /memory|leak/i, "the mitigation is about memory");

  // Before production itself failed.
  assert.is(s.production_failure?.class, "oom", "production's own console shows the OOM kill");
  assert.ok(s.alert_received_at_ms! < s.production_failed_at_ms!, "the alert came before the failure");
  assert.ok((s.lead_time_s ?? 0) > 0, "lead time > 0");
  assert.match(stdout, /lead time \(production failure - alert\): \d+ s/, "the lead time is printed");

  // The healthy VM: no alert.
  assert.is(s.healthy_alerted, false, "no alert for demo-healthy");
  assert.equal(
    s.alertmanager_alerts.filter((a) => a.labels["vm"] === "demo-healthy"),
    [],
    "Alertmanager never held an alert for demo-healthy",
  );
  // Torn down: nothing the job started is left.
  assert.equal(processesUnder(workDir), [], "no process of the job is left");
  assert.not.ok(existsSync(workDir), "the work dir is removed");

  const rel = (ms: number | undefined) =>
    ms === undefined ? "-" : `${((ms - s.started_at_ms) / 1000).toFixed(0)} s`;
  console.log(
    `whole-loop: first shadow failure stored at ${rel(s.first_shadow_failure_stored_at_ms)}, alert in Alertmanager at ${rel(s.alert_received_at_ms)}, production OOM at ${rel(s.production_failed_at_ms)}: lead time ${s.lead_time_s?.toFixed(0)} s; job ${s.duration_s?.toFixed(0)} s, test ${seconds.toFixed(0)} s; leak ${s.leak_kb_s} KiB/s; alert confidence ${alert.annotations["confidence"]}`,
  );
});

test.run();
