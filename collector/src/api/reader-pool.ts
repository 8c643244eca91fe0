// Read connections for the API and the reports. DuckDB allows one process to open the database for
// writing, and the collector is that process, so readers take extra connections of the collector's
// own instance (IngestStore.connectReader): MVCC gives each query a consistent snapshot of what was
// committed, and a reader never waits for an ingest transaction (nor the other way round). A
// connection runs one query at a time, so queries take one from a small pool and queue beyond it.
import type { DuckDBConnection, DuckDBValue } from "@duckdb/node-api";

export interface Queryable {
  query(sql: string, values?: DuckDBValue[]): Promise<Record<string, unknown>[]>;
}

export class ReaderPool implements Queryable {
  private readonly idle: DuckDBConnection[] = [];
  private readonly waiting: ((c: DuckDBConnection) => void)[] = [];
  private closed = false;

  private constructor(private readonly all: DuckDBConnection[]) {
    this.idle.push(...all);
  }

  static async create(connect: () => Promise<DuckDBConnection>, size = 4): Promise<ReaderPool> {
    const conns: DuckDBConnection[] = [];
    for (let i = 0; i < size; i++) conns.push(await connect());
    return new ReaderPool(conns);
  }

  private acquire(): Promise<DuckDBConnection> {
    const c = this.idle.pop();
    if (c) return Promise.resolve(c);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(c: DuckDBConnection): void {
    const next = this.waiting.shift();
    if (next) next(c);
    else this.idle.push(c);
  }

  /** Rows as plain JS values (BIGINT as bigint, JSON and VARCHAR as strings). */
  async query(sql: string, values?: DuckDBValue[]): Promise<Record<string, unknown>[]> {
    if (this.closed) throw new Error("reader pool is closed");
    const c = await this.acquire();
    try {
      return (await c.runAndReadAll(sql, values)).getRowObjectsJS() as Record<string, unknown>[];
    } finally {
      this.release(c);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.all) c.closeSync();
  }
}
