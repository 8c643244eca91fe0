// Compaction: gives the space of deleted rows back to the file system. DuckDB reuses the blocks of
// deleted rows but never shrinks its file (docs/benchmarks-telemetry.md, "Retention"), so after a
// retention was lowered the file stays at its high-water mark. Compaction copies the database into
// a new file (COPY FROM DATABASE: tables, constraints, indexes, views), checks every table's row
// count, and renames the copy over the original. It needs the collector stopped (DuckDB lets one
// process write the file) and room for the copy beside the original.
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statfsSync,
  statSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { createError } from "@shadowvm/shared";

export interface CompactResult {
  path: string;
  bytes_before: number;
  bytes_after: number;
  /** Rows per table, equal in both files (checked). */
  rows: Record<string, number>;
  duration_ms: number;
}

export interface CompactOptions {
  /** Free bytes in a directory (tests stand in a full disk). */
  freeBytes?: (dir: string) => number;
}

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

function freeBytesOf(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function rowCounts(
  conn: Awaited<ReturnType<DuckDBInstance["connect"]>>,
  catalog: string,
): Promise<Record<string, number>> {
  const tables = (
    await conn.runAndReadAll(
      `SELECT table_name FROM duckdb_tables() WHERE database_name = ${sqlString(catalog)} ORDER BY 1`,
    )
  ).getRowObjectsJS();
  const counts: Record<string, number> = {};
  for (const t of tables) {
    const name = String(t["table_name"]);
    const [row] = (
      await conn.runAndReadAll(`SELECT count(*) AS n FROM ${catalog}."${name}"`)
    ).getRowObjectsJS();
    counts[name] = Number(row?.["n"]);
  }
  return counts;
}

/**
 * Rewrites the database at `path` without the space of deleted rows. Refuses while another process
 * (a running collector) has it open, and when the directory has less free space than the file.
 * The original is replaced only after the copy's row counts matched; on any failure it is left as
 * it was and the partial copy removed.
 */
export async function compactDatabase(path: string, options: CompactOptions = {}): Promise<CompactResult> {
  const started = performance.now();
  if (!existsSync(path))
    throw createError("store", "no_database", `no collector database at ${path}: nothing to compact`);
  // Opening it for writing proves no collector holds it, keeps one from starting until the copy is
  // in place, and folds a write-ahead log left by a collector that did not stop cleanly into the
  // file (a stale .wal beside the copy would be replayed into it).
  let instance: DuckDBInstance;
  try {
    instance = await DuckDBInstance.create(path);
  } catch (err) {
    const msg = (err as Error).message;
    throw createError(
      "store",
      "busy",
      /lock/i.test(msg)
        ? `cannot compact ${path}: a running collector holds it; stop the collector first (compaction rewrites the file)`
        : `cannot open ${path}: ${msg}`,
      { cause: err },
    );
  }
  const conn = await instance.connect();
  const copy = join(dirname(path), `.${basename(path)}.compact-${process.pid}`);
  const removeCopy = () => {
    rmSync(copy, { force: true });
    rmSync(`${copy}.wal`, { force: true });
  };
  let bytesBefore = 0;
  let rows: Record<string, number>;
  try {
    await conn.run("CHECKPOINT");
    bytesBefore = statSync(path).size;
    const dir = dirname(path);
    const free = (options.freeBytes ?? freeBytesOf)(dir);
    if (free < bytesBefore)
      throw createError(
        "store",
        "no_space",
        `cannot compact ${path}: the copy needs up to ${bytesBefore} bytes free in ${dir}, and ${free} are; free space or move the database to a larger disk`,
      );
    removeCopy();
    const [db] = (await conn.runAndReadAll("SELECT current_database() AS name")).getRowObjectsJS();
    const original = String(db?.["name"]);
    await conn.run(`ATTACH ${sqlString(copy)} AS compacted`);
    await conn.run(`COPY FROM DATABASE "${original}" TO compacted`);
    rows = await rowCounts(conn, original);
    const copied = await rowCounts(conn, "compacted");
    const differ = Object.keys({ ...rows, ...copied }).filter((t) => rows[t] !== copied[t]);
    if (differ.length)
      throw createError(
        "store",
        "compact_mismatch",
        `compaction of ${path} stopped: the copy's row counts differ in ${differ.map((t) => `${t} (${rows[t]} vs ${copied[t]})`).join(", ")}; the original is unchanged`,
      );
    await conn.run("DETACH compacted"); // checkpoints the copy: no .wal of it remains
  } catch (err) {
    conn.closeSync();
    instance.closeSync();
    removeCopy();
    throw err;
  }
  conn.closeSync();
  instance.closeSync();
  fsyncPath(copy);
  renameSync(copy, path);
  fsyncPath(dirname(path));
  return {
    path,
    bytes_before: bytesBefore,
    bytes_after: statSync(path).size,
    rows,
    duration_ms: performance.now() - started,
  };
}
