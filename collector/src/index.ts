// @shadowvm/collector: the public entry points (the CLI is collector/bin/shadowvm-collector.js).
export { AuthStore } from "./auth/auth-store.js";
export {
  COLLECTOR_ENV_PREFIX,
  type CollectorConfig,
  checkServeConfig,
  collectorConfigSchema,
  databasePath,
  loadCollectorConfig,
} from "./config/collector-config.js";
export { CollectorMetrics } from "./metrics/collector-metrics.js";
export { opsRoutes } from "./metrics/ops-server.js";
export { type CollectorService, startCollector } from "./service.js";
export { IngestStore, openReadOnly, type StreamPoint } from "./store/ingest-store.js";
export { MIGRATIONS } from "./store/migrations.js";
