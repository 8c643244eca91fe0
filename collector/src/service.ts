// `shadowvm-collector serve`: the store, the agents' ingest endpoint and the operations endpoints,
// started in that order and stopped in reverse. Also used in-process by tests and benchmarks.
import { readFileSync } from "node:fs";
import { createError, type Logger } from "@shadowvm/shared";
import { type ApiService, startApi } from "./api/api-server.js";
import { AuthStore } from "./auth/auth-store.js";
import { authDir, type CollectorConfig, checkServeConfig, databasePath } from "./config/collector-config.js";
import { type HttpListener, listenHttp } from "./http-listener.js";
import { IngestServer } from "./ingest/ingest-server.js";
import { CollectorMetrics } from "./metrics/collector-metrics.js";
import { opsRoutes } from "./metrics/ops-server.js";
import { type RiskService, startRiskService } from "./risk/risk-service.js";
import { IngestStore } from "./store/ingest-store.js";
import { RetentionService, retentionPolicy } from "./store/retention.js";

export interface CollectorService {
  readonly ingestPort: number;
  /** 0 when the operations endpoints are disabled. */
  readonly opsPort: number;
  /** 0 when the query API is disabled (api.enabled: false) or could not listen (logged). */
  readonly apiPort: number;
  /** The query API's report service and risk source (reports run even with the API disabled). */
  readonly api: ApiService;
  readonly store: IngestStore;
  readonly auth: AuthStore;
  readonly metrics: CollectorMetrics;
  /** Risk rounds and alerts (issue 8): recompute() runs one round now. */
  readonly risk: RiskService;
  /** Deletes data past its retention, at start and on retention.schedule. */
  readonly retention: RetentionService;
  /** Empty when ready; otherwise the reasons (the body of a 503 /readyz). */
  readinessProblems(): string[];
  close(): Promise<void>;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw createError("config", "invalid", `cannot read ${what} ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

export async function startCollector(config: CollectorConfig, logger: Logger): Promise<CollectorService> {
  checkServeConfig(config);
  const metrics = new CollectorMetrics();
  const tls =
    config.tls.cert_file && config.tls.key_file
      ? {
          cert: readPem(config.tls.cert_file, "tls.cert_file"),
          key: readPem(config.tls.key_file, "tls.key_file"),
        }
      : undefined;
  if (!tls)
    logger.warn("ingest: TLS is off (tls.required: false); agents' secrets cross the network in clear text");
  const auth = new AuthStore(authDir(config));
  const store = await IngestStore.open(databasePath(config), { logger });
  metrics.databasePath = store.path;
  let ingest: IngestServer | undefined;
  let ops: HttpListener | undefined;
  let risk: RiskService | undefined;
  let api: ApiService | undefined;
  let retention: RetentionService | undefined;
  let closing = false;
  const readinessProblems = () => {
    const problems: string[] = [];
    if (closing) problems.push("shutting down");
    if (!ingest) problems.push("ingest endpoint not listening");
    else if (ingest.lastCommitFailed) problems.push("the last store commit failed");
    return problems;
  };
  try {
    const i = config.ingest;
    ingest = await IngestServer.start({
      host: i.host,
      port: i.port,
      tls,
      store,
      auth,
      metrics,
      logger,
      maxFrameBytes: i.max_frame_bytes,
      batchMaxRows: i.batch_max_rows,
      batchMaxDelayMs: i.batch_max_delay_ms,
      maxPendingFramesPerConnection: i.max_pending_frames_per_connection,
      maxPendingBytes: i.max_pending_bytes,
      heartbeatIntervalMs: i.heartbeat_interval_ms,
      handshakeTimeoutMs: i.handshake_timeout_ms,
      decodeWorkers: i.decode_workers,
      samplesRetentionDays: config.retention.samples_days,
    });
    if (config.metrics.enabled) {
      ops = await listenHttp(
        opsRoutes(metrics.registry, { problems: readinessProblems }).fetch,
        config.metrics.host,
        config.metrics.port,
        "metrics and health endpoints",
      );
    }
    risk = await startRiskService(store, config, logger);
    retention = new RetentionService({
      conn: await store.connectReader(),
      policy: retentionPolicy(config),
      schedule: config.retention.schedule,
      logger,
      onPruned: (result) => {
        for (const t of result.tables) metrics.retentionRowsDeleted.inc({ table: t.table }, t.rows);
        metrics.retentionLastPrune.set(result.at_ms / 1000);
      },
      onError: () => metrics.error("prune_failed", "retention"),
    });
    api = await startApi(config, store, logger, retention);
    retention.start();
  } catch (err) {
    await retention?.close();
    await risk?.close();
    await ingest?.close();
    await ops?.close();
    store.close();
    throw err;
  }
  logger.info(
    {
      ingest: `${tls ? "wss" : "ws"}://${config.ingest.host}:${ingest.port}`,
      ops: ops ? `http://${config.metrics.host}:${ops.port}` : "disabled",
      api: api.port ? `http://${config.api.host}:${api.port}/api/v1` : "disabled",
      database: store.path,
      schema_version: store.schemaVersion,
    },
    "collector: ready",
  );
  const started = ingest;
  const startedApi = api;
  const startedRisk = risk;
  const startedRetention = retention;
  return {
    ingestPort: started.port,
    opsPort: ops?.port ?? 0,
    apiPort: startedApi.port,
    api: startedApi,
    store,
    auth,
    metrics,
    risk: startedRisk,
    retention: startedRetention,
    readinessProblems,
    async close() {
      if (closing) return;
      closing = true;
      await startedApi.close();
      await started.close();
      await startedRisk.close();
      await startedRetention.close();
      await ops?.close();
      store.close();
      logger.info("collector: stopped");
    },
  };
}
