// Starts the query API and the report schedule beside ingest, reading through the collector's own
// DuckDB instance (IngestStore.connectReader): see ./reader-pool.ts.
import type { Logger } from "@shadowvm/shared";
import { apiTokenDir, type CollectorConfig, reportsDir } from "../config/collector-config.js";
import { type HttpListener, listenHttp } from "../http-listener.js";
import { ReportService } from "../reports/report-service.js";
import type { IngestStore } from "../store/ingest-store.js";
import type { RetentionControl } from "../store/retention.js";
import { apiApp } from "./api-app.js";
import { ApiTokenStore } from "./api-token-store.js";
import { ReaderPool } from "./reader-pool.js";
import { DuckDbRiskSource, type RiskSource } from "./risk-source.js";

export interface ApiService {
  /** 0 when the API is disabled or could not listen (logged as an error). */
  port: number;
  reports: ReportService;
  risk: RiskSource;
  close(): Promise<void>;
}

export async function startApi(
  config: CollectorConfig,
  store: IngestStore,
  logger: Logger,
  retention?: RetentionControl,
): Promise<ApiService> {
  const db = await ReaderPool.create(() => store.connectReader(), 4);
  const risk = new DuckDbRiskSource(db);
  const r = config.reports;
  const reports = new ReportService({
    dir: reportsDir(config),
    db,
    risk,
    atRiskThreshold: r.at_risk_threshold,
    retentionDays: r.retention_days,
    maxReports: r.max_reports,
    logger,
  });
  let server: HttpListener | undefined;
  try {
    reports.schedule(r.schedule);
    reports.prune();
    if (config.api.enabled) {
      const a = config.api;
      const app = apiApp({
        db,
        risk,
        reports,
        ...(retention ? { retention } : {}),
        tokens: new ApiTokenStore(apiTokenDir(config)),
        rateLimitPerMinute: a.rate_limit_per_minute,
        maxBodyBytes: a.max_body_bytes,
        defaultPageSize: a.default_page_size,
        maxPageSize: a.max_page_size,
      });
      try {
        server = await listenHttp(app.fetch, a.host, a.port, "query API");
      } catch (err) {
        // Ingest is the collector's job; a query API that cannot listen (the port is taken, e.g. by
        // another collector on the host) must not stop it. Loud, and visible as apiPort 0.
        logger.error(
          { err, host: a.host, port: a.port },
          "api: cannot listen; the query API is off (set api.port, or api.enabled: false)",
        );
      }
    }
  } catch (err) {
    await reports.stop();
    db.close();
    throw err;
  }
  return {
    port: server?.port ?? 0,
    reports,
    risk,
    async close() {
      await server?.close();
      await reports.stop();
      db.close();
    },
  };
}
