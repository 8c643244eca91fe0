// `shadowvm-collector serve`: the store, the agents' ingest endpoint and the operations endpoints,
// started in that order and stopped in reverse. Also used in-process by tests and benchmarks.
import { readFileSync } from "node:fs";
import { createError, type Logger } from "@shadowvm/shared";
import { AuthStore } from "./auth/auth-store.js";
import { authDir, type CollectorConfig, checkServeConfig, databasePath } from "./config/collector-config.js";
import { IngestServer } from "./ingest/ingest-server.js";
import { CollectorMetrics } from "./metrics/collector-metrics.js";
import { type OpsServer, opsRoutes, startOpsServer } from "./metrics/ops-server.js";
import { IngestStore } from "./store/ingest-store.js";

export interface CollectorService {
  readonly ingestPort: number;
  /** 0 when the operations endpoints are disabled. */
  readonly opsPort: number;
  readonly store: IngestStore;
  readonly auth: AuthStore;
  readonly metrics: CollectorMetrics;
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
  let ingest: IngestServer | undefined;
  let ops: OpsServer | undefined;
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
    });
    if (config.metrics.enabled) {
      ops = await startOpsServer(
        opsRoutes(metrics.registry, { problems: readinessProblems }),
        config.metrics.host,
        config.metrics.port,
      );
    }
  } catch (err) {
    await ingest?.close();
    store.close();
    throw err;
  }
  logger.info(
    {
      ingest: `${tls ? "wss" : "ws"}://${config.ingest.host}:${ingest.port}`,
      ops: ops ? `http://${config.metrics.host}:${ops.port}` : "disabled",
      database: store.path,
      schema_version: store.schemaVersion,
    },
    "collector: ready",
  );
  const started = ingest;
  return {
    ingestPort: started.port,
    opsPort: ops?.port ?? 0,
    store,
    auth,
    metrics,
    readinessProblems,
    async close() {
      if (closing) return;
      closing = true;
      await started.close();
      await ops?.close();
      store.close();
      logger.info("collector: stopped");
    },
  };
}
