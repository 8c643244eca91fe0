// The agent's Prometheus metrics and its small operations listener (node:http): /metrics,
// /healthz (the process answers) and /readyz (the spool is open and telemetry runs; being
// disconnected from the collector does not make the agent unready: it spools). One registry per
// instance, so tests can run several agents in one process.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { Spool, SpoolClass, SpoolObserver } from "../spool/spool.js";

export class AgentMetrics implements SpoolObserver {
  readonly registry = new Registry();
  readonly framesSent: Counter<"class">;
  readonly bytesSent: Counter;
  readonly framesAcked: Counter;
  readonly acksReceived: Counter;
  readonly framesDeadLettered: Counter<"class">;
  readonly spoolDropped: Counter<"class" | "reason">;
  readonly spoolRejected: Counter<"class">;
  readonly shadowBlocked: Counter;
  readonly spoolCorrupt: Counter;
  readonly spoolAppended: Counter<"class">;
  readonly connected: Gauge;
  readonly inFlight: Gauge;
  readonly reconnects: Counter;
  readonly sessionFailures: Counter<"reason">;
  readonly errors: Counter<"error_type" | "stage">;
  readonly scrapeDuration: Gauge<"collector">;
  readonly scrapeSuccess: Gauge<"collector">;
  readonly samples: Counter<"scope">;
  private spool: Spool | undefined;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const p = "shadowvm_agent_";
    this.framesSent = new Counter({
      name: `${p}frames_sent_total`,
      help: "Spooled frames sent to the collector (resends included), by record class",
      labelNames: ["class"],
      registers,
    });
    this.bytesSent = new Counter({ name: `${p}bytes_sent_total`, help: "Bytes of frames sent", registers });
    this.framesAcked = new Counter({
      name: `${p}frames_acked_total`,
      help: "Frames the collector acknowledged after committing them (deleted from the spool)",
      registers,
    });
    this.acksReceived = new Counter({
      name: `${p}acks_received_total`,
      help: "Ack frames received",
      registers,
    });
    this.framesDeadLettered = new Counter({
      name: `${p}frames_dead_lettered_total`,
      help: "Frames the collector refused for good, moved to the spool's dead letters",
      labelNames: ["class"],
      registers,
    });
    this.spoolDropped = new Counter({
      name: `${p}spool_dropped_records_total`,
      help: "Records dropped by the spool's size policy (only telemetry is ever dropped)",
      labelNames: ["class", "reason"],
      registers,
    });
    this.spoolRejected = new Counter({
      name: `${p}spool_rejected_records_total`,
      help: "Appends refused because the spool is full (the caller was told)",
      labelNames: ["class"],
      registers,
    });
    this.shadowBlocked = new Counter({
      name: `${p}spool_shadow_work_blocked_total`,
      help: "Times new shadow work was refused because the spool is nearly full",
      registers,
    });
    this.spoolCorrupt = new Counter({
      name: `${p}spool_corrupt_records_total`,
      help: "Records that failed their checksum at start-up (moved to the dead letters)",
      registers,
    });
    this.spoolAppended = new Counter({
      name: `${p}spool_appended_records_total`,
      help: "Records appended to the spool, by class",
      labelNames: ["class"],
      registers,
    });
    const self = this;
    new Gauge({
      name: `${p}spool_pending_frames`,
      help: "Records in the spool not yet acknowledged",
      registers,
      collect() {
        this.set(self.spool?.pendingFrames ?? 0);
      },
    });
    new Gauge({
      name: `${p}spool_pending_bytes`,
      help: "Bytes of records in the spool not yet acknowledged",
      registers,
      collect() {
        this.set(self.spool?.pendingBytes ?? 0);
      },
    });
    new Gauge({
      name: `${p}spool_dead_letters`,
      help: "Records in the spool's dead-letter range",
      registers,
      collect() {
        this.set(self.spool?.stats().deadLetters ?? 0);
      },
    });
    this.connected = new Gauge({
      name: `${p}collector_connected`,
      help: "1 while an authenticated connection to the collector is open",
      registers,
    });
    this.inFlight = new Gauge({
      name: `${p}frames_in_flight`,
      help: "Frames sent and not yet acknowledged",
      registers,
    });
    this.reconnects = new Counter({
      name: `${p}collector_connects_total`,
      help: "Authenticated connections established",
      registers,
    });
    this.sessionFailures = new Counter({
      name: `${p}collector_connect_failures_total`,
      help: "Failed connection or authentication attempts, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.errors = new Counter({
      name: `${p}errors_total`,
      help: "Errors by type and the stage they happened in",
      labelNames: ["error_type", "stage"],
      registers,
    });
    this.scrapeDuration = new Gauge({
      name: `${p}telemetry_collector_duration_seconds`,
      help: "Duration of the last run of each telemetry collector (host, one per VM source)",
      labelNames: ["collector"],
      registers,
    });
    this.scrapeSuccess = new Gauge({
      name: `${p}telemetry_collector_success`,
      help: "1 if the last run of the telemetry collector succeeded",
      labelNames: ["collector"],
      registers,
    });
    this.samples = new Counter({
      name: `${p}telemetry_samples_total`,
      help: "Samples collected, by scope",
      labelNames: ["scope"],
      registers,
    });
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: p });
  }

  attachSpool(spool: Spool): void {
    this.spool = spool;
  }

  error(errorType: string, stage: string): void {
    this.errors.inc({ error_type: errorType, stage });
  }

  // SpoolObserver
  appended(cls: SpoolClass): void {
    this.spoolAppended.inc({ class: cls });
  }
  dropped(cls: SpoolClass, reason: string, records: number): void {
    this.spoolDropped.inc({ class: cls, reason }, records);
  }
  rejected(cls: SpoolClass): void {
    this.spoolRejected.inc({ class: cls });
  }
  shadowWorkBlocked(): void {
    this.shadowBlocked.inc();
  }
  corrupt(records: number): void {
    this.spoolCorrupt.inc(records);
  }
  deadLettered(cls: SpoolClass): void {
    this.framesDeadLettered.inc({ class: cls });
  }
}

export interface OpsListener {
  port: number;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz and /readyz; `problems()` empty = ready. */
export function startOpsListener(
  registry: Registry,
  problems: () => string[],
  host: string,
  port: number,
): Promise<OpsListener> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET") {
      res.writeHead(405).end();
    } else if (path === "/metrics") {
      registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const p = problems();
      if (p.length === 0) res.writeHead(200, { "content-type": "text/plain" }).end("ready\n");
      else
        res
          .writeHead(503, { "content-type": "application/json" })
          .end(JSON.stringify({ ready: false, problems: p }));
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
