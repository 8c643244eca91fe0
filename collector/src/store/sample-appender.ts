// Writes telemetry samples through the DuckDB Appender a data chunk at a time: the columns of up
// to 2048 rows are filled in JavaScript typed arrays and handed to DuckDB in one call per column,
// which is about twice as fast as appending value by value (docs/benchmarks-telemetry.md).

import { endianness } from "node:os";
import {
  BIGINT,
  DOUBLE,
  type DuckDBAppender,
  type DuckDBConnection,
  DuckDBDataChunk,
  type DuckDBVector,
  UBIGINT,
  UTINYINT,
  VARCHAR,
} from "@duckdb/node-api";
import { COUNTERS, type SampleColumns } from "../ingest/ingest-frame.js";

/** DuckDB's STANDARD_VECTOR_SIZE: the most rows one data chunk holds. */
export const CHUNK_ROWS = 2048;

/** Column order of the samples table (collector/src/store/migrations.ts). */
export const SAMPLE_COLUMNS = [
  "agent_id",
  "scope",
  "vm_uuid",
  "ts_ms",
  "cpu_usage",
  ...COUNTERS,
  "extra",
] as const;

/** The DuckDB type of each column of SAMPLE_COLUMNS. */
const TYPES = [VARCHAR, UTINYINT, VARCHAR, BIGINT, DOUBLE, ...COUNTERS.map(() => UBIGINT), VARCHAR];

type U64Writer = (row: number, value: number) => void;
const LITTLE_ENDIAN = endianness() === "LE";

/**
 * A writer of non-negative safe integers into a BIGINT/UBIGINT vector. The vector keeps its items in
 * a 64-bit typed array; writing the two 32-bit halves through a Uint32Array view of it skips a
 * BigInt per value (about a third of the JavaScript time per row). Falls back to setItem(BigInt)
 * when the vector does not look as expected (another @duckdb/node-api version).
 */
function u64Writer(vector: DuckDBVector): U64Writer {
  const items = (vector as unknown as { items?: unknown }).items;
  if (
    LITTLE_ENDIAN &&
    (items instanceof BigUint64Array || items instanceof BigInt64Array) &&
    items.length >= CHUNK_ROWS
  ) {
    const halves = new Uint32Array(items.buffer, items.byteOffset, items.length * 2);
    return (row, value) => {
      if (value < 0) return vector.setItem(row, BigInt(value)); // two's complement: leave it to BigInt
      halves[2 * row] = value >>> 0;
      halves[2 * row + 1] = (value / 4294967296) >>> 0;
    };
  }
  return (row, value) => vector.setItem(row, BigInt(value));
}

/** Appends samples into `table` (default "samples") on the connection's current transaction. */
export class SampleAppender {
  private readonly chunk = DuckDBDataChunk.create(TYPES, CHUNK_ROWS);
  private vectors: DuckDBVector[] = [];
  private u64: U64Writer[] = [];
  private rows = 0;
  private appender: DuckDBAppender | undefined;

  private constructor(
    private readonly connection: DuckDBConnection,
    private readonly table: string,
  ) {
    this.startChunk();
  }

  /**
   * Vector wrappers view DuckDB's memory of the current chunk; a reset may move it, so they are
   * fetched again for every chunk (with the full row count, so every row index is writable).
   */
  private startChunk(): void {
    this.chunk.reset();
    this.chunk.rowCount = CHUNK_ROWS;
    this.vectors = TYPES.map((_, i) => this.chunk.getColumnVector(i));
    // ts_ms, then the counters
    this.u64 = [3, ...COUNTERS.map((_, c) => 5 + c)].map((i) => u64Writer(this.vectors[i]!));
    this.rows = 0;
  }

  static async create(connection: DuckDBConnection, table = "samples"): Promise<SampleAppender> {
    const a = new SampleAppender(connection, table);
    a.appender = await connection.createAppender(table);
    return a;
  }

  /** Adds one frame's samples (columns, see ingest-frame.ts); call flush() before committing. */
  add(agentId: string, cols: SampleColumns): void {
    const n = cols.n;
    let v = this.vectors;
    let u = this.u64;
    for (let i = 0; i < n; i++) {
      const r = this.rows;
      v[0]!.setItem(r, agentId);
      v[1]!.setItem(r, cols.scope[i]!);
      v[2]!.setItem(r, cols.vmUuid[i] ?? null);
      u[0]!(r, cols.ts[i]!);
      v[4]!.setItem(r, cols.cpu[i]!);
      for (let c = 0; c < COUNTERS.length; c++) u[1 + c]!(r, cols.counters[c * n + i]!);
      v[18]!.setItem(r, cols.extra[i] ?? null);
      this.rows = r + 1;
      if (this.rows === CHUNK_ROWS) {
        this.appendChunk();
        v = this.vectors;
        u = this.u64;
      }
    }
  }

  private appendChunk(): void {
    if (this.rows === 0) return;
    for (const vector of this.vectors) vector.flush();
    this.chunk.rowCount = this.rows;
    this.appender!.appendDataChunk(this.chunk);
    this.startChunk();
  }

  /** Hands everything added so far to DuckDB (inside the open transaction). */
  flush(): void {
    this.appendChunk();
    this.appender!.flushSync();
  }

  /** Forgets rows not yet flushed and reopens the appender (after a failed transaction). */
  async reset(): Promise<void> {
    this.startChunk();
    try {
      this.appender?.closeSync();
    } catch {
      // An appender whose flush failed is invalid; closing it may throw the same error again.
    }
    this.appender = await this.connection.createAppender(this.table);
  }

  close(): void {
    try {
      this.appender?.closeSync();
    } finally {
      this.appender = undefined;
    }
  }
}
