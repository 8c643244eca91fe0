// Alerts from risk: one alert per (VM, signature, severity) episode, opened when an assessment
// crosses a configured threshold, re-sent while active (Alertmanager expires alerts that are not),
// resolved (endsAt) when the risk falls below resolve_probability or stops being assessed. Sent to
// Alertmanager's v2 API (POST <url>/api/v2/alerts) and to generic webhooks; every alert and every
// delivery attempt is stored (tables alerts, alert_deliveries; docs/risk-model.md).
import { createHash } from "node:crypto";
import type { DuckDBConnection } from "@duckdb/node-api";
import { aboutHours, type Logger } from "@shadowvm/shared";
import type { CollectorConfig } from "../config/collector-config.js";
import type { ProductionSighting, Queryable, RiskAssessment } from "../risk/risk-engine.js";

export type AlertsConfig = CollectorConfig["alerts"];
export type Severity = "warning" | "critical";

export const ALERT_NAME = "ShadowvmFailureRisk";

export interface AlertRecord {
  alert_id: string;
  vm_uuid: string;
  vm_name: string;
  fingerprint: string;
  title: string;
  class: string;
  severity: Severity;
  status: "firing" | "resolved";
  starts_at_ms: number;
  ends_at_ms: number | null;
  updated_at_ms: number;
  last_sent_at_ms: number | null;
  send_count: number;
  /** The current state reached every target (an undelivered one is retried at the next tick). */
  delivered: boolean;
  probability: number | null;
  confidence: number;
  confidence_level: string;
  time_to_failure_h: number | null;
  summary: string;
  mitigation: string;
  link: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  resolved_reason: string | null;
  last_error: string | null;
}

/** The severity an assessment deserves, or undefined (no alert). */
export function severityOf(a: RiskAssessment, cfg: AlertsConfig): Severity | undefined {
  if (a.status !== "assessed" || a.probability === null || a.confidence < cfg.min_confidence)
    return undefined;
  if (a.probability >= cfg.critical_probability) return "critical";
  if (a.probability >= cfg.warning_probability) return "warning";
  return undefined;
}

/** A probability moving this much between two rounds is sent at once, not at the next re-send. */
const MATERIAL_PROBABILITY_CHANGE = 0.1;
/** Annotations that are there or not: one appearing or going away is sent at once. */
const FLAG_ANNOTATIONS = ["precursor", "observed_in_production", "fails_unstressed"];

/**
 * Whether a refreshed alert differs from the previous round's in what an operator acts on: the
 * confidence level (an alert opened at "0.30 (medium)" must not still say so in Alertmanager a
 * minute after the collector's tables say "0.69 (high)"), the probability by
 * MATERIAL_PROBABILITY_CHANGE or more, or a flag annotation. Sending every round instead would
 * post every webhook receiver each round (time to failure moves every round).
 */
/**
 * The precursor annotation: the line, when it was seen, and (from agents that count it) how often
 * it came before the failure in the shadows that printed it, for the operator to weigh it.
 */
export function precursorAnnotation(p: ProductionSighting): string {
  const shadows =
    p.runs_with && p.runs_with > 0
      ? `; preceded the failure in ${p.runs_with} of the ${p.runs_with + (p.runs_without ?? 0)} shadow runs that printed it`
      : "";
  return `${p.line} (seen ${new Date(p.seen_at_ms).toISOString()}${shadows})`;
}

export function materialChange(before: AlertRecord, after: AlertRecord): boolean {
  if (before.confidence_level !== after.confidence_level) return true;
  // The epsilon keeps a move of exactly 0.1 (0.85 -> 0.75 is 0.0999... in binary) material.
  const moved = Math.abs((after.probability ?? 0) - (before.probability ?? 0));
  if (moved >= MATERIAL_PROBABILITY_CHANGE - 1e-9) return true;
  return FLAG_ANNOTATIONS.some((k) => k in before.annotations !== k in after.annotations);
}

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

