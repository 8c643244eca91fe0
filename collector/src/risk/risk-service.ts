// Runs the risk engine inside the collector: a full round every risk.interval_s, and a cheap check
// every risk.check_interval_s for newly committed frames (ingest_frames): new shadow runs, failures,
// signatures or inventory recompute at once, new telemetry at most every
// risk.telemetry_min_interval_s. Each round is stored, then handed to the alert dispatcher; active
// alerts are re-sent every alerts.resend_interval_s. One round at a time, on its own connection.
import type { DuckDBConnection } from "@duckdb/node-api";
import type { Logger } from "@shadowvm/shared";
import { AlertDispatcher } from "../alerts/alert-dispatcher.js";
import type { CollectorConfig } from "../config/collector-config.js";
import type { IngestStore } from "../store/ingest-store.js";
import { queryable, type RiskAssessment, RiskEngine } from "./risk-engine.js";

export interface RiskService {
  /** Computes, stores and alerts one round now (waits for a running one first). */
  recompute(trigger?: string): Promise<RiskAssessment[]>;
  readonly rounds: number;
  close(): Promise<void>;
}

export async function startRiskService(
  store: IngestStore,
  config: CollectorConfig,
  logger: Logger,
): Promise<RiskService> {
  const conn: DuckDBConnection = await store.connectReader();
  const db = queryable(conn);
  const engine = new RiskEngine(db, config.risk);
  const alertConn = await store.connectReader();
  // The change check runs beside rounds: its own connection, never inside a round's transaction.
  const checkConn = await store.connectReader();
  const checkDb = queryable(checkConn);
  const alerts = config.alerts.enabled
    ? new AlertDispatcher({ conn: alertConn, config: config.alerts, logger })
    : undefined;
  let running: Promise<RiskAssessment[]> | undefined;
  let rounds = 0;
  let closed = false;
  let lastFrameMs = Date.now();
  let lastRoundMs = 0;
  let telemetryPending = false;

  const round = async (trigger: string): Promise<RiskAssessment[]> => {
    const started = performance.now();
    let at = Date.now();
    if (at <= lastRoundMs) at = lastRoundMs + 1; // round ids are distinct
    const assessments = await engine.compute(at);
    await engine.store(conn, { at_ms: at, trigger, duration_ms: performance.now() - started }, assessments);
    lastRoundMs = at;
    rounds++;
    logger.debug(
      { trigger, assessments: assessments.length, ms: performance.now() - started },
      "risk: round stored",
    );
    if (alerts) await alerts.evaluate(assessments, at);
    return assessments;
  };
  const recompute = async (trigger = "manual"): Promise<RiskAssessment[]> => {
    while (running) await running.catch(() => {});
    running = round(trigger).finally(() => {
      running = undefined;
    });
    return running;
  };
  const safely = (trigger: string) => {
    if (closed) return;
    recompute(trigger).catch((err) => logger.error({ err, trigger }, "risk: round failed"));
  };

  let checking: Promise<void> | undefined;
  const check = async () => {
    if (closed || running) return;
    const rows = await checkDb.query(
      "SELECT kind, max(committed_at_ms) AS m FROM ingest_frames WHERE committed_at_ms > $1 GROUP BY kind",
      [lastFrameMs],
    );
    let evidence = false;
    for (const r of rows) {
      lastFrameMs = Math.max(lastFrameMs, Number(r["m"]));
      if (r["kind"] === "telemetry_batch") telemetryPending = true;
      else evidence = true;
    }
    const telemetryDue =
      telemetryPending && Date.now() - lastRoundMs >= config.risk.telemetry_min_interval_s * 1000;
    if (evidence || telemetryDue) {
      telemetryPending = false;
      safely(evidence ? "new shadow results" : "new telemetry");
    }
  };

  const timers: NodeJS.Timeout[] = [];
  if (config.risk.enabled) {
    timers.push(setInterval(() => safely("schedule"), config.risk.interval_s * 1000));
    timers.push(
      setInterval(() => {
        if (checking) return;
        checking = check()
          .catch((err) => logger.error({ err }, "risk: change check failed"))
          .finally(() => {
            checking = undefined;
          });
      }, config.risk.check_interval_s * 1000),
    );
    if (alerts)
      timers.push(
        setInterval(() => {
          if (!closed) alerts.resend().catch((err) => logger.error({ err }, "alerts: resend failed"));
        }, config.alerts.resend_interval_s * 1000),
      );
    for (const t of timers) t.unref();
    safely("start");
  }
  return {
    recompute,
    get rounds() {
      return rounds;
    },
    async close() {
      closed = true;
      for (const t of timers) clearInterval(t);
      await running?.catch(() => {});
      await alerts?.idle();
      await checking;
      conn.closeSync();
      alertConn.closeSync();
      checkConn.closeSync();
    },
  };
}
