// The agent's configuration: /etc/shadowvm/agent.yaml (see deploy/config/agent.example.yaml),
// overridden by SHADOWVM_AGENT__<SECTION>__<KEY> environment variables, then by CLI flags.
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { DEFAULT_MAX_FRAME_BYTES, loadConfig } from "@shadowvm/shared";
import { z } from "zod";

export const AGENT_ENV_PREFIX = "SHADOWVM_AGENT__";
export const DEFAULT_AGENT_CONFIG_FILE = "/etc/shadowvm/agent.yaml";

const hypervisorSchema = z
  .object({
    driver: z.enum(["qemu"]).default("qemu"),
    /** QMP sockets to discover VMs by (globs with * and ?). */
    qmp_sockets: z
      .array(z.string().min(1))
      .default(["/var/run/qemu-server/*.qmp", "/run/shadowvm/vms/*/qmp.sock"]),
    connect_timeout_ms: z.number().int().positive().default(5000),
    command_timeout_ms: z.number().int().positive().default(10_000),
  })
  .strict();

/** Live captures and the capture store (agent/src/capture). */
const captureSchema = z
  .object({
    /** Store directory (default <data_dir>/captures). */
    store_dir: z.string().min(1).optional(),
    /** Store key, outside the store; created 0600 when missing (default <data_dir>/keys/capture-store.key). */
    key_file: z.string().min(1).optional(),
    /** Cap on reading frozen disks and memory into the store, so a capture never starves production's disk. */
    bandwidth_mb_s: z.number().positive().default(200),
    /** Hard deadline of one capture; on expiry it aborts and production is restored. */
    timeout_s: z.number().positive().default(1800),
    /** Retention: newest captures kept per VM, and the store's byte budget. */
    keep_per_vm: z.number().int().positive().default(3),
    max_store_gb: z.number().positive().default(100),
  })
  .strict();

/** Where and how the agent sends its spool (agent/src/telemetry, docs/telemetry.md). */
const collectorSchema = z
  .object({
    /** wss://host:port of the collector's ingest endpoint; absent = spool only, send nothing. */
    url: z
      .string()
      .regex(/^wss?:\/\/[^/\s]+/i, "expected a wss:// URL")
      .optional(),
    /** PEM CA bundle that signed the collector's certificate (default: the system CAs). */
    ca_file: z.string().min(1).optional(),
    /** Operator-issued enrollment token (`shadowvm-collector token create`), used once. */
    enrollment_token: z.string().min(1).optional(),
    /** ... or a file holding it (read when needed; preferred over a token in the config). */
    enrollment_token_file: z.string().min(1).optional(),
    /** Where the per-agent secret is kept, mode 0600 (default <data_dir>/collector-credentials.json). */
    credentials_file: z.string().min(1).optional(),
    /** Allow ws:// (tests only: the token and the secret would cross in clear text). */
    allow_insecure: z.boolean().default(false),
    /** Unacknowledged frames at most, and their bytes (backpressure). */
    max_in_flight_frames: z.number().int().positive().default(64),
    max_in_flight_bytes: z
      .number()
      .int()
      .positive()
      .default(16 * 1024 * 1024),
    max_frame_bytes: z.number().int().positive().default(DEFAULT_MAX_FRAME_BYTES),
    handshake_timeout_ms: z.number().int().positive().default(10_000),
    /** A frame unacknowledged this long drops the connection (then resent). */
    ack_timeout_ms: z.number().int().positive().default(30_000),
    /** Reconnect backoff: exponential from min to max, with jitter. */
    reconnect_min_ms: z.number().int().positive().default(500),
    reconnect_max_ms: z.number().int().positive().default(30_000),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.url && /^ws:/i.test(c.url) && !c.allow_insecure) {
      ctx.addIssue({
        code: "custom",
        path: ["url"],
        message:
          "expected wss:// (plain ws:// sends the enrollment token and secret in clear text; collector.allow_insecure: true allows it for tests)",
      });
    }
    if (c.reconnect_max_ms < c.reconnect_min_ms) {
      ctx.addIssue({
        code: "custom",
        path: ["reconnect_max_ms"],
        message: `expected at least reconnect_min_ms (${c.reconnect_min_ms})`,
      });
    }
  });

const telemetrySchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Seconds between samples of the host and every VM. */
    interval_s: z.number().positive().default(10),
    /** Seconds between full inventories (also refreshed when QMP sockets come or go). */
    inventory_interval_s: z.number().positive().default(300),
    /** Window of the production operating point (averages and slopes). */
    operating_point_window_s: z.number().positive().default(900),
    /** Disk throughput counted as 100% for average_disk_io. */
    disk_io_capacity_bytes_per_s: z
      .number()
      .positive()
      .default(200 * 1024 * 1024),
    /** VMs sampled at the same time. */
    vm_concurrency: z.number().int().positive().default(4),
    /** Labels sent with every VM's inventory (fleet correlation: image, kernel, app_stack, team). */
    labels: z.record(z.string(), z.string()).default({}),
  })
  .strict();

const spoolSchema = z
  .object({
    /** Default <data_dir>/spool. */
    dir: z.string().min(1).optional(),
    /** Cap on pending records; see the size policy in agent/src/spool/spool.ts. */
    max_bytes: z
      .number()
      .int()
      .positive()
      .default(512 * 1024 * 1024),
    /** Share of max_bytes only captures, shadow runs, failures and signatures may use. */
    reserve_ratio: z.number().min(0).max(0.9).default(0.1),
    /** Share of max_bytes from which new shadow work is refused. */
    shadow_block_ratio: z.number().gt(0).max(1).default(0.8),
  })
  .strict();

const metricsSchema = z
  .object({
    /** /metrics, /healthz, /readyz on plain HTTP (loopback by default; port 0 = any free port). */
    enabled: z.boolean().default(true),
    host: z.string().min(1).default("127.0.0.1"),
    port: z.number().int().min(0).max(65_535).default(9465),
  })
  .strict();

export const agentConfigSchema = z
  .object({
    /** This host's identity towards the collector. */
    agent_id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected 1-63 letters, digits, '.', '_' or '-'")
      .default(hostname()),
    /** Where the agent keeps its state: spool, capture store, shadows' working directories. */
    data_dir: z.string().min(1).default("/var/lib/shadowvm"),
    log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    hypervisor: hypervisorSchema.prefault({}),
    capture: captureSchema.prefault({}),
    collector: collectorSchema.prefault({}),
    telemetry: telemetrySchema.prefault({}),
    spool: spoolSchema.prefault({}),
    metrics: metricsSchema.prefault({}),
  })
  .strict();

export type AgentConfig = z.output<typeof agentConfigSchema>;

export interface AgentConfigOverrides {
  file?: string | undefined;
  dataDir?: string | undefined;
}

/**
 * Loads the config file (the default path only if it exists), environment overrides, then the
 * CLI's overrides. Throws ConfigError naming the bad key.
 */
export function loadAgentConfig(
  overrides: AgentConfigOverrides = {},
  env: Record<string, string | undefined> = process.env,
): AgentConfig {
  const file =
    overrides.file ?? (existsSync(DEFAULT_AGENT_CONFIG_FILE) ? DEFAULT_AGENT_CONFIG_FILE : undefined);
  const config = loadConfig(agentConfigSchema, { file, env, envPrefix: AGENT_ENV_PREFIX });
  if (overrides.dataDir) config.data_dir = overrides.dataDir;
  return config;
}