function fromRow(r: Record<string, unknown>): AlertRecord {
  const j = (v: unknown) => (typeof v === "string" ? JSON.parse(v) : (v ?? {}));
  return {
    alert_id: String(r["alert_id"]),
    vm_uuid: String(r["vm_uuid"]),
    vm_name: String(r["vm_name"]),
    fingerprint: String(r["fingerprint"]),
    title: String(r["title"]),
    class: String(r["class"]),
    severity: r["severity"] as Severity,
    status: r["status"] as AlertRecord["status"],
    starts_at_ms: Number(r["starts_at_ms"]),
    ends_at_ms: num(r["ends_at_ms"]),
    updated_at_ms: Number(r["updated_at_ms"]),
    last_sent_at_ms: num(r["last_sent_at_ms"]),
    send_count: Number(r["send_count"]),
    delivered: Boolean(r["delivered"]),
    probability: num(r["probability"]),
    confidence: Number(r["confidence"]),
    confidence_level: String(r["confidence_level"]),
    time_to_failure_h: num(r["time_to_failure_h"]),
    summary: String(r["summary"]),
    mitigation: String(r["mitigation"]),
    link: String(r["link"]),
    labels: j(r["labels"]),
    annotations: j(r["annotations"]),
    resolved_reason: (r["resolved_reason"] as string | null) ?? null,
    last_error: (r["last_error"] as string | null) ?? null,
  };
}

/** Stored alerts, newest first (the read interface for the API). */
export async function listAlerts(
  db: Queryable,
  options: { status?: "firing" | "resolved"; vmUuid?: string; limit?: number } = {},
): Promise<AlertRecord[]> {
  const rows = await db.query(
    `SELECT * FROM alerts WHERE ($1 = '' OR status = $1) AND ($2 = '' OR vm_uuid = $2)
     ORDER BY starts_at_ms DESC, alert_id LIMIT $3`,
    [options.status ?? "", options.vmUuid ?? "", options.limit ?? 1000],
  );
  return rows.map(fromRow);
}

/** Delivery attempts of one alert, oldest first. */
export async function alertDeliveries(db: Queryable, alertId: string): Promise<Record<string, unknown>[]> {
  return db.query("SELECT * FROM alert_deliveries WHERE alert_id = $1 ORDER BY at_ms, target", [alertId]);
}

export interface AlertDispatcherOptions {
  conn: DuckDBConnection;
  config: AlertsConfig;
  logger: Logger;
  fetch?: typeof fetch;
}

