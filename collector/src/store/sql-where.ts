// WHERE clauses from optional filters, every value a bound parameter ($n): the read queries of the
// API, the CLI and the risk engine build their conditions with it, never by pasting values in.
import type { DuckDBValue } from "@duckdb/node-api";

export class Where {
  readonly parts: string[] = [];
  readonly values: DuckDBValue[] = [];

  /** Adds `fragment($n)` with `value` bound as $n; an undefined value adds nothing. */
  add(fragment: (p: string) => string, value: DuckDBValue | undefined): this {
    if (value === undefined) return this;
    this.values.push(value);
    this.parts.push(fragment(`$${this.values.length}`));
    return this;
  }

  sql(): string {
    return this.parts.length ? `WHERE ${this.parts.join(" AND ")}` : "";
  }

  /** `LIMIT $n OFFSET $m` with both bound. */
  limit(limit: number, offset: number): string {
    this.values.push(limit, offset);
    return `LIMIT $${this.values.length - 1} OFFSET $${this.values.length}`;
  }

  /** A page's LIMIT: one row more than the page, to tell whether another page follows. */
  page(p: { limit: number; offset: number }): string {
    return this.limit(p.limit + 1, p.offset);
  }
}
