// Group commit: frames from every connection queue here and are written to the store in one
// transaction per batch (when batch_max_rows rows wait, or batch_max_delay_ms after the first
// frame, or at once when the previous commit ends with frames waiting). Only after COMMIT returns
// are the frames acknowledged, each to the connection it came on. A failed commit acknowledges
// nothing and closes every connection that had frames in the batch, so no connection goes on past
// a frame that was not stored (the ordering the store's deduplication relies on).
import type { Logger } from "@shadowvm/shared";
import type { CollectorMetrics } from "../metrics/collector-metrics.js";
import type { IngestStore } from "../store/ingest-store.js";
import type { IngestFrame } from "./ingest-frame.js";

/** What the writer needs from a connection. */
export interface FrameSource {
  readonly id: number;
  /** Called after the commit with the frames' (epoch, seq) ranges, in arrival order. */
  acknowledge(
    ranges: { epoch: number; first_seq: number; last_seq: number }[],
    frames: number,
    bytes: number,
  ): void;
  /** Called when the batch holding some of its frames could not be committed. */
  commitFailed(reason: string, frames: number, bytes: number): void;
}

interface Queued {
  source: FrameSource;
  frame: IngestFrame;
}

export interface BatchWriterOptions {
  store: IngestStore;
  metrics: CollectorMetrics;
  logger: Logger;
  maxRows: number;
  maxDelayMs: number;
  /** Called after every commit attempt, with its outcome, and after every enqueue (backpressure). */
  onChange?(): void;
}

export class BatchWriter {
  private queue: Queued[] = [];
  private queuedRows = 0;
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** The last commit failed (readiness). */
  lastCommitFailed = false;

  constructor(private readonly options: BatchWriterOptions) {}

  get pendingFrames(): number {
    return this.queue.length;
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  enqueue(source: FrameSource, frame: IngestFrame): void {
    this.queue.push({ source, frame });
    this.queuedRows += frame.records;
    this.queuedBytes += frame.bytes;
    this.options.metrics.pendingFrames.set(this.queue.length);
    this.options.metrics.pendingBytes.set(this.queuedBytes);
    this.options.onChange?.();
    this.schedule();
  }

  private schedule(): void {
    if (this.running || this.queue.length === 0) return;
    if (this.queuedRows >= this.options.maxRows) {
      this.start();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.start(), this.options.maxDelayMs);
    }
  }

  private start(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.running || this.queue.length === 0) return;
    this.running = this.commitQueued().finally(() => {
      this.running = undefined;
      // Frames that arrived during the commit have waited long enough: go again at once.
      if (this.queue.length > 0) setImmediate(() => this.start());
    });
  }

  /** Takes up to maxRows rows' worth of frames (at least one frame) off the queue. */
  private take(): Queued[] {
    let rows = 0;
    let n = 0;
    while (n < this.queue.length && (n === 0 || rows < this.options.maxRows)) {
      rows += this.queue[n]!.frame.records;
      n++;
    }
    const batch = this.queue.slice(0, n);
    this.queue = this.queue.slice(n);
    this.queuedRows -= rows;
    for (const q of batch) this.queuedBytes -= q.frame.bytes;
    return batch;
  }

  private async commitQueued(): Promise<void> {
    const { store, metrics, logger } = this.options;
    const batch = this.take();
    const bySource = new Map<FrameSource, { items: Queued[]; bytes: number }>();
    for (const q of batch) {
      let entry = bySource.get(q.source);
      if (!entry) {
        entry = { items: [], bytes: 0 };
        bySource.set(q.source, entry);
      }
      entry.items.push(q);
      entry.bytes += q.frame.bytes;
    }
    try {
      const outcome = await store.commit(batch.map((q) => q.frame));
      this.lastCommitFailed = false;
      metrics.commitDuration.observe(outcome.durationMs / 1000);
      metrics.commitFrames.observe(batch.length);
      metrics.framesDuplicate.inc(outcome.duplicates);
      batch.forEach((q, i) => {
        if (outcome.fresh[i]) metrics.framesCommitted.inc({ kind: q.frame.kind });
      });
      for (const [table, n] of Object.entries(outcome.rows)) metrics.rowsWritten.inc({ table }, n);
      for (const [source, { items, bytes }] of bySource) {
        const ranges: { epoch: number; first_seq: number; last_seq: number }[] = [];
        for (const { frame } of items) {
          const { epoch, seq } = frame;
          const last = ranges.at(-1);
          if (last && last.epoch === epoch && last.last_seq + 1 === seq) last.last_seq = seq;
          else ranges.push({ epoch, first_seq: seq, last_seq: seq });
        }
        source.acknowledge(ranges, items.length, bytes);
      }
    } catch (err) {
      this.lastCommitFailed = true;
      metrics.error("commit_failed", "store");
      logger.error(
        { err, frames: batch.length, connections: bySource.size },
        "ingest: commit failed; closing the connections whose frames were in the batch (their agents resend)",
      );
      for (const [source, { items, bytes }] of bySource) {
        source.commitFailed((err as Error).message, items.length, bytes);
      }
    } finally {
      metrics.pendingFrames.set(this.queue.length);
      metrics.pendingBytes.set(this.queuedBytes);
      this.options.onChange?.();
    }
  }

  /** Commits everything queued (graceful shutdown). */
  async flush(): Promise<void> {
    for (;;) {
      if (this.running) await this.running;
      else if (this.queue.length > 0) this.start();
      else return;
    }
  }

  /**
   * Stops the timer. Frames still queued stay queued (flush() commits them): frames of a connection
   * that closed meanwhile are valid and are committed too; only their acknowledgement is lost.
   */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
