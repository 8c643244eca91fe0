// Moves the spool to the collector: connect and authenticate, drop what the collector's resume
// points say is committed, then stream the spool in seq order with at most `window` frames (and
// `maxInFlightBytes`) unacknowledged, deleting each frame when its Ack arrives. On any trouble the
// session is dropped and, after a jittered exponential backoff, the stream starts over from the
// oldest unacknowledged record (the collector deduplicates what it already has). A frame the
// collector refuses for good goes to the spool's dead letters; nothing is dropped silently.
import { EventEmitter } from "node:events";
import type { Logger } from "@shadowvm/shared";
import type { Spool, SpoolRecord } from "../spool/spool.js";
import type { AgentMetrics } from "./agent-metrics.js";
import { Backoff } from "./backoff.js";
import { type CollectorSession, SessionError } from "./collector-session.js";
import type { SendResult } from "./transport.js";

export interface ShipperOptions {
  spool: Spool;
  connect: () => Promise<CollectorSession>;
  logger: Logger;
  metrics?: AgentMetrics;
  /** Unacknowledged frames at most (backpressure). */
  window: number;
  maxInFlightBytes: number;
  /** A frame unacknowledged for this long means the connection is stuck. */
  ackTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
}

export type ShipperState = "connecting" | "streaming" | "waiting" | "stopped";

export class SpoolShipper extends EventEmitter<{ state: [ShipperState]; session: [CollectorSession] }> {
  private stopped = false;
  private session: CollectorSession | undefined;
  private readonly backoff: Backoff;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;
  state: ShipperState = "waiting";
  /** Why the last connection attempt or session ended (for logs and the CLI). */
  lastError: string | undefined;

  constructor(private readonly o: ShipperOptions) {
    super();
    this.backoff = new Backoff({ minMs: o.reconnectMinMs, maxMs: o.reconnectMaxMs });
  }

  start(): void {
    this.running ??= this.loop();
  }

  private setState(s: ShipperState): void {
    this.state = s;
    this.emit("state", s);
  }

  /** Sleeps `ms`, or less if stop() is called. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const onStop = () => done();
      this.once("state", onStop);
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  private async loop(): Promise<void> {
    const { logger, metrics } = this.o;
    while (!this.stopped) {
      this.setState("connecting");
      let session: CollectorSession;
      try {
        session = await this.o.connect();
      } catch (err) {
        const e = err instanceof SessionError ? err : undefined;
        const reason = e?.code ?? "error";
        metrics?.sessionFailures.inc({ reason });
        this.lastError = (err as Error).message;
        const delay = this.backoff.next(e?.retryInMillis);
        const level = reason === "unreachable" || reason === "handshake_timeout" ? "warn" : "error";
        logger[level]({ reason, err: this.lastError, retry_in_ms: delay }, "collector: connection failed");
        if (this.stopped) break;
        this.setState("waiting");
        await this.sleep(delay);
        continue;
      }
      if (this.stopped) {
        session.close("agent stopping");
        break;
      }
      this.session = session;
      metrics?.reconnects.inc();
      metrics?.connected.set(1);
      this.emit("session", session);
      const started = Date.now();
      let acked = 0;
      session.on("ack", (ranges) => {
        metrics?.acksReceived.inc();
        this.o.spool.ack(ranges).then(
          (n) => {
            acked += n;
            metrics?.framesAcked.inc(n);
          },
          (err) => logger.error({ err }, "spool: deleting acknowledged records failed"),
        );
        this.wake?.();
      });
      session.on("close", () => this.wake?.());
      session.setHeartbeatBody(() => ({
        spool_pending_frames: this.o.spool.pendingFrames,
        spool_pending_bytes: this.o.spool.pendingBytes,
      }));
      let retryIn: number | undefined;
      try {
        const dropped = await this.o.spool.resume(session.resume);
        logger.info(
          { resume: session.resume, already_committed: dropped, pending: this.o.spool.pendingFrames },
          "collector: connected",
        );
        this.setState("streaming");
        retryIn = await this.pump(session);
      } catch (err) {
        metrics?.error("pump_failed", "shipper");
        logger.error({ err }, "collector: sending failed");
        session.close("agent error");
      }
      metrics?.connected.set(0);
      metrics?.inFlight.set(0);
      this.session = undefined;
      this.lastError = session.endReason;
      // A session that was healthy for a while starts the backoff over.
      if (acked > 0 || Date.now() - started > 30_000) this.backoff.reset();
      if (this.stopped) break;
      const delay = this.backoff.next(retryIn);
      logger.warn({ reason: session.endReason, acked, retry_in_ms: delay }, "collector: disconnected");
      this.setState("waiting");
      await this.sleep(delay);
    }
    this.setState("stopped");
  }

  /** Streams until the session ends; returns the collector's retry_after, if it gave one. */
  private async pump(session: CollectorSession): Promise<number | undefined> {
    const { spool, metrics, window, maxInFlightBytes, ackTimeoutMs } = this.o;
    let cursor = 0;
    let retryIn: number | undefined;
    const onAppended = () => this.wake?.();
    spool.on("appended", onAppended);
    try {
      while (session.isOpen && !this.stopped) {
        let sent = 0;
        while (session.isOpen && session.inFlightCount < window && session.pendingBytes < maxInFlightBytes) {
          const records = await spool.readAfter(
            cursor,
            Math.min(64, window - session.inFlightCount),
            maxInFlightBytes - session.pendingBytes,
          );
          if (records.length === 0 || !session.isOpen) break;
          for (const record of records) {
            cursor = record.seq;
            sent++;
            metrics?.framesSent.inc({ class: record.cls });
            metrics?.bytesSent.inc(record.frame.byteLength);
            session.send(record, ackTimeoutMs).then((r) => {
              const retry = this.settled(record, r);
              if (retry !== undefined) retryIn = retry;
            });
          }
        }
        metrics?.inFlight.set(session.inFlightCount);
        if (!session.isOpen || this.stopped) break;
        if (sent > 0 && session.inFlightCount < window) continue;
        // Wait for an ack (room in the window), a new record, or the end of the session.
        await new Promise<void>((resolve) => {
          this.wake = () => {
            this.wake = undefined;
            resolve();
          };
        });
      }
    } finally {
      spool.off("appended", onAppended);
      this.wake = undefined;
    }
    return retryIn;
  }

  /** Handles how one send ended; returns a retry delay for retryable outcomes. */
  private settled(record: SpoolRecord, result: SendResult): number | undefined {
    switch (result.status) {
      case "success":
        return undefined; // the session's ack event already deletes it
      case "failure":
        this.o.spool.deadLetter(record.seq, result.reason).catch((err) => {
          this.o.logger.error(
            { err, seq: record.seq },
            "spool: moving a refused record to the dead letters failed",
          );
        });
        return undefined;
      case "retryable":
        return result.retryInMillis;
    }
  }

  /** Stops sending and closes the session; records stay in the spool. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.session?.close("agent stopping");
    this.wake?.();
    this.setState("stopped");
    await this.running;
  }

  get currentSession(): CollectorSession | undefined {
    return this.session;
  }
}
