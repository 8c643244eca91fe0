// The collector's configuration: /etc/shadowvm/collector.yaml (see
// deploy/config/collector.example.yaml), overridden by SHADOWVM_COLLECTOR__<SECTION>__<KEY>
// environment variables, then by CLI flags. Validation happens once, at start-up, and names the key.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, DEFAULT_MAX_FRAME_BYTES, loadConfig } from "@shadowvm/shared";
import { z } from "zod";

export const COLLECTOR_ENV_PREFIX = "SHADOWVM_COLLECTOR__";
export const DEFAULT_COLLECTOR_CONFIG_FILE = "/etc/shadowvm/collector.yaml";

const port = z.number().int().min(0).max(65_535);

const ingestSchema = z
  .object({
    /** Address and port the agents' WebSocket endpoint listens on (port 0 = any free port). */
    host: z.string().min(1).default("0.0.0.0"),
    port: port.default(7443),
    /** Frames longer than this close the connection (FRAME_TOO_LARGE). */
    max_frame_bytes: z.number().int().positive().default(DEFAULT_MAX_FRAME_BYTES),
    /** A commit happens when this many rows are waiting ... */
    batch_max_rows: z.number().int().positive().default(50_000),
    /** ... or this long after the first frame of the batch arrived. */
    batch_max_delay_ms: z.number().int().min(0).default(50),
    /** Uncommitted frames one connection may have before the collector stops reading it. */
    max_pending_frames_per_connection: z.number().int().positive().default(256),
    /** Uncommitted bytes over all connections before the collector stops reading every socket. */
    max_pending_bytes: z
      .number()
      .int()
      .positive()
      .default(256 * 1024 * 1024),
    /** Sent to agents in AuthResult; a connection silent for 3 intervals is dropped. */
    heartbeat_interval_ms: z.number().int().positive().default(5000),
    /** Hello to AuthResult must finish within this. */
    handshake_timeout_ms: z.number().int().positive().default(10_000),
    /**
     * Threads decoding authenticated agents' frames beside the main thread: 1 (default) or 0
     * (decode on the main thread).
     */
    decode_workers: z.number().int().min(0).max(1).default(1),
    /** Enrollment tokens created by `token create` without --ttl live this long. */
    token_ttl_hours: z.number().positive().default(24),
  })
  .strict();

const tlsSchema = z
  .object({
    /** PEM certificate chain and key of the ingest endpoint. */
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    /**
     * Refuse to start without a certificate. Turning this off serves plain ws://, which sends the
     * enrollment token and the agent secret in clear text: for local tests only.
     */
    required: z.boolean().default(true),
  })
  .strict();

const metricsSchema = z
  .object({
    /** Prometheus /metrics, /healthz and /readyz (plain HTTP, loopback by default). */
    host: z.string().min(1).default("127.0.0.1"),
    port: port.default(9466),
    enabled: z.boolean().default(true),
  })
  .strict();

export const collectorConfigSchema = z
  .object({
    /** State: the DuckDB database and the auth directory (tokens, agent secrets). */
    data_dir: z.string().min(1).default("/var/lib/shadowvm-collector"),
    /** DuckDB file; default <data_dir>/shadowvm.duckdb. */
    database: z.string().min(1).optional(),
    log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    ingest: ingestSchema.prefault({}),
    tls: tlsSchema.prefault({}),
    metrics: metricsSchema.prefault({}),
  })
  .strict();

export type CollectorConfig = z.output<typeof collectorConfigSchema>;

export interface CollectorConfigOverrides {
  file?: string | undefined;
  dataDir?: string | undefined;
}

/** The DuckDB file the config points at. */
export function databasePath(config: CollectorConfig): string {
  return config.database ?? join(config.data_dir, "shadowvm.duckdb");
}

/** The directory holding enrollment tokens and agent secrets. */
export function authDir(config: CollectorConfig): string {
  return join(config.data_dir, "auth");
}

/**
 * Loads the config file (the default path only if it exists), environment overrides, then the CLI's
 * overrides. Throws ConfigError naming the bad key.
 */
export function loadCollectorConfig(
  overrides: CollectorConfigOverrides = {},
  env: Record<string, string | undefined> = process.env,
): CollectorConfig {
  const file =
    overrides.file ?? (existsSync(DEFAULT_COLLECTOR_CONFIG_FILE) ? DEFAULT_COLLECTOR_CONFIG_FILE : undefined);
  const config = loadConfig(collectorConfigSchema, { file, env, envPrefix: COLLECTOR_ENV_PREFIX });
  if (overrides.dataDir) config.data_dir = overrides.dataDir;
  return config;
}

/** Rules across keys, checked where the service starts (the CLI's token commands do not need TLS). */
export function checkServeConfig(config: CollectorConfig, where = "collector config"): void {
  const problems: string[] = [];
  const { cert_file, key_file, required } = config.tls;
  if ((cert_file === undefined) !== (key_file === undefined)) {
    problems.push(
      `tls.cert_file and tls.key_file go together (actual: ${cert_file ? "cert_file only" : "key_file only"})`,
    );
  }
  if (required && (cert_file === undefined || key_file === undefined)) {
    problems.push(
      "tls.cert_file is invalid: expected a PEM certificate because tls.required is true (actual: missing); set tls.required: false only for local tests",
    );
  }
  if (config.metrics.enabled && config.metrics.port !== 0 && config.metrics.port === config.ingest.port) {
    problems.push(
      `metrics.port is invalid: expected a port other than ingest.port (actual: ${config.metrics.port})`,
    );
  }
  if (problems.length) throw new ConfigError(where, problems);
}
