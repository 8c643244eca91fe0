// The collector's DuckDB store and its ingest invariants.
//
// Exactly-once from at-least-once: agents resend every frame the collector has not acknowledged,
// so the store sees frames again after a reconnect or a collector crash. Each agent frame carries
// (agent_id, epoch, seq); within one (agent_id, epoch) stream an agent sends its frames in
// increasing seq order on every connection, and a connection's frames are committed in the order
// they arrived (one writer, batches in arrival order, a failed batch closes every connection that
// had frames in it). So when seq N is committed, every frame of that stream with a smaller seq the
// agent still held was committed too, and "committed" is one number per stream: the high-water
// mark in ingest_streams.committed_seq. A frame with seq <= the mark (or <= a frame earlier in the
// same batch) is a duplicate: it is acknowledged, never written. Gaps (frames the agent's spool
// dropped when full) are fine: they are simply never sent.
//
// Atomicity: a batch of frames is one DuckDB transaction: its rows, one ingest_frames row per
// frame (primary key (agent_id, epoch, seq): a bug in the mark would fail the batch, not duplicate
// rows) and the new marks. The in-memory marks change only after COMMIT returned, and only then
// are acknowledgements sent, so an acknowledged frame is durable (DuckDB syncs its WAL on commit)
// and a crash before COMMIT leaves nothing of the batch behind.
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import {
  type DuckDBAppender,
  type DuckDBConnection,
  DuckDBInstance,
  type DuckDBPreparedStatement,
  type DuckDBValue,
} from "@duckdb/node-api";
import {
  createError,
  type Logger,
  ShadowvmError,
  shadowvm,
  silentLogger,
  stressProfileFromProto,
} from "@shadowvm/shared";
import type { IngestFrame } from "../ingest/ingest-frame.js";
import { MIGRATIONS } from "./migrations.js";
import { SampleAppender } from "./sample-appender.js";

/** Where an agent stream can resume: every seq <= committed_seq of this epoch is committed. */
export interface StreamPoint {
  epoch: number;
  committed_seq: number;
}

export type StoreTable =
  | "samples"
  | "hosts"
  | "vms"
  | "captures"
  | "shadow_runs"
  | "failures"
  | "signatures"
  | "production_events"
  | "ingest_frames";

export type { IngestFrame } from "../ingest/ingest-frame.js";

export interface CommitOutcome {
  /** Per input frame, in order: true = written now, false = a duplicate (already committed). */
  fresh: boolean[];
  newFrames: number;
  duplicates: number;
  rows: Partial<Record<StoreTable, number>>;
  durationMs: number;
}

/** "VM_STATE_RUNNING" -> "running". */
function enumName(values: object, value: number | null | undefined, prefix: string): string {
  const name = (values as Record<number, string | undefined>)[value ?? 0];
  return name ? name.slice(prefix.length).toLowerCase() : String(value ?? 0);
}

/** Decoded messages as plain objects with 64-bit integers as numbers (their toJSON writes strings). */
const JSON_OPTIONS = { longs: Number, enums: String, json: true } as const;
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  const ctor = (v as { constructor?: { toObject?: (m: unknown, o: object) => unknown } } | null)?.constructor;
  return v !== null && typeof v === "object" && typeof ctor?.toObject === "function"
    ? ctor.toObject(v, JSON_OPTIONS)
    : v;
}
const json = (v: unknown): string => JSON.stringify(plain(v) ?? null);
const num = (v: number | null | undefined): number => v ?? 0;
const str = (v: string | null | undefined): string => v ?? "";

function streamKey(agentId: string, epoch: number): string {
  return `${agentId}\u0000${epoch}`;
}

const SQL = {
  host: "INSERT OR REPLACE INTO hosts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
  vm: "INSERT OR REPLACE INTO vms VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
  capture:
    "INSERT OR REPLACE INTO captures VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
  shadowRun:
    "INSERT OR REPLACE INTO shadow_runs VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
  failure:
    "INSERT OR IGNORE INTO failures VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
  productionEvent:
    "INSERT OR IGNORE INTO production_events VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
  signature: "INSERT OR REPLACE INTO signatures VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
  stream: `INSERT INTO ingest_streams VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (agent_id, epoch) DO UPDATE SET
      committed_seq = greatest(ingest_streams.committed_seq, excluded.committed_seq),
      frames = ingest_streams.frames + excluded.frames,
      updated_at_ms = excluded.updated_at_ms`,
} as const;

