// The agent's configuration: /etc/shadowvm/agent.yaml (see deploy/config/agent.example.yaml),
// overridden by SHADOWVM_AGENT__<SECTION>__<KEY> environment variables, then by CLI flags.
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { DEFAULT_MAX_FRAME_BYTES, FAULT_KINDS, loadConfig } from "@shadowvm/shared";
import { z } from "zod";

export const AGENT_ENV_PREFIX = "SHADOWVM_AGENT__";
export const DEFAULT_AGENT_CONFIG_FILE = "/etc/shadowvm/agent.yaml";

const hypervisorSchema = z
  .object({
    driver: z.enum(["qemu", "libvirt"]).default("qemu"),
    /** libvirt connection URI, for driver `libvirt` (docs/libvirt.md). */
    libvirt_uri: z.string().min(1).default("qemu:///system"),
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
    /**
     * Production serial console logs by VM name or uuid, for the console watch (precursors and
     * failures seen on production); VMs not listed are found from their QEMU command line.
     */
    console_logs: z.record(z.string(), z.string().min(1)).default({}),
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

/** The shadow lab: isolation, the host guard's budget, stress calibration, detection (docs/shadow-lab.md). */
const shadowSchema = z
  .object({
    /** Shadows' working directories and registry (default <data_dir>/shadows). */
    dir: z.string().min(1).optional(),
    /** Isolation: user-mode networking with restrict=on, or a tap in a namespace of its own with no uplink. */
    network: z.enum(["user", "netns"]).default("user"),
    /** Shadows running at once on this host (all campaigns). */
    max_shadows: z.number().int().positive().default(4),
    /** Share of the host's CPU time all shadows may use together (kernel-enforced by their parent cgroup). */
    cpu_share: z.number().gt(0).max(1).default(0.5),
    /** Refuse shadows when their CPU cannot be capped (no cgroup CPU controller). */
    require_cpu_cap: z.boolean().default(true),
    /** Memory all shadows may hold together, MiB (default: half the host's RAM). */
    memory_budget_mb: z.number().int().positive().optional(),
    /** Available memory production keeps: a shadow that would leave less is refused. */
    host_reserve_mb: z.number().int().min(0).default(1024),
    /** Below this much available memory, shadows are killed (stressed first, newest first). */
    emergency_available_mb: z.number().int().min(0).default(512),
    /** Disk all shadows' overlays may use together, MiB. */
    disk_budget_mb: z.number().int().positive().default(10_240),
    /** Free disk kept for production: a shadow whose overlay reserve would leave less is refused. */
    min_free_disk_mb: z.number().int().min(0).default(2048),
    /** Below this much free disk, shadows are killed. */
    emergency_free_disk_mb: z.number().int().min(0).default(1024),
    /** Disk reserved per shadow for its overlays' growth, MiB. */
    overlay_reserve_mb: z.number().int().positive().default(512),
    /** QEMU's own memory per shadow on top of guest RAM, MiB (for admission). */
    qemu_overhead_mb: z.number().int().min(0).default(96),
    /** Parent cgroup of all shadows (absolute in each hierarchy; default <agent's cgroup>/shadowvm-<tag>). */
    cgroup_parent: z.string().min(1).optional(),
    /** Seconds after a shadow resumed during which its own demand (CPU, I/O, memory) is measured. */
    calibration_s: z.number().positive().default(3),
    /** The balloon never takes a guest below this, MiB. */
    min_balloon_mb: z.number().int().positive().default(48),
    /** Guest processes `process_kill` chooses from, in order (guest channel names). */
    workload_processes: z.array(z.string().min(1)).default(["svm-writer", "httpd", "svm-state"]),
    /** Guest service the probes reach (through the shadow's loopback forward). */
    probe_port: z.number().int().min(1).max(65_535).default(80),
    probe_path: z.string().startsWith("/").default("/"),
    probe_interval_ms: z.number().int().positive().default(1000),
    probe_timeout_ms: z.number().int().positive().default(5000),
    /** Consecutive failed probes (guest running) that make the service unresponsive. */
    probe_failures: z.number().int().positive().default(6),
    /**
     * Stop a shadow once the guest kernel or QEMU reported a failure (console, QMP event), after
     * this many more seconds of evidence; failures seen only from outside (probes) do not stop it.
     */
    stop_on_failure: z.boolean().default(true),
    failure_grace_s: z.number().min(0).default(10),
    /** Deadline for a shadow to be running after its start request. */
    start_timeout_s: z.number().positive().default(120),
    /** Host guard check interval. */
    watch_interval_ms: z.number().int().positive().default(2000),
    /** Share of the control shadow's probes that must succeed for it to validate the capture. */
    control_min_probe_success: z.number().min(0).max(1).default(0.9),
  })
  .strict();

/** A [low, high] search range of one stress knob. */
const boundsRange = z
  .tuple([z.number().min(0), z.number().min(0)])
  .refine(([lo, hi]) => lo <= hi, { message: "expected [low, high] with low <= high" });

/** Campaigns the agent runs by itself while serving: capture, shadows with explorer profiles, detection. */
const campaignsSchema = z
  .object({
    /** Run campaigns from `serve` (capture + shadows cost host resources; off by default). */
    enabled: z.boolean().default(false),
    /** Seconds between two campaigns of the same VM. */
    interval_s: z
      .number()
      .positive()
      .default(6 * 3600),
    /**
     * Longest wait between two campaigns of a VM whose campaigns keep ending unfinished (each one
     * doubles interval_s up to this; e.g. a VM that fails even unstressed).
     */
    backoff_max_s: z
      .number()
      .positive()
      .default(48 * 3600),
    /** Seconds after the agent starts before the first campaign (lets telemetry build an operating point). */
    first_delay_s: z.number().min(0).default(300),
    /** VMs to shadow, by name or uuid; empty = every VM the agent sees. */
    vms: z.array(z.string().min(1)).default([]),
    /** Stressed shadow runs per campaign (the explorer's budget). */
    budget: z.number().int().positive().default(12),
    /** Shadows run at once (K); each batch of K profiles is one shadow-lab campaign. */
    parallel: z.number().int().positive().default(3),
    /** Which generator picks the profiles. */
    strategy: z.enum(["adaptive", "baseline", "random"]).default("adaptive"),
    /** Length of each stressed shadow run, seconds. */
    duration_s: z.number().positive().default(120),
    /** Run an unstressed control shadow with the first batch (validates the capture). */
    control: z.boolean().default(true),
    /** Fault kinds the explorer may use (default: all the host supports). */
    faults: z.array(z.enum(FAULT_KINDS)).optional(),
    /**
     * Search bounds per stress knob, [low, high] (default: the explorer's, cut to what the host can
     * apply); low = high pins a knob (e.g. net_latency_ms: [0, 0] keeps the network out of a campaign).
     */
    bounds: z
      .object({
        cpu_load: boundsRange,
        memory_load: boundsRange,
        io_load: boundsRange,
        net_latency_ms: boundsRange,
        net_loss_pct: boundsRange,
        fault_rate: boundsRange,
      })
      .partial()
      .strict()
      .optional(),
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
    shadow: shadowSchema.prefault({}),
    campaigns: campaignsSchema.prefault({}),
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