export class AlertDispatcher {
  private readonly db: Queryable;
  private readonly fetchImpl: typeof fetch;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: AlertDispatcherOptions) {
    const { conn } = options;
    this.db = {
      async query(sql, values) {
        return (await conn.runAndReadAll(sql, values)).getRowObjectsJS() as Record<string, unknown>[];
      },
    };
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** Runs one operation at a time (evaluate and resend never interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /** Resolves when no evaluation or resend is running. */
  async idle(): Promise<void> {
    await this.chain;
  }

  /** Opens, updates and resolves alerts from a round of assessments; sends what is due. */
  evaluate(assessments: readonly RiskAssessment[], now = Date.now()): Promise<void> {
    return this.serial(() => this.doEvaluate(assessments, now));
  }

  /** Re-sends active alerts and retries undelivered states whose time has come. */
  resend(now = Date.now()): Promise<void> {
    return this.serial(async () => {
      for (const alert of await this.pending()) await this.sendIfDue(alert, now);
    });
  }

  private async doEvaluate(assessments: readonly RiskAssessment[], now: number): Promise<void> {
    const cfg = this.options.config;
    const byKey = new Map(assessments.map((a) => [`${a.vm_uuid}\u0000${a.fingerprint}`, a]));
    const firing = await listAlerts(this.db, { status: "firing" });
    const active = new Map(firing.map((f) => [`${f.vm_uuid}\u0000${f.fingerprint}`, f]));
    for (const [key, alert] of active) {
      const a = byKey.get(key);
      const severity = a ? severityOf(a, cfg) : undefined;
      if (a && severity === alert.severity) {
        await this.keep(alert, a, now);
        continue;
      }
      if (a && severity === undefined && a.status === "assessed" && a.probability !== null) {
        // Hysteresis: stays firing until the probability is below resolve_probability.
        if (a.probability >= cfg.resolve_probability && a.confidence >= cfg.min_confidence) {
          await this.keep(alert, a, now);
          continue;
        }
      }
      const reason = !a
        ? "no longer assessed"
        : severity
          ? `severity changed to ${severity}`
          : a.status !== "assessed" || a.probability === null
            ? `not assessed (${a.status})`
            : a.confidence < cfg.min_confidence
              ? `confidence ${a.confidence.toFixed(2)} below ${cfg.min_confidence}`
              : `probability ${a.probability.toFixed(2)} below ${cfg.resolve_probability}`;
      const resolved: AlertRecord = {
        ...(a ? this.refresh(alert, a, now) : alert),
        status: "resolved",
        ends_at_ms: now,
        updated_at_ms: now,
        resolved_reason: reason,
        delivered: false,
      };
      await this.save(resolved);
      await this.send(resolved, now);
      active.delete(key);
    }
    for (const [key, a] of byKey) {
      const severity = severityOf(a, cfg);
      if (!severity || active.has(key)) continue;
      const alert = this.open(a, severity, now);
      await this.save(alert);
      await this.send(alert, now);
    }
    for (const alert of await this.pending()) await this.sendIfDue(alert, now);
  }

  /**
   * A firing alert that stays: its figures are refreshed, and sent at once when what an operator
   * reads in it changed (materialChange); smaller drifts go out with the periodic re-send.
   */
  private async keep(alert: AlertRecord, a: RiskAssessment, now: number): Promise<void> {
    const next = this.refresh(alert, a, now);
    await this.save(next);
    if (materialChange(alert, next)) await this.send(next, now);
  }

  /** Firing alerts and resolutions not yet delivered. */
  private async pending(): Promise<AlertRecord[]> {
    const rows = await this.db.query(
      "SELECT * FROM alerts WHERE status = 'firing' OR NOT delivered ORDER BY starts_at_ms",
    );
    return rows.map(fromRow);
  }

  private open(a: RiskAssessment, severity: Severity, now: number): AlertRecord {
    const alert_id = createHash("sha256")
      .update(`${a.vm_uuid}\u0000${a.fingerprint}\u0000${severity}\u0000${now}`)
      .digest("hex")
      .slice(0, 20);
    const base: AlertRecord = {
      alert_id,
      vm_uuid: a.vm_uuid,
      vm_name: a.vm_name,
      fingerprint: a.fingerprint,
      title: a.title,
      class: a.class,
      severity,
      status: "firing",
      starts_at_ms: now,
      ends_at_ms: null,
      updated_at_ms: now,
      last_sent_at_ms: null,
      send_count: 0,
      delivered: false,
      probability: null,
      confidence: 0,
      confidence_level: "low",
      time_to_failure_h: null,
      summary: "",
      mitigation: "",
      link: "",
      labels: {},
      annotations: {},
      resolved_reason: null,
      last_error: null,
    };
    return this.refresh(base, a, now);
  }

  /** The alert with the assessment's current figures (labels stay those it was opened with). */
  private refresh(alert: AlertRecord, a: RiskAssessment, now: number): AlertRecord {
    const link = `${this.options.config.api_base_url.replace(/\/$/, "")}/api/v1/vms/${encodeURIComponent(a.vm_uuid)}/risk`;
    const ttf =
      a.time_to_failure_h === null
        ? "not on the current trend"
        : a.time_to_failure_h === 0
          ? "now"
          : aboutHours(a.time_to_failure_h);
    const summary = `${a.vm_name}: ${a.class} "${a.title}" likely within ${a.horizon_h} h (p=${(a.probability ?? 0).toFixed(2)}, ${a.confidence_level} confidence, time to failure ${ttf})`;
    const mitigation = a.mitigations.map((m, i) => `${i + 1}. ${m.action} (${m.because})`).join("\n");
    return {
      ...alert,
      vm_name: a.vm_name,
      title: a.title,
      class: a.class,
      updated_at_ms: now,
      probability: a.probability,
      confidence: a.confidence,
      confidence_level: a.confidence_level,
      time_to_failure_h: a.time_to_failure_h,
      summary,
      mitigation,
      link,
      labels: {
        alertname: ALERT_NAME,
        vm: a.vm_name,
        vm_uuid: a.vm_uuid,
        signature: a.fingerprint,
        failure_class: a.class,
        dimension: a.dimension,
        severity: alert.severity,
      },
      annotations: {
        summary,
        description: a.explanation,
        probability: (a.probability ?? 0).toFixed(3),
        confidence: `${a.confidence.toFixed(2)} (${a.confidence_level})`,
        time_to_failure: ttf,
        mitigation,
        evidence_source: a.source,
        link,
        // Early warning seen on the production VM's own console, and a failure already seen there.
        ...(a.precursor ? { precursor: precursorAnnotation(a.precursor) } : {}),
        ...(a.observed_in_production ? { observed_in_production: "true" } : {}),
        ...(a.fails_unstressed ? { fails_unstressed: "true" } : {}),
      },
    };
  }

  private async sendIfDue(alert: AlertRecord, now: number): Promise<void> {
    const resendMs = this.options.config.resend_interval_s * 1000;
    const due = alert.last_sent_at_ms === null || now - alert.last_sent_at_ms >= resendMs;
    if (alert.status === "firing" && (due || !alert.delivered)) await this.send(alert, now);
    else if (alert.status === "resolved" && !alert.delivered && due) await this.send(alert, now);
  }

  /** Sends the alert's current state to every target; records each attempt. */
  private async send(alert: AlertRecord, now: number): Promise<void> {
    const cfg = this.options.config;
    // A resolution must carry an endsAt that is not in the future: Alertmanager keeps the later
    // endsAt of an alert it holds unless the new one already lies in the past.
    const endsAt =
      alert.status === "resolved"
        ? Math.min(alert.ends_at_ms ?? now, Date.now())
        : now + 4 * cfg.resend_interval_s * 1000;
    const amBody = JSON.stringify([
      {
        labels: alert.labels,
        annotations: alert.annotations,
        startsAt: new Date(alert.starts_at_ms).toISOString(),
        endsAt: new Date(endsAt).toISOString(),
        generatorURL: alert.link,
      },
    ]);
    const hookBody = JSON.stringify({
      version: "1",
      source: "shadowvm-collector",
      status: alert.status,
      alert,
    });
    const targets = [
      ...cfg.alertmanager_urls.map((u) => ({
        kind: "alertmanager",
        url: `${u.replace(/\/$/, "")}/api/v2/alerts`,
        body: amBody,
      })),
      ...cfg.webhooks.map((u) => ({ kind: "webhook", url: u, body: hookBody })),
    ];
    const errors: string[] = [];
    for (const t of targets) {
      let status: number | null = null;
      let error: string | null = null;
      try {
        const res = await this.fetchImpl(t.url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: t.body,
          signal: AbortSignal.timeout(cfg.timeout_ms),
        });
        status = res.status;
        const text = await res.text().catch(() => "");
        if (!res.ok) error = `HTTP ${res.status}: ${text.slice(0, 200)}`;
      } catch (err) {
        error = (err as Error).message;
      }
      if (error) errors.push(`${t.url}: ${error}`);
      await this.db.query("INSERT INTO alert_deliveries VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", [
        alert.alert_id,
        now,
        t.url,
        t.kind,
        alert.status,
        error === null,
        status,
        error,
      ]);
    }
    if (errors.length)
      this.options.logger.warn(
        { alert: alert.alert_id, errors },
        "alerts: delivery failed; retried at the next resend",
      );
    await this.save({
      ...alert,
      last_sent_at_ms: now,
      send_count: alert.send_count + 1,
      delivered: errors.length === 0,
      last_error: errors.length ? errors.join("; ") : null,
    });
  }

  private async save(a: AlertRecord): Promise<void> {
    await this.db.query(
      `INSERT OR REPLACE INTO alerts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
        $17, $18, $19, $20, $21, $22, $23, $24, $25)`,
      [
        a.alert_id,
        a.vm_uuid,
        a.vm_name,
        a.fingerprint,
        a.title,
        a.class,
        a.severity,
        a.status,
        a.starts_at_ms,
        a.ends_at_ms,
        a.updated_at_ms,
        a.last_sent_at_ms,
        a.send_count,
        a.delivered,
        a.probability,
        a.confidence,
        a.confidence_level,
        a.time_to_failure_h,
        a.summary,
        a.mitigation,
        a.link,
        JSON.stringify(a.labels),
        JSON.stringify(a.annotations),
        a.resolved_reason,
        a.last_error,
      ],
    );
  }
}