type Statements = { -readonly [K in keyof typeof SQL]: DuckDBPreparedStatement };

/** Stable id of a failure: the same failure sent alone and inside its ShadowRun is stored once. */
export function failureId(agentId: string, shadowRunId: string, f: shadowvm.v1.IFailure): string {
  return createHash("sha256")
    .update(
      JSON.stringify([
        agentId,
        shadowRunId,
        str(f.fingerprint),
        num(f.offset_ms),
        num(f.source),
        str(f.title),
      ]),
    )
    .digest("hex")
    .slice(0, 32);
}

/** Stable id of a production event: its content, so a resent event is stored once. */
export function productionEventId(agentId: string, e: shadowvm.v1.IProductionEvent): string {
  return createHash("sha256")
    .update(
      JSON.stringify([
        agentId,
        str(e.vm_uuid),
        num(e.ts_ms),
        num(e.kind),
        str(e.fingerprint),
        str(e.pattern),
        str(e.line),
      ]),
    )
    .digest("hex")
    .slice(0, 32);
}

function profileJson(profile: shadowvm.v1.IStressProfile | null | undefined): string | null {
  if (!profile) return null;
  try {
    return json(stressProfileFromProto(profile));
  } catch {
    return json(profile); // validated on decode; keep what came if the JSON form refuses it
  }
}

export interface StoreOptions {
  logger?: Logger;
  /** DuckDB threads (default: DuckDB's choice, the number of cores). */
  threads?: number;
}

