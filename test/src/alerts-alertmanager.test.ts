// Alerts end to end through a real collector and a real Alertmanager (Debian's
// prometheus-alertmanager on loopback with a temp config and storage dir, started by the helper the
// demo's whole loop uses, agent/src/demo/whole-loop/alertmanager.ts): a VM whose
// memory grows toward the OOM boundary its shadows found gets one alert (labels, confidence,
// mitigation, link), re-sent while active without duplicates, also delivered to a webhook; a
// healthy VM gets none; when the VM's memory falls back the alert is resolved (endsAt) and leaves
// Alertmanager's active list. Every alert and delivery is in DuckDB.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Alertmanager, startAlertmanager } from "@shadowvm/agent/demo/whole-loop/alertmanager";
import {
  type CollectorService,
  collectorConfigSchema,
  IngestStore,
  startCollector,
} from "@shadowvm/collector";
import { AlertDispatcher, alertDeliveries, listAlerts } from "@shadowvm/collector/alerts/alert-dispatcher";
import { queryable, type RiskAssessment } from "@shadowvm/collector/risk/risk-engine";
import { silentLogger } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { History, noise, OOM } from "./risk-history.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-alerts-"));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let am: Alertmanager | undefined;
let amUrl = "";
let hook: Server | undefined;
const hookBodies: { status: string; alert: { vm_name: string; alert_id: string } }[] = [];
let hookRequests = 0;
let collector: CollectorService | undefined;

function amAlerts() {
  return am!.alerts('alertname="ShadowvmFailureRisk"');
}

test.before(async () => {
  const t0 = Date.now();
  am = await startAlertmanager({ dir: join(dir, "alertmanager") });
  amUrl = am.url;
  console.log(`alertmanager ready in ${Date.now() - t0} ms`);

  hook = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      // The first request fails: the dispatcher records it and delivers again at the next tick.
      if (hookRequests++ === 0) {
        res.writeHead(503).end("not yet");
        return;
      }
      hookBodies.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => hook!.listen(0, "127.0.0.1", r));
  const hookPort = (hook.address() as { port: number }).port;

  const config = collectorConfigSchema.parse({
    data_dir: join(dir, "collector"),
    log_level: "silent",
    ingest: { host: "127.0.0.1", port: 0 },
    tls: { required: false },
    metrics: { enabled: false },
    risk: { interval_s: 30, check_interval_s: 0.2, telemetry_min_interval_s: 0 },
    alerts: {
      alertmanager_urls: [amUrl],
      webhooks: [`http://127.0.0.1:${hookPort}/hook`],
      resend_interval_s: 1,
      api_base_url: "http://collector.test:9467",
    },
  });
  collector = await startCollector(config, silentLogger());
});

