// `shadowvm-agent serve`, the telemetry part: the spool, the operations listener, the shipper to
// the collector and the telemetry loop, started in that order and stopped in reverse (telemetry
// first, so everything it produced is spooled before the spool closes).
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { createError, type Logger } from "@shadowvm/shared";
import type { AgentConfig } from "../config/agent-config.js";
import { QemuDriver } from "../hypervisor/qemu/qemu-driver.js";
import { Spool, type SpoolOptions } from "../spool/spool.js";
import { AgentMetrics, type OpsListener, startOpsListener } from "./agent-metrics.js";
import { CollectorSession } from "./collector-session.js";
import { startConsoleWatch } from "./console-watch.js";
import { CredentialsFileStore } from "./credentials.js";
import { HostMetrics } from "./host-metrics.js";
import { OperatingPointTracker } from "./operating-point.js";
import { SpoolShipper } from "./spool-shipper.js";
import { type TelemetryDriver, TelemetryLoop } from "./telemetry-loop.js";
import { VmMetrics } from "./vm-metrics.js";

export interface AgentService {
  readonly spool: Spool;
  readonly metrics: AgentMetrics;
  readonly shipper: SpoolShipper | undefined;
  readonly telemetry: TelemetryLoop | undefined;
  /** 0 when the operations listener is disabled. */
  readonly opsPort: number;
  readinessProblems(): string[];
  close(): Promise<void>;
}

export function spoolDir(config: AgentConfig): string {
  return config.spool.dir ?? join(config.data_dir, "spool");
}

/** The spool as the config sets it up (the service adds its metrics observer and logger). */
export function spoolOptions(config: AgentConfig): SpoolOptions {
  return {
    dir: spoolDir(config),
    agentId: config.agent_id,
    maxBytes: config.spool.max_bytes,
    reserveRatio: config.spool.reserve_ratio,
    shadowBlockRatio: config.spool.shadow_block_ratio,
    maxFrameBytes: config.collector.max_frame_bytes,
  };
}

export function credentialsPath(config: AgentConfig): string {
  return config.collector.credentials_file ?? join(config.data_dir, "collector-credentials.json");
}

function readFileOrThrow(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw createError("config", "invalid", `cannot read ${what} ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** The enrollment token from the config or its file, read when needed. */
export function enrollmentTokenSource(config: AgentConfig): () => string | undefined {
  return () => {
    if (config.collector.enrollment_token) return config.collector.enrollment_token;
    const file = config.collector.enrollment_token_file;
    if (!file) return undefined;
    try {
      return readFileSync(file, "utf8").trim() || undefined;
    } catch {
      return undefined;
    }
  };
}

/** How a connection to the configured collector is opened (shared by serve and enroll). */
export function sessionConnector(config: AgentConfig, logger: Logger): () => Promise<CollectorSession> {
  const c = config.collector;
  if (!c.url) throw createError("config", "invalid", "collector.url is not set");
  const ca = c.ca_file ? readFileOrThrow(c.ca_file, "collector.ca_file") : undefined;
  const credentials = new CredentialsFileStore(credentialsPath(config), logger);
  const url = c.url;
  return () =>
    CollectorSession.connect({
      url,
      agentId: config.agent_id,
      hostname: hostname(),
      ca,
      allowInsecure: c.allow_insecure,
      credentials,
      enrollmentToken: enrollmentTokenSource(config),
      maxFrameBytes: c.max_frame_bytes,
      handshakeTimeoutMs: c.handshake_timeout_ms,
      logger,
    });
}

export interface AgentServiceOptions {
  logger: Logger;
  /** Default: the qemu driver over the configured QMP socket globs. */
  driver?: TelemetryDriver;
}

export async function startAgentService(
  config: AgentConfig,
  options: AgentServiceOptions,
): Promise<AgentService> {
  const { logger } = options;
  const metrics = new AgentMetrics();
  const spool = await Spool.open({ ...spoolOptions(config), observer: metrics, logger });
  metrics.attachSpool(spool);
  let ops: OpsListener | undefined;
  let shipper: SpoolShipper | undefined;
  let telemetry: TelemetryLoop | undefined;
  let consoleWatch: ReturnType<typeof startConsoleWatch> | undefined;
  let driver: TelemetryDriver | undefined;
  let closing = false;
  const readinessProblems = () => {
    const problems: string[] = [];
    if (closing) problems.push("shutting down");
    if (telemetry && telemetry.ticks === 0) problems.push("no telemetry collected yet");
    return problems;
  };
  try {
    if (config.metrics.enabled) {
      ops = await startOpsListener(
        metrics.registry,
        readinessProblems,
        config.metrics.host,
        config.metrics.port,
      );
    }
    if (config.collector.url) {
      const c = config.collector;
      shipper = new SpoolShipper({
        spool,
        connect: sessionConnector(config, logger),
        logger,
        metrics,
        window: c.max_in_flight_frames,
        maxInFlightBytes: c.max_in_flight_bytes,
        ackTimeoutMs: c.ack_timeout_ms,
        reconnectMinMs: c.reconnect_min_ms,
        reconnectMaxMs: c.reconnect_max_ms,
      });
      shipper.start();
    } else {
      logger.warn("collector.url is not set: telemetry is spooled but not sent");
    }
    if (config.telemetry.enabled) {
      const h = config.hypervisor;
      driver =
        options.driver ??
        new QemuDriver({
          socketGlobs: h.qmp_sockets,
          connectTimeoutMs: h.connect_timeout_ms,
          commandTimeoutMs: h.command_timeout_ms,
        });
      const t = config.telemetry;
      telemetry = new TelemetryLoop({
        driver,
        spool,
        host: new HostMetrics(),
        vms: new VmMetrics({
          connectTimeoutMs: h.connect_timeout_ms,
          commandTimeoutMs: h.command_timeout_ms,
        }),
        tracker: new OperatingPointTracker({
          windowMs: t.operating_point_window_s * 1000,
          diskIoCapacityBytesPerS: t.disk_io_capacity_bytes_per_s,
        }),
        logger,
        metrics,
        intervalMs: t.interval_s * 1000,
        inventoryIntervalMs: t.inventory_interval_s * 1000,
        concurrency: t.vm_concurrency,
        labels: t.labels,
      });
      telemetry.start();
      // Production consoles: precursors of this VM's shadow failures, and real failures (console-watch.ts).
      const loop = telemetry;
      consoleWatch = startConsoleWatch(config, { vms: () => loop.vmTargets, sink: spool, logger });
    }
  } catch (err) {
    await consoleWatch?.stop();
    await telemetry?.stop();
    await shipper?.stop();
    await ops?.close();
    await spool.close();
    throw err;
  }
  logger.info(
    {
      spool: spoolDir(config),
      epoch: spool.epoch,
      pending: spool.pendingFrames,
      collector: config.collector.url ?? null,
      ops: ops ? `http://${config.metrics.host}:${ops.port}` : "disabled",
    },
    "agent: telemetry service started",
  );
  return {
    spool,
    metrics,
    shipper,
    telemetry,
    opsPort: ops?.port ?? 0,
    readinessProblems,
    async close() {
      if (closing) return;
      closing = true;
      await consoleWatch?.stop();
      await telemetry?.stop();
      await spool.settled();
      await shipper?.stop();
      await driver?.close();
      await ops?.close();
      await spool.close();
      logger.info({ pending: spool.pendingFrames }, "agent: telemetry service stopped");
    },
  };
}