export class IngestStore {
  private readonly streams = new Map<string, number>();
  private committing = false;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly instance: DuckDBInstance,
    private readonly conn: DuckDBConnection,
    private readonly logger: Logger,
    private samples: SampleAppender,
    private frames: DuckDBAppender,
    private readonly stmts: Statements,
    readonly schemaVersion: number,
  ) {}

  /** Opens (creating if needed) the database, migrates it and loads the streams' marks. */
  static async open(path: string, options: StoreOptions = {}): Promise<IngestStore> {
    const logger = options.logger ?? silentLogger();
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    let instance: DuckDBInstance;
    try {
      instance = await DuckDBInstance.create(
        path,
        options.threads ? { threads: String(options.threads) } : undefined,
      );
    } catch (err) {
      const msg = (err as Error).message;
      const hint = /lock/i.test(msg) ? " (another process, e.g. a running collector, has it open)" : "";
      throw createError("store", "open_failed", `cannot open DuckDB database ${path}${hint}: ${msg}`, {
        cause: err,
      });
    }
    const conn = await instance.connect();
    try {
      const version = await migrate(conn, logger);
      const stmts = {} as Statements;
      for (const [name, sql] of Object.entries(SQL)) {
        stmts[name as keyof Statements] = await conn.prepare(sql);
      }
      const samples = await SampleAppender.create(conn);
      const frames = await conn.createAppender("ingest_frames");
      const store = new IngestStore(path, instance, conn, logger, samples, frames, stmts, version);
      const rows = (
        await conn.runAndReadAll("SELECT agent_id, epoch, committed_seq FROM ingest_streams")
      ).getRowObjectsJS();
      for (const r of rows) {
        store.streams.set(streamKey(String(r["agent_id"]), Number(r["epoch"])), Number(r["committed_seq"]));
      }
      return store;
    } catch (err) {
      conn.closeSync();
      instance.closeSync();
      throw err;
    }
  }

  /** The agent's streams, newest epoch first (AuthResult.resume). */
  resumePoints(agentId: string): StreamPoint[] {
    const prefix = `${agentId}\u0000`;
    const points: StreamPoint[] = [];
    for (const [key, committed] of this.streams) {
      if (key.startsWith(prefix))
        points.push({ epoch: Number(key.slice(prefix.length)), committed_seq: committed });
    }
    return points.sort((a, b) => b.epoch - a.epoch);
  }

  /** The high-water mark of one stream (0 = nothing committed). */
  committedSeq(agentId: string, epoch: number): number {
    return this.streams.get(streamKey(agentId, epoch)) ?? 0;
  }

  /**
   * Writes the frames that are new in one transaction and tells, per frame, whether it was new.
   * Throws a ShadowvmError (origin "store", code "commit_failed") when nothing was committed.
   */
  async commit(batch: readonly IngestFrame[]): Promise<CommitOutcome> {
    if (this.closed) throw createError("store", "closed", "the store is closed");
    if (this.committing) throw createError("store", "busy", "commit() called while another commit runs");
    this.committing = true;
    const started = performance.now();
    const marks = new Map<string, number>();
    const counts = new Map<string, number>();
    const fresh: boolean[] = [];
    const rows: Partial<Record<StoreTable, number>> = {};
    const add = (t: StoreTable, n = 1) => {
      rows[t] = (rows[t] ?? 0) + n;
    };
    const now = Date.now();
    try {
      await this.conn.run("BEGIN TRANSACTION");
      // Upserts keyed the same way in one batch keep only the newest (the frame with the highest seq
      // comes last), so DuckDB never updates one key twice in one transaction.
      const upserts = new Map<
        string,
        { stmt: DuckDBPreparedStatement; values: DuckDBValue[]; table: StoreTable }
      >();
      const failures = new Map<string, DuckDBValue[]>();
      const events = new Map<string, DuckDBValue[]>();
      for (const f of batch) {
        const key = streamKey(f.agentId, f.epoch);
        const mark = Math.max(marks.get(key) ?? 0, this.streams.get(key) ?? 0);
        if (f.seq <= mark) {
          fresh.push(false);
          continue;
        }
        fresh.push(true);
        marks.set(key, f.seq);
        counts.set(key, (counts.get(key) ?? 0) + 1);
        this.frames.appendVarchar(f.agentId);
        this.frames.appendUBigInt(BigInt(f.epoch));
        this.frames.appendUBigInt(BigInt(f.seq));
        this.frames.appendVarchar(f.kind);
        this.frames.appendUInteger(f.records);
        this.frames.appendUInteger(f.bytes);
        this.frames.appendBigInt(BigInt(f.sentAtMs));
        this.frames.appendBigInt(BigInt(now));
        this.frames.endRow();
        add("ingest_frames");
        this.rowsOf(f, now, upserts, failures, events, add);
      }
      this.samples.flush();
      this.frames.flushSync();
      for (const { stmt, values, table } of upserts.values()) {
        stmt.bind(values);
        await stmt.run();
        add(table);
      }
      for (const values of failures.values()) {
        this.stmts.failure.bind(values);
        await this.stmts.failure.run();
        add("failures");
      }
      for (const values of events.values()) {
        this.stmts.productionEvent.bind(values);
        await this.stmts.productionEvent.run();
        add("production_events");
      }
      for (const [key, seq] of marks) {
        const [agentId, epoch] = key.split("\u0000") as [string, string];
        this.stmts.stream.bind([
          agentId,
          BigInt(epoch),
          BigInt(seq),
          BigInt(counts.get(key) ?? 0),
          BigInt(now),
        ]);
        await this.stmts.stream.run();
      }
      await this.conn.run("COMMIT");
    } catch (err) {
      await this.recover();
      this.committing = false;
      throw new ShadowvmError(
        "store",
        "commit_failed",
        `committing ${batch.length} frame(s) failed, nothing of them was stored: ${(err as Error).message}`,
        { cause: err },
      );
    }
    for (const [key, seq] of marks) this.streams.set(key, seq);
    this.committing = false;
    const newFrames = fresh.filter(Boolean).length;
    return {
      fresh,
      newFrames,
      duplicates: fresh.length - newFrames,
      rows,
      durationMs: performance.now() - started,
    };
  }

  /** Turns one new frame into rows: samples are appended now, the rest collected as upserts. */
  private rowsOf(
    f: IngestFrame,
    now: number,
    upserts: Map<string, { stmt: DuckDBPreparedStatement; values: DuckDBValue[]; table: StoreTable }>,
    failures: Map<string, DuckDBValue[]>,
    events: Map<string, DuckDBValue[]>,
    add: (t: StoreTable, n?: number) => void,
  ): void {
    const a = f.agentId;
    const s = this.stmts;
    // The body is a plain object (ingest-frame.ts): unset fields are absent, hence the defaults.
    const body = f.body as never;
    const put = (table: StoreTable, key: string, stmt: DuckDBPreparedStatement, values: DuckDBValue[]) =>
      upserts.set(`${table}\u0000${key}`, { stmt, values, table });
    const addFailure = (runId: string, f: shadowvm.v1.IFailure) => {
      const id = failureId(a, runId, f);
      failures.set(id, [
        id,
        a,
        runId,
        str(f.title),
        str(f.class),
        str(f.frame),
        str(f.fingerprint),
        f.corrupted ?? false,
        json(f.evidence ?? []),
        num(f.offset_ms),
        enumName(shadowvm.v1.FailureSource, f.source, "FAILURE_SOURCE_"),
        now,
        json(f.precursors ?? []),
        f.primary ?? false,
      ]);
    };
    switch (f.kind) {
      case "telemetry_batch": {
        if (f.samples && f.samples.n > 0) {
          this.samples.add(a, f.samples);
          add("samples", f.samples.n);
        }
        return;
      }
      case "host_inventory": {
        const h: shadowvm.v1.IHostInventory = body;
        put("hosts", a, s.host, [
          a,
          str(h.hostname),
          num(h.cpus),
          num(h.memory_bytes),
          str(h.kernel),
          str(h.hypervisor_driver),
          str(h.hypervisor_version),
          json(h.capabilities ?? []),
          json(h.vm_uuids ?? []),
          now,
        ]);
        return;
      }
      case "vm_inventory": {
        const v: shadowvm.v1.IVmInventory = body;
        put("vms", `${a}\u0000${v.uuid}`, s.vm, [
          a,
          str(v.uuid),
          str(v.name),
          enumName(shadowvm.v1.VmState, v.state, "VM_STATE_"),
          num(v.vcpus),
          num(v.memory_mb),
          str(v.machine_type),
          json(v.disks ?? []),
          json(v.nics ?? []),
          json(v.qemu_cmdline ?? []),
          num(v.pid),
          json(v.labels ?? {}),
          now,
        ]);
        return;
      }
      case "capture_record": {
        const c: shadowvm.v1.ICaptureRecord = body;
        put("captures", `${a}\u0000${c.id}`, s.capture, [
          a,
          str(c.id),
          str(c.vm_name),
          str(c.vm_uuid),
          num(c.started_at_ms),
          num(c.finished_at_ms),
          num(c.pause_ms),
          num(c.memory_bytes),
          num(c.disk_bytes),
          num(c.stored_bytes),
          num(c.new_bytes),
          json(c.disks ?? []),
          str(c.config_digest),
          enumName(shadowvm.v1.CaptureStatus, c.status, "CAPTURE_STATUS_"),
          str(c.error),
          now,
        ]);
        return;
      }
      case "shadow_run": {
        const r: shadowvm.v1.IShadowRun = body;
        const runId = str(r.id);
        put("shadow_runs", `${a}\u0000${runId}`, s.shadowRun, [
          a,
          runId,
          str(r.campaign_id),
          str(r.capture_id),
          str(r.vm_name),
          str(r.vm_uuid),
          profileJson(r.profile),
          str(r.strategy),
          r.control ?? false,
          num(r.started_at_ms),
          num(r.finished_at_ms),
          enumName(shadowvm.v1.Outcome, r.outcome, "OUTCOME_"),
          r.failures?.length ?? 0,
          json(r.notes ?? []),
          now,
        ]);
        for (const f of r.failures ?? []) addFailure(runId, f);
        return;
      }
      case "failure": {
        const failure: shadowvm.v1.IFailure = body;
        addFailure(str(failure.shadow_run_id), failure);
        return;
      }
      case "signature_update": {
        const g: shadowvm.v1.ISignatureUpdate = body;
        put("signatures", `${a}\u0000${g.fingerprint}`, s.signature, [
          a,
          str(g.fingerprint),
          str(g.title),
          str(g.class),
          num(g.first_seen_ms),
          num(g.last_seen_ms),
          num(g.count),
          json(g.vms ?? []),
          json((g.profiles ?? []).map((p) => JSON.parse(profileJson(p) ?? "null"))),
          now,
        ]);
        return;
      }
      case "production_event": {
        const e: shadowvm.v1.IProductionEvent = body;
        const id = productionEventId(a, e);
        events.set(id, [
          id,
          a,
          str(e.vm_uuid),
          str(e.vm_name),
          num(e.ts_ms),
          enumName(shadowvm.v1.ProductionEventKind, e.kind, "PRODUCTION_EVENT_KIND_"),
          str(e.fingerprint),
          str(e.title),
          str(e.class),
          str(e.line),
          str(e.pattern),
          num(e.suppressed),
          now,
          num(e.precursor_runs_with),
          num(e.precursor_runs_without),
        ]);
        return;
      }
      default:
        throw createError("store", "invalid", `frame ${f.epoch}/${f.seq} has no data body (${f.kind})`);
    }
  }

  /** After a failed transaction: roll back and reopen the appenders (a failed flush invalidates them). */
  private async recover(): Promise<void> {
    try {
      await this.conn.run("ROLLBACK");
    } catch {
      // No transaction open (BEGIN failed) or DuckDB already rolled it back.
    }
    try {
      await this.samples.reset();
      try {
        this.frames.closeSync();
      } catch {
        // Invalid after a failed flush.
      }
      this.frames = await this.conn.createAppender("ingest_frames");
    } catch (err) {
      this.logger.error({ err }, "store: cannot reopen appenders after a failed commit");
    }
  }

  /**
   * A new connection to the same database instance, for readers (the HTTP API, reports): DuckDB's
   * MVCC lets it read committed data while the ingest connection writes, without a second process.
   */
  async connectReader(): Promise<DuckDBConnection> {
    return this.instance.connect();
  }

  /** Runs a read query (tests, CLI); rows as plain JS values. */
  async query(sql: string, values?: DuckDBValue[]): Promise<Record<string, unknown>[]> {
    const reader = await this.conn.runAndReadAll(sql, values);
    return reader.getRowObjectsJS() as Record<string, unknown>[];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.samples.close();
      this.frames.closeSync();
    } catch (err) {
      this.logger.warn({ err }, "store: closing appenders failed");
    }
    this.conn.closeSync();
    this.instance.closeSync();
  }
}

