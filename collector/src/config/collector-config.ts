// The collector's configuration: /etc/shadowvm/collector.yaml (see
// deploy/config/collector.example.yaml), overridden by SHADOWVM_COLLECTOR__<SECTION>__<KEY>
// environment variables, then by CLI flags. Validation happens once, at start-up, and names the key.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, DEFAULT_MAX_FRAME_BYTES, loadConfig } from "@shadowvm/shared";
import cron from "node-cron";
import { z } from "zod";
import { retentionProblems } from "../store/retention.js";

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

const apiSchema = z
  .object({
    /** The HTTP query API (/api/v1, bearer API tokens; see docs/api.md). */
    enabled: z.boolean().default(true),
    host: z.string().min(1).default("127.0.0.1"),
    port: port.default(9467),
    /** Requests per token (or client address when unauthenticated) per window. */
    rate_limit_per_minute: z.number().int().positive().default(600),
    /** Larger request bodies are refused with 413. */
    max_body_bytes: z
      .number()
      .int()
      .positive()
      .default(64 * 1024),
    /** Page size when a list request gives no limit, and the largest allowed. */
    default_page_size: z.number().int().positive().default(50),
    max_page_size: z.number().int().positive().default(1000),
  })
  .strict();

const reportsSchema = z
  .object({
    /** node-cron expression of scheduled reports ("" = only on demand). */
    schedule: z
      .string()
      .default("0 6 * * *")
      .refine((v) => v === "" || cron.validate(v), {
        message: 'expected a cron expression such as "0 6 * * *" (or "" for no schedule)',
      }),
    /** Reports are kept this many days, and at most max_reports of them. */
    retention_days: z.number().positive().default(30),
    max_reports: z.number().int().positive().default(100),
    /** A VM is "at risk" in a report from this risk score (0..1). */
    at_risk_threshold: z.number().min(0).max(1).default(0.5),
    /** Report directory; default <data_dir>/reports. */
    dir: z.string().min(1).optional(),
  })
  .strict();

const riskSchema = z
  .object({
    /** Risk computation (collector/src/risk, docs/risk-model.md). */
    enabled: z.boolean().default(true),
    /** How far ahead production is forecast. */
    horizon_h: z.number().positive().default(24),
    /** Telemetry the trend is fitted on. */
    telemetry_window_h: z.number().positive().default(6),
    /**
     * A time to failure past the horizon is claimed only up to this many times the hours of
     * telemetry the trend rests on (never past 10 horizons): a line through four minutes of a VM
     * settling after boot says nothing about the next nine hours.
     */
    max_extrapolation: z.number().positive().default(4),
    /** Fewer operating-point samples than this in the window: no risk claimed. */
    min_samples: z.number().int().min(2).default(3),
    /** Full recomputation on this schedule ... */
    interval_s: z.number().positive().default(300),
    /** ... and this often a cheap check for newly committed frames: new shadow runs or failures
     * recompute at once, new telemetry at most every telemetry_min_interval_s. */
    check_interval_s: z.number().positive().default(5),
    telemetry_min_interval_s: z.number().min(0).default(60),
    /** VM labels whose equal values make VMs share failure evidence (fleet correlation). */
    fleet_label_keys: z.array(z.string().min(1)).default(["image", "kernel", "app_stack"]),
    /** Confidence of fleet evidence relative to a VM's own shadows. */
    fleet_confidence_factor: z.number().min(0).max(1).default(0.5),
    /** Assessment history older than this is deleted (0 = keep forever). */
    history_days: z.number().min(0).default(30),
    /**
     * Precursor matching (docs/risk-model.md, "Precursors"): a precursor of a signature seen on the
     * VM's production console within this window raises that assessment's probability,
     * P' = 1 - (1 - P)(1 - precursor_weight), and its confidence,
     * C' = 1 - (1 - C)(1 - precursor_confidence_weight).
     */
    precursor_window_h: z.number().positive().default(24),
    precursor_weight: z.number().min(0).max(1).default(0.3),
    precursor_confidence_weight: z.number().min(0).max(1).default(0.2),
    /**
     * Both weights are scaled by the precursor's precision in the shadows: of the runs that showed
     * the line, the share that went on to the failure (the agent counts runs that showed it and
     * went their full time without). Below this precision the precursor is not counted.
     */
    precursor_min_precision: z.number().min(0).max(1).default(0.25),
    /** A failure of the signature on the production console within this window: "observed in production". */
    production_failure_window_h: z.number().positive().default(168),
    /**
     * Failing unstressed (docs/risk-model.md): a VM whose unstressed control shadows failed with
     * the same signature on at least unstressed_min_captures live captures within this window is
     * assessed as failing now, whatever the boundary says.
     */
    unstressed_window_h: z.number().positive().default(24),
    unstressed_min_captures: z.number().int().min(2).default(2),
  })
  .strict();

const alertsSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Alertmanager base URLs (e.g. http://127.0.0.1:9093); alerts go to <url>/api/v2/alerts. */
    alertmanager_urls: z.array(z.string().url()).default([]),
    /** Generic webhooks: each receives a JSON POST per alert state change and resend. */
    webhooks: z.array(z.string().url()).default([]),
    /** Severity thresholds on the probability of failure within the horizon. */
    warning_probability: z.number().min(0).max(1).default(0.5),
    critical_probability: z.number().min(0).max(1).default(0.8),
    /** Assessments less confident than this never alert. */
    min_confidence: z.number().min(0).max(1).default(0.3),
    /** A firing alert resolves when the probability falls below this (hysteresis). */
    resolve_probability: z.number().min(0).max(1).default(0.4),
    /** Active alerts are re-sent this often (Alertmanager expires alerts not re-sent). */
    resend_interval_s: z.number().positive().default(60),
    /** Base URL of the collector's HTTP API, for the link in each alert. */
    api_base_url: z.string().url().default("http://127.0.0.1:9467"),
    timeout_ms: z.number().int().positive().default(5000),
  })
  .strict();

const retentionSchema = z
  .object({
    /**
     * Rows older than this many days are deleted (0 = keep forever), at start and on the schedule
     * (collector/src/store/retention.ts). Telemetry samples:
     */
    samples_days: z.number().min(0).default(30),
    /** One bookkeeping row per committed frame (the dedupe marks are kept apart, in ingest_streams). */
    ingest_frames_days: z.number().min(0).default(7),
    /** Precursors and failures seen on production consoles. */
    production_events_days: z.number().min(0).default(30),
    /** Resolved (and delivered) alerts, and every alert's delivery attempts. */
    alerts_days: z.number().min(0).default(90),
    /** Shadow runs with their failures, and capture records: the risk engine's evidence. */
    shadow_results_days: z.number().min(0).default(0),
    /** node-cron expression of the prune ("" = only at start and on `shadowvm-collector prune`). */
    schedule: z
      .string()
      .default("17 * * * *")
      .refine((v) => v === "" || cron.validate(v), {
        message: 'expected a cron expression such as "17 * * * *" (or "" for no schedule)',
      }),
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
    risk: riskSchema.prefault({}),
    alerts: alertsSchema.prefault({}),
    api: apiSchema.prefault({}),
    reports: reportsSchema.prefault({}),
    retention: retentionSchema.prefault({}),
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

/** API tokens (hashed), beside the enrollment tokens. */
export function apiTokenDir(config: CollectorConfig): string {
  return join(config.data_dir, "auth", "api-tokens");
}

/** Where reports are written. */
export function reportsDir(config: CollectorConfig): string {
  return config.reports.dir ?? join(config.data_dir, "reports");
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
  problems.push(...retentionProblems(config));
  if (problems.length) throw new ConfigError(where, problems);
}
