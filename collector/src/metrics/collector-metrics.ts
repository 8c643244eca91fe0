// The collector's Prometheus metrics: one registry per service instance (tests run several in one
// process). Names follow shadowvm_collector_<thing>_<unit>; every error is counted once in
// errors_total with the error_type and the stage it happened in (Vector's internal-event habit).
import { statSync } from "node:fs";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export class CollectorMetrics {
  readonly registry = new Registry();
  readonly framesReceived: Counter<"kind">;
  readonly bytesReceived: Counter;
  readonly framesCommitted: Counter<"kind">;
  readonly framesDuplicate: Counter;
  readonly rowsWritten: Counter<"table">;
  readonly acksSent: Counter;
  readonly framesAcked: Counter;
  readonly framesRejected: Counter<"reason">;
  readonly authFailures: Counter<"reason">;
  readonly enrollments: Counter;
  readonly errors: Counter<"error_type" | "stage">;
  readonly connections: Gauge<"state">;
  readonly pendingFrames: Gauge;
  readonly pendingBytes: Gauge;
  readonly commitDuration: Histogram;
  readonly commitFrames: Histogram;
  readonly retentionRowsDeleted: Counter<"table">;
  readonly retentionLastPrune: Gauge;
  readonly databaseBytes: Gauge<"file">;
  readonly samplesOutOfWindow: Counter<"reason">;
  /** The DuckDB file whose size databaseBytes reports (set by the service once the store is open). */
  databasePath: string | undefined;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const p = "shadowvm_collector_";
    this.framesReceived = new Counter({
      name: `${p}frames_received_total`,
      help: "Frames received from agents that decoded, by body kind",
      labelNames: ["kind"],
      registers,
    });
    this.bytesReceived = new Counter({
      name: `${p}bytes_received_total`,
      help: "Bytes of WebSocket messages received from agents",
      registers,
    });
    this.framesCommitted = new Counter({
      name: `${p}frames_committed_total`,
      help: "Data frames written to the store (first delivery), by body kind",
      labelNames: ["kind"],
      registers,
    });
    this.framesDuplicate = new Counter({
      name: `${p}frames_duplicate_total`,
      help: "Data frames received again after they were committed (acknowledged, not written)",
      registers,
    });
    this.rowsWritten = new Counter({
      name: `${p}rows_written_total`,
      help: "Rows written to the store, by table",
      labelNames: ["table"],
      registers,
    });
    this.acksSent = new Counter({ name: `${p}acks_sent_total`, help: "Ack frames sent", registers });
    this.framesAcked = new Counter({
      name: `${p}frames_acked_total`,
      help: "Data frames acknowledged (after their commit)",
      registers,
    });
    this.framesRejected = new Counter({
      name: `${p}frames_rejected_total`,
      help: "Frames that closed their connection: oversized, truncated, malformed, too_deep, invalid, text, unexpected",
      labelNames: ["reason"],
      registers,
    });
    this.authFailures = new Counter({
      name: `${p}auth_failures_total`,
      help: "Refused handshakes, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.enrollments = new Counter({ name: `${p}enrollments_total`, help: "Agents enrolled", registers });
    this.errors = new Counter({
      name: `${p}errors_total`,
      help: "Errors by type and the stage they happened in",
      labelNames: ["error_type", "stage"],
      registers,
    });
    this.connections = new Gauge({
      name: `${p}connections`,
      help: "Open agent connections by state (handshake, authenticated)",
      labelNames: ["state"],
      registers,
    });
    this.pendingFrames = new Gauge({
      name: `${p}pending_frames`,
      help: "Frames received and not yet committed",
      registers,
    });
    this.pendingBytes = new Gauge({
      name: `${p}pending_bytes`,
      help: "Bytes of frames received and not yet committed",
      registers,
    });
    this.commitDuration = new Histogram({
      name: `${p}commit_duration_seconds`,
      help: "Duration of one store transaction (a batch of frames)",
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.commitFrames = new Histogram({
      name: `${p}commit_frames`,
      help: "Frames per store transaction",
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
      registers,
    });
    this.retentionRowsDeleted = new Counter({
      name: `${p}retention_rows_deleted_total`,
      help: "Rows deleted by retention (retention.*_days), by table",
      labelNames: ["table"],
      registers,
    });
    this.retentionLastPrune = new Gauge({
      name: `${p}retention_last_prune_timestamp_seconds`,
      help: "When the last retention prune completed (0: none since start)",
      registers,
    });
    this.samplesOutOfWindow = new Counter({
      name: `${p}samples_out_of_window_total`,
      help: "Samples received timestamped before the retention (past_retention) or ahead of the collector's clock (future): a host's clock is off",
      labelNames: ["reason"],
      registers,
    });
    const metrics = this;
    this.databaseBytes = new Gauge({
      name: `${p}database_bytes`,
      help: "Size of the DuckDB database file and of its write-ahead log (file=database|wal), read at scrape",
      labelNames: ["file"],
      registers,
      collect() {
        const path = metrics.databasePath;
        if (!path) return;
        for (const [file, name] of [
          ["database", path],
          ["wal", `${path}.wal`],
        ] as const) {
          let bytes = 0;
          try {
            bytes = statSync(name).size;
          } catch {
            // no write-ahead log between checkpoints
          }
          this.set({ file }, bytes);
        }
      },
    });
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: p });
    }
  }

  /** Counts an error once, by type and stage. */
  error(errorType: string, stage: string): void {
    this.errors.inc({ error_type: errorType, stage });
  }
}