/** Applies the migrations the database lacks, each in its own transaction; returns the version. */
export async function migrate(conn: DuckDBConnection, logger: Logger = silentLogger()): Promise<number> {
  await conn.run(
    `CREATE TABLE IF NOT EXISTS schema_version (
      version INTEGER PRIMARY KEY,
      name VARCHAR NOT NULL,
      applied_at_ms BIGINT NOT NULL
    )`,
  );
  const rows = (await conn.runAndReadAll("SELECT max(version) AS v FROM schema_version")).getRowObjectsJS();
  let current = Number(rows[0]?.["v"] ?? 0);
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  if (current > latest) {
    throw createError(
      "store",
      "schema_too_new",
      `the database is at schema version ${current}, newer than this collector knows (${latest}); run a newer collector`,
    );
  }
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    await conn.run("BEGIN TRANSACTION");
    try {
      for (const sql of m.statements) await conn.run(sql);
      await conn.run("INSERT INTO schema_version VALUES ($1, $2, $3)", [m.version, m.name, Date.now()]);
      await conn.run("COMMIT");
    } catch (err) {
      await conn.run("ROLLBACK").catch(() => {});
      throw createError(
        "store",
        "migration_failed",
        `migration ${m.version} (${m.name}) failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    logger.info({ version: m.version, name: m.name }, "store: applied migration");
    current = m.version;
  }
  return current;
}

/** A read-only view of a collector database (for tests and offline inspection). */
export async function openReadOnly(path: string): Promise<{
  query(sql: string, values?: DuckDBValue[]): Promise<Record<string, unknown>[]>;
  close(): void;
}> {
  const instance = await DuckDBInstance.create(path, { access_mode: "READ_ONLY" });
  const conn = await instance.connect();
  return {
    async query(sql, values) {
      return (await conn.runAndReadAll(sql, values)).getRowObjectsJS() as Record<string, unknown>[];
    },
    close() {
      conn.closeSync();
      instance.closeSync();
    },
  };
}