test.after(async () => {
  await collector?.close();
  await new Promise<void>((r) => (hook ? hook.close(() => r()) : r()));
  await am?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("an alert arrives in Alertmanager, is re-sent without duplicates, and resolves", async () => {
  const c = collector!;
  const h = new History();
  h.vm("u-web1", "web-1", { memory_mb: 2048 }).vm("u-calm", "calm-1");
  const loads = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];
  loads.forEach((m, i) => {
    h.run(
      "u-web1",
      "web-1",
      `w${i}`,
      { memory_load: m, cpu_load: 1 + (i % 3) * 0.3 },
      m >= 0.85 ? OOM : undefined,
    );
    h.run("u-calm", "calm-1", `q${i}`, { memory_load: m }, m >= 0.85 ? OOM : undefined);
  });
  h.telemetry("u-web1", (t, i) => ({ memory: 0.7 + 0.02 * t + noise(i) }));
  h.telemetry("u-calm", (_t, i) => ({ memory: 0.35 + noise(i) }));
  const t0 = Date.now();
  await h.commit(c.store); // the collector notices the committed frames and recomputes

  const fired = await waitFor("the alert in Alertmanager", async () => {
    const alerts = await amAlerts();
    return alerts.length > 0 ? alerts : undefined;
  });
  console.log(`commit -> alert in Alertmanager: ${Date.now() - t0} ms`);
  assert.equal(fired.length, 1, "only web-1 alerts");
  const a = fired[0]!;
  assert.equal(a.labels["alertname"], "ShadowvmFailureRisk");
  assert.equal(a.labels["vm"], "web-1");
  assert.equal(a.labels["vm_uuid"], "u-web1");
  assert.equal(a.labels["signature"], OOM.fingerprint);
  assert.equal(a.labels["failure_class"], "oom");
  assert.equal(a.labels["severity"], "critical");
  assert.equal(a.status.state, "active");
  assert.match(a.annotations["confidence"]!, /^0\.\d\d \((high|medium)\)$/);
  assert.match(a.annotations["mitigation"]!, /raise web-1's memory from 2048 MiB/);
  assert.match(a.annotations["summary"]!, /web-1: oom "Out of memory: Killed process" likely within 24 h/);
  assert.equal(a.annotations["link"], "http://collector.test:9467/api/v1/vms/u-web1/risk");

  // Re-sent while active (resend_interval_s 1), one stored alert, one alert in Alertmanager.
  const conn = await c.store.connectReader();
  const db = queryable(conn);
  await waitFor("three sends", async () => {
    const [stored] = await listAlerts(db, { status: "firing" });
    return stored && stored.send_count >= 3 ? stored : undefined;
  });
  const firing = await listAlerts(db, { status: "firing" });
  assert.equal(firing.length, 1);
  await c.risk.recompute("test"); // another round: still the same alert
  assert.equal((await listAlerts(db, {})).length, 1);
  assert.equal((await amAlerts()).length, 1);
  const deliveries = await alertDeliveries(db, firing[0]!.alert_id);
  assert.ok(deliveries.filter((d) => d["kind"] === "alertmanager" && d["ok"]).length >= 3);
  const hooks = deliveries.filter((d) => d["kind"] === "webhook");
  assert.equal(hooks[0]!["ok"], false);
  assert.equal(hooks[0]!["http_status"], 503);
  assert.ok(
    hooks.slice(1).every((d) => d["ok"]),
    JSON.stringify(hooks, (_k, v) => (typeof v === "bigint" ? Number(v) : v)),
  );
  assert.ok(deliveries.filter((d) => d["kind"] === "alertmanager").every((d) => d["ok"]));
  assert.ok(hookBodies.some((b) => b.status === "firing" && b.alert.vm_name === "web-1"));
  assert.ok(!hookBodies.some((b) => b.alert.vm_name === "calm-1"));

  // web-1 is restarted: its memory falls back to 0.25 for the last minutes; the risk falls.
  h.telemetry("u-web1", (_t, i) => ({ memory: 0.25 + noise(i) }), { points: 120, spanH: 0.05 });
  await h.commit(c.store);
  await waitFor("the alert resolved in DuckDB", async () => {
    const [stored] = await listAlerts(db, {});
    return stored?.status === "resolved" && stored.delivered ? stored : undefined;
  });
  const [resolved] = await listAlerts(db, {});
  assert.ok(resolved!.ends_at_ms! >= resolved!.starts_at_ms);
  assert.match(resolved!.resolved_reason!, /probability 0\.\d\d below 0\.4/);
  await waitFor("the alert gone from Alertmanager's active list", async () =>
    (await amAlerts()).length === 0 ? true : undefined,
  );
  assert.ok(hookBodies.some((b) => b.status === "resolved" && b.alert.alert_id === resolved!.alert_id));
  console.log(`alert lifecycle done in ${Date.now() - t0} ms`);
  conn.closeSync();
});

test("severity changes, hysteresis, low confidence, material changes sent at once (dispatcher on its own store)", async () => {
  const store = await IngestStore.open(join(dir, "dispatch.duckdb"));
  const conn = await store.connectReader();
  const db = queryable(conn);
  const cfg = collectorConfigSchema.parse({
    alerts: { alertmanager_urls: [amUrl], resend_interval_s: 3600 },
  }).alerts;
  const d = new AlertDispatcher({ conn, config: cfg, logger: silentLogger() });
  const base: RiskAssessment = {
    computed_at_ms: 0,
    vm_uuid: "u-sev",
    vm_name: "sev-1",
    agent_id: "a",
    fingerprint: "fp-lock",
    title: "soft lockup",
    class: "lockup",
    source: "own",
    status: "assessed",
    probability: 0.6,
    confidence: 0.7,
    confidence_level: "high",
    time_to_failure_h: 20,
    horizon_h: 24,
    dimension: "cpu_load",
    boundary: 0.9,
    boundary_uncertainty: 0.02,
    level: 0.7,
    slope_per_h: 0.01,
    forecast: 0.94,
    forecast_error: 0.01,
    samples: 50,
    runs: 10,
    failing_runs: 3,
    contradicting_runs: 0,
    run_ids: ["r1"],
    fleet_peers: [],
    explanation: "cpu_load dominates.",
    mitigations: [{ action: "pin vCPUs", because: "CPU at 70 %" }],
    detail: {},
  };
  const sev = async () =>
    (await amAlerts()).filter((x) => x.labels["vm"] === "sev-1" && x.status.state === "active");
  const t = Date.now() - 10_000; // rounds a few seconds apart, in the past
  await d.evaluate([base], t);
  assert.equal(
    (await listAlerts(db, { status: "firing" })).map((a) => a.severity),
    ["warning"],
  );
  await waitFor("warning in Alertmanager", async () => ((await sev()).length === 1 ? true : undefined));
  // The confidence level drops: sent at once (the re-send interval here is an hour), so
  // Alertmanager shows what the collector's tables show.
  const warningId = (await listAlerts(db, { status: "firing" }))[0]!.alert_id;
  await d.evaluate([{ ...base, confidence: 0.5, confidence_level: "medium" }], t + 400);
  await waitFor("the new confidence in Alertmanager", async () => {
    const s = await sev();
    return s.length === 1 && s[0]!.annotations["confidence"] === "0.50 (medium)" ? true : undefined;
  });
  // A small drift (probability 0.6 -> 0.65, same level) waits for the re-send.
  const sentBefore = (await alertDeliveries(db, warningId)).length;
  await d.evaluate([{ ...base, probability: 0.65, confidence: 0.48, confidence_level: "medium" }], t + 700);
  assert.is((await alertDeliveries(db, warningId)).length, sentBefore, "a small drift is not sent at once");
  assert.is((await listAlerts(db, { status: "firing" }))[0]!.probability, 0.65, "but it is stored");
  // Rises to critical: the warning resolves, a critical alert opens.
  await d.evaluate([{ ...base, probability: 0.9 }], t + 1000);
  const all = await listAlerts(db, {});
  assert.equal(all.map((a) => `${a.severity}:${a.status}`).sort(), ["critical:firing", "warning:resolved"]);
  assert.equal(all.find((a) => a.status === "resolved")!.resolved_reason, "severity changed to critical");
  await waitFor("only critical active", async () => {
    const s = await sev();
    return s.length === 1 && s[0]!.labels["severity"] === "critical" ? true : undefined;
  });
  // 0.45: below the warning threshold, above resolve_probability: stays firing (no flapping).
  await d.evaluate([{ ...base, probability: 0.45 }], t + 2000);
  assert.equal((await listAlerts(db, { status: "firing" })).length, 1);
  // High probability but low confidence: resolved, and not opened again while confidence is low.
  await d.evaluate([{ ...base, probability: 0.95, confidence: 0.1, confidence_level: "low" }], t + 3000);
  await d.evaluate([{ ...base, probability: 0.95, confidence: 0.1, confidence_level: "low" }], t + 4000);
  assert.equal((await listAlerts(db, { status: "firing" })).length, 0);
  assert.match((await listAlerts(db, {}))[0]!.resolved_reason!, /confidence 0\.10 below 0\.3/);
  await waitFor("none active", async () => ((await sev()).length === 0 ? true : undefined));
  await d.idle();
  conn.closeSync();
  store.close();
});

test.run();
