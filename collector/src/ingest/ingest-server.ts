// The agents' endpoint: a WebSocket server on HTTPS (wss://, the operator's certificate) or, only
// when TLS is explicitly not required, plain HTTP. Each connection is an AgentConnection; frames
// go through one BatchWriter into the store. Backpressure: a connection with too many uncommitted
// frames stops being read (the agent's own in-flight window normally keeps it below), and all
// connections stop being read while the uncommitted bytes exceed max_pending_bytes.
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Logger } from "@shadowvm/shared";
import { WebSocketServer } from "ws";
import type { AuthStore } from "../auth/auth-store.js";
import type { CollectorMetrics } from "../metrics/collector-metrics.js";
import type { IngestStore } from "../store/ingest-store.js";
import { AgentConnection } from "./agent-connection.js";
import { BatchWriter } from "./batch-writer.js";
import { type FrameDecoder, InlineDecoder, WorkerDecoder } from "./decode-pool.js";
import { SampleClockCheck } from "./sample-clock.js";

export interface IngestServerOptions {
  host: string;
  port: number;
  /** PEM certificate chain and key; absent = plain ws:// (tests only, refused unless allowed). */
  tls?: { cert: string | Buffer; key: string | Buffer } | undefined;
  store: IngestStore;
  auth: AuthStore;
  metrics: CollectorMetrics;
  logger: Logger;
  maxFrameBytes: number;
  batchMaxRows: number;
  batchMaxDelayMs: number;
  maxPendingFramesPerConnection: number;
  maxPendingBytes: number;
  heartbeatIntervalMs: number;
  handshakeTimeoutMs: number;
  /** 1 = decode authenticated connections' frames in a worker thread, 0 = on the main thread. */
  decodeWorkers: number;
  /** retention.samples_days: samples older than this are reported when they arrive (0 = never). */
  samplesRetentionDays?: number;
}

export class IngestServer {
  private readonly connections = new Set<AgentConnection>();
  private readonly byAgent = new Map<string, AgentConnection>();
  private readonly writer: BatchWriter;
  private readonly decoder: FrameDecoder;
  private readonly sampleClock: SampleClockCheck;
  private readonly heartbeat: NodeJS.Timeout;
  private paused = false;
  private closing = false;
  port = 0;

  private constructor(
    private readonly options: IngestServerOptions,
    private readonly server: HttpServer,
    private readonly wss: WebSocketServer,
  ) {
    this.decoder =
      options.decodeWorkers > 0
        ? new WorkerDecoder(options.maxFrameBytes, options.logger)
        : new InlineDecoder(options.maxFrameBytes);
    this.sampleClock = new SampleClockCheck({
      retentionDays: options.samplesRetentionDays ?? 0,
      logger: options.logger,
      counter: options.metrics.samplesOutOfWindow,
    });
    this.writer = new BatchWriter({
      store: options.store,
      metrics: options.metrics,
      logger: options.logger,
      maxRows: options.batchMaxRows,
      maxDelayMs: options.batchMaxDelayMs,
      onChange: () => this.applyBackpressure(),
    });
    wss.on("connection", (ws, req) => {
      if (this.closing) {
        ws.close(1001, "shutting down");
        return;
      }
      const remote = `${req.socket.remoteAddress ?? "?"}:${req.socket.remotePort ?? "?"}`;
      const conn = new AgentConnection(ws, this.context(), remote);
      this.connections.add(conn);
      if (this.paused) conn.pause();
    });
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      for (const conn of this.connections) conn.tick(now);
    }, options.heartbeatIntervalMs);
    this.heartbeat.unref();
  }

  static async start(options: IngestServerOptions): Promise<IngestServer> {
    const server: HttpServer = options.tls
      ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key, minVersion: "TLSv1.2" })
      : createHttpServer();
    // A plain-HTTP request on the TLS port, or a failed TLS handshake: counted, never fatal.
    server.on("tlsClientError", (err: Error & { code?: string }) => {
      options.metrics.authFailures.inc({ reason: "tls_handshake" });
      options.logger.debug({ err: err.message }, "ingest: TLS handshake failed");
    });
    server.on("clientError", (_err, socket) => socket.destroy());
    const wss = new WebSocketServer({
      server,
      // Twice the frame limit: a frame up to that size is read and refused with FRAME_TOO_LARGE
      // naming its seq (so the agent sets it aside); beyond it ws refuses it unread (close 1009).
      maxPayload: options.maxFrameBytes * 2,
      perMessageDeflate: false,
      clientTracking: false,
    });
    wss.on("error", (err) => options.logger.error({ err }, "ingest: WebSocket server error"));
    const ingest = new IngestServer(options, server, wss);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    ingest.port = (server.address() as AddressInfo).port;
    return ingest;
  }

  get tls(): boolean {
    return this.options.tls !== undefined;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  get lastCommitFailed(): boolean {
    return this.writer.lastCommitFailed;
  }

  private context() {
    const o = this.options;
    return {
      auth: o.auth,
      decoder: this.decoder,
      writer: this.writer,
      sampleClock: this.sampleClock,
      metrics: o.metrics,
      logger: o.logger,
      maxFrameBytes: o.maxFrameBytes,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      handshakeTimeoutMs: o.handshakeTimeoutMs,
      maxPendingFrames: o.maxPendingFramesPerConnection,
      resumePoints: (agentId: string) => o.store.resumePoints(agentId),
      authenticated: (conn: AgentConnection) => {
        const old = this.byAgent.get(conn.agentId!);
        this.byAgent.set(conn.agentId!, conn);
        if (old && old !== conn) old.replaced();
      },
      closed: (conn: AgentConnection) => {
        this.connections.delete(conn);
        if (conn.agentId !== undefined && this.byAgent.get(conn.agentId) === conn)
          this.byAgent.delete(conn.agentId);
      },
      globallyPaused: () => this.paused,
    };
  }

  /** Stops or resumes reading every socket around the global pending-bytes limit (with hysteresis). */
  private applyBackpressure(): void {
    const bytes = this.writer.pendingBytes;
    if (!this.paused && bytes > this.options.maxPendingBytes) {
      this.paused = true;
      this.options.logger.warn(
        { pending_bytes: bytes },
        "ingest: store is behind; pausing all agent sockets",
      );
      for (const conn of this.connections) conn.pause();
    } else if (this.paused && bytes <= this.options.maxPendingBytes / 2) {
      this.paused = false;
      for (const conn of this.connections) conn.maybeResume();
    }
  }

  /**
   * Graceful stop: no new connections, stop reading, commit and acknowledge what is queued, then
   * tell every agent to come back later and close.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.heartbeat);
    for (const conn of this.connections) conn.pause();
    await this.writer.flush();
    await this.decoder.close();
    this.writer.close();
    for (const conn of [...this.connections]) conn.shutdown();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections?.();
    });
  }
}
