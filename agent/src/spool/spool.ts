// The agent's durable spool: everything the agent sends to the collector (telemetry, inventory,
// captures, shadow runs, failures, signatures) is written here first and sent from here; a record
// leaves the spool only when the collector has acknowledged it (after its own commit), when the
// size cap makes room by dropping old telemetry (counted), or when the collector refuses it for
// good (moved to the dead-letter range, counted).
//
// ## Invariants
//
// 1. `append()` resolves only after the record is on disk: its LevelDB write batch was written with
//    `sync: true` (fsync of LevelDB's log). An agent killed with SIGKILL after `append()` resolved
//    still has the record when it restarts. Concurrent appends share one write (group commit), so
//    the fsync cost is per batch, not per record.
// 2. Records are numbered by (epoch, seq). `epoch` is chosen once, when the spool is created (the
//    wall clock in ms: a spool that lost its files starts a new, larger epoch, and the collector
//    keeps streams apart by epoch); `seq` counts from 1 within the epoch, with no reuse: the next seq
//    is stored in the same write batch as the records that used the previous ones.
// 3. The record's bytes are the final wire frame (an encoded shadowvm.v1.Envelope carrying
//    agent_id, epoch, seq, sent_at_ms and the body), encoded and validated at append time, so a
//    frame is resent byte for byte and the collector's (agent_id, epoch, seq) deduplication holds.
// 4. Records are sent in seq order on every connection. When the collector reports
//    committed_seq = N for our epoch (AuthResult.resume), every record with seq <= N was either
//    committed or dropped here, so `resume()` deletes them all.
// 5. Deleting acknowledged records is not synced: after a crash an acknowledged record may come
//    back and be sent again; the collector recognises it as a duplicate and acknowledges it again.
//
// ## Key format (LevelDB, keys as UTF-8 strings, values as bytes)
//
//   m:format      "1"                      layout version of this file
//   m:agent_id    the agent id             a spool belongs to one agent id (frames carry it)
//   m:epoch       decimal epoch
//   m:next_seq    decimal next seq         written with every append batch
//   r:<seq>       record                   seq as 16 lower-case hex digits, so keys sort by seq
//   d:<seq>       dead letter              a record the collector refused for good, kept for the
//                                          operator (same value layout), never sent again
//
// Record value: [u8 layout = 1][u8 class][u32 big-endian CRC-32 of the frame][frame bytes]. The
// class (telemetry, inventory, capture, shadow_run, failure, signature, production) drives the size
// policy; `production` holds ProductionEvents (precursors and failures seen on production consoles).
//
// ## Recovery
//
// LevelDB replays its own log on open, so every synced batch is there, atomically (records and
// m:next_seq together). `open()` then scans r:* once to rebuild the in-memory index (seq -> size
// and class) that the size policy and the depth metrics use, and checks every CRC: a record whose
// CRC does not match is moved to d:* and counted (spool_corrupt_records_total). A spool whose
// m:agent_id differs from the configured agent id is refused (its frames name the other id): the
// operator moves it aside.
//
// ## When full (spool.max_bytes)
//
// Counted at every step, never silent:
// 1. At `shadow_block_ratio` of max_bytes (default 0.8), `admitShadowWork()` says no: the shadow
//    lab starts no new captures or shadow runs (spool_shadow_work_blocked_total).
// 2. Telemetry and inventory may fill the spool up to max_bytes minus `reserve_ratio` (default
//    0.1); beyond that the oldest telemetry records are dropped to make room
//    (spool_dropped_records_total{class="telemetry",reason="spool_full"}); if there is no
//    telemetry left to drop, the new record is refused (append rejects with code "full").
// 3. Captures, shadow runs, failures and signatures may use the whole max_bytes, dropping oldest
//    telemetry first. They are never dropped: if they still do not fit, append rejects with code
//    "full" (spool_rejected_records_total{class}), the caller keeps the result and logs an ERROR.
import { EventEmitter } from "node:events";
import { mkdirSync } from "node:fs";
import { crc32 } from "node:zlib";
import {
  createError,
  DEFAULT_MAX_FRAME_BYTES,
  type EnvelopeInit,
  encodeFrame,
  type Logger,
  type ShadowvmError,
  silentLogger,
} from "@shadowvm/shared";
import { Level } from "level";

export const SPOOL_FORMAT = 1;

export const SPOOL_CLASSES = [
  "telemetry",
  "inventory",
  "capture",
  "shadow_run",
  "failure",
  "signature",
  "production",
] as const;
export type SpoolClass = (typeof SPOOL_CLASSES)[number];

/** Classes that are never dropped to make room. */
const CRITICAL: ReadonlySet<SpoolClass> = new Set([
  "capture",
  "shadow_run",
  "failure",
  "signature",
  "production",
]);

/** The data bodies an agent sends, and the class each goes into. */
const BODY_CLASS = {
  telemetry_batch: "telemetry",
  host_inventory: "inventory",
  vm_inventory: "inventory",
  capture_record: "capture",
  shadow_run: "shadow_run",
  failure: "failure",
  signature_update: "signature",
  production_event: "production",
} as const satisfies Record<string, SpoolClass>;

export type SpoolBodyKind = keyof typeof BODY_CLASS;

/** Exactly one data body, e.g. `{ telemetry_batch: { samples } }`. */
export type SpoolBody = { [K in SpoolBodyKind]: { [P in K]: NonNullable<EnvelopeInit[P]> } }[SpoolBodyKind];

export interface SpoolRecord {
  epoch: number;
  seq: number;
  cls: SpoolClass;
  /** The encoded frame, ready to send. */
  frame: Uint8Array;
}

export interface AppendReceipt {
  epoch: number;
  seq: number;
  bytes: number;
}

/** Where the spool reports what its size policy and recovery did (the agent's metrics). */
export interface SpoolObserver {
  appended?(cls: SpoolClass): void;
  dropped?(cls: SpoolClass, reason: string, records: number): void;
  rejected?(cls: SpoolClass): void;
  shadowWorkBlocked?(): void;
  corrupt?(records: number): void;
  deadLettered?(cls: SpoolClass): void;
}

export interface SpoolOptions {
  dir: string;
  agentId: string;
  /** Cap on the bytes of pending records (keys + values). */
  maxBytes: number;
  /** Share of maxBytes only captures, shadow runs, failures and signatures may use (default 0.1). */
  reserveRatio?: number;
  /** Share of maxBytes from which new shadow work is refused (default 0.8). */
  shadowBlockRatio?: number;
  maxFrameBytes?: number;
  observer?: SpoolObserver;
  logger?: Logger;
  /** Clock for sent_at_ms and a new spool's epoch. */
  now?: () => number;
}

export interface SpoolStats {
  epoch: number;
  nextSeq: number;
  pendingFrames: number;
  pendingBytes: number;
  byClass: Record<SpoolClass, { frames: number; bytes: number }>;
  deadLetters: number;
}

const seqKey = (seq: number) => `r:${seq.toString(16).padStart(16, "0")}`;
const deadKey = (seq: number) => `d:${seq.toString(16).padStart(16, "0")}`;
const RECORD_RANGE = { gte: "r:", lt: "r;" } as const;
const DEAD_RANGE = { gte: "d:", lt: "d;" } as const;
const HEADER_BYTES = 6;

/** The index packs size and class into one number per record: size * 8 + class index. */
const pack = (size: number, cls: SpoolClass) => size * 8 + SPOOL_CLASSES.indexOf(cls);
const sizeOf = (packed: number) => Math.floor(packed / 8);
const classOf = (packed: number) => SPOOL_CLASSES[packed % 8]!;

export function spoolError(code: string, message: string): ShadowvmError {
  return createError("spool", code, message);
}

type BatchOp = { type: "del"; key: string } | { type: "put"; key: string; value: Uint8Array };

interface Pending {
  seq: number;
  key: string;
  value: Uint8Array;
  packed: number;
  resolve: (r: AppendReceipt) => void;
  reject: (err: Error) => void;
}

export class Spool extends EventEmitter<{ appended: []; changed: [] }> {
  readonly epoch: number;
  private nextSeq: number;
  /** Durable or queued records, in seq order: seq -> packed size/class. */
  private readonly index = new Map<number, number>();
  private bytes = 0;
  private readonly classTotals = new Map<SpoolClass, { frames: number; bytes: number }>();
  private queue: Pending[] = [];
  private drops: string[] = [];
  private writing: Promise<void> | undefined;
  private deadLetters: number;
  private shadowBlocked = false;
  private closed = false;
  private readonly limitAll: number;
  private readonly limitBulk: number;
  private readonly limitShadow: number;

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    private readonly options: SpoolOptions,
    epoch: number,
    nextSeq: number,
    deadLetters: number,
    private readonly logger: Logger,
  ) {
    super();
    this.epoch = epoch;
    this.nextSeq = nextSeq;
    this.deadLetters = deadLetters;
    this.limitAll = options.maxBytes;
    this.limitBulk = options.maxBytes * (1 - (options.reserveRatio ?? 0.1));
    this.limitShadow = options.maxBytes * (options.shadowBlockRatio ?? 0.8);
    for (const c of SPOOL_CLASSES) this.classTotals.set(c, { frames: 0, bytes: 0 });
  }

  /** Opens or creates the spool in `dir` and rebuilds its index (see Recovery above). */
  static async open(options: SpoolOptions): Promise<Spool> {
    const logger = options.logger ?? silentLogger();
    const now = options.now ?? Date.now;
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    const db = new Level<string, Uint8Array>(options.dir, {
      keyEncoding: "utf8",
      valueEncoding: "view",
      // LevelDB's defaults (8 MiB block cache, 4 MiB memtable) are sized for databases that are
      // read at random; the spool is written and read once, in order, and the agent's memory is
      // budgeted, so both are kept small.
      cacheSize: 2 * 1024 * 1024,
      writeBufferSize: 2 * 1024 * 1024,
    });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
      throw spoolError(
        "open_failed",
        `cannot open the spool at ${options.dir}: ${cause}${/lock/i.test(cause) ? " (is another agent running with this data dir?)" : ""}`,
      );
    }
    try {
      const text = async (key: string) => {
        const v = await db.get(key);
        return v === undefined ? undefined : Buffer.from(v).toString("utf8");
      };
      const format = await text("m:format");
      let epoch: number;
      let nextSeq: number;
      if (format === undefined) {
        epoch = now();
        nextSeq = 1;
        const enc = (s: string) => new Uint8Array(Buffer.from(s));
        await db.batch(
          [
            { type: "put", key: "m:format", value: enc(String(SPOOL_FORMAT)) },
            { type: "put", key: "m:agent_id", value: enc(options.agentId) },
            { type: "put", key: "m:epoch", value: enc(String(epoch)) },
            { type: "put", key: "m:next_seq", value: enc("1") },
          ],
          { sync: true },
        );
        logger.info({ dir: options.dir, epoch }, "spool: created");
      } else {
        if (format !== String(SPOOL_FORMAT)) {
          throw spoolError(
            "format",
            `spool at ${options.dir} has layout ${format}; this agent reads ${SPOOL_FORMAT}`,
          );
        }
        const owner = await text("m:agent_id");
        if (owner !== options.agentId) {
          throw spoolError(
            "agent_mismatch",
            `spool at ${options.dir} belongs to agent ${JSON.stringify(owner)}, not ${JSON.stringify(options.agentId)}; its frames carry that id. Move it aside (the agent starts a new one) or restore the old agent_id`,
          );
        }
        epoch = Number(await text("m:epoch"));
        nextSeq = Number(await text("m:next_seq"));
        if (!Number.isSafeInteger(epoch) || epoch < 1 || !Number.isSafeInteger(nextSeq) || nextSeq < 1) {
          throw spoolError(
            "corrupt",
            `spool at ${options.dir} has corrupt metadata (epoch ${epoch}, next_seq ${nextSeq})`,
          );
        }
      }
      let dead = 0;
      for await (const _ of db.keys(DEAD_RANGE)) dead++;
      const spool = new Spool(db, options, epoch, nextSeq, dead, logger);
      await spool.rebuildIndex();
      return spool;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  private async rebuildIndex(): Promise<void> {
    const corrupt: { seq: number; value: Uint8Array }[] = [];
    for await (const [key, value] of this.db.iterator(RECORD_RANGE)) {
      const seq = Number.parseInt(key.slice(2), 16);
      const cls = SPOOL_CLASSES[value[1] ?? 255];
      const ok =
        value.byteLength > HEADER_BYTES &&
        value[0] === SPOOL_FORMAT &&
        cls !== undefined &&
        Buffer.from(value.buffer, value.byteOffset, value.byteLength).readUInt32BE(2) ===
          crc32(value.subarray(HEADER_BYTES));
      if (!ok || !Number.isSafeInteger(seq)) {
        corrupt.push({ seq, value });
        continue;
      }
      this.track(seq, pack(key.length + value.byteLength, cls));
      // A record past next_seq would mean metadata older than the records: never reuse its seq.
      if (seq >= this.nextSeq) this.nextSeq = seq + 1;
    }
    if (corrupt.length) {
      await this.db.batch(
        corrupt.flatMap(({ seq, value }) => [
          { type: "del" as const, key: seqKey(seq) },
          { type: "put" as const, key: deadKey(seq), value },
        ]),
        { sync: true },
      );
      this.deadLetters += corrupt.length;
      this.options.observer?.corrupt?.(corrupt.length);
      this.logger.error(
        { records: corrupt.length, seqs: corrupt.slice(0, 10).map((c) => c.seq) },
        "spool: records failed their checksum; moved to the dead-letter range (d:*)",
      );
    }
    if (this.index.size) {
      this.logger.info(
        {
          epoch: this.epoch,
          pending_frames: this.index.size,
          pending_bytes: this.bytes,
          next_seq: this.nextSeq,
        },
        "spool: recovered pending records",
      );
    }
  }

  private track(seq: number, packed: number): void {
    this.index.set(seq, packed);
    this.bytes += sizeOf(packed);
    const t = this.classTotals.get(classOf(packed))!;
    t.frames++;
    t.bytes += sizeOf(packed);
  }

  private untrack(seq: number): number | undefined {
    const packed = this.index.get(seq);
    if (packed === undefined) return undefined;
    this.index.delete(seq);
    this.bytes -= sizeOf(packed);
    const t = this.classTotals.get(classOf(packed))!;
    t.frames--;
    t.bytes -= sizeOf(packed);
    return packed;
  }

  get pendingFrames(): number {
    return this.index.size;
  }

  get pendingBytes(): number {
    return this.bytes;
  }

  stats(): SpoolStats {
    const byClass = {} as SpoolStats["byClass"];
    for (const [c, t] of this.classTotals) byClass[c] = { ...t };
    return {
      epoch: this.epoch,
      nextSeq: this.nextSeq,
      pendingFrames: this.index.size,
      pendingBytes: this.bytes,
      byClass,
      deadLetters: this.deadLetters,
    };
  }

  /**
   * Whether new shadow work (captures, shadow runs) may start: false above shadow_block_ratio of
   * the cap, counted once per refusal. The shadow lab calls this before starting anything.
   */
  admitShadowWork(): boolean {
    const ok = this.bytes < this.limitShadow;
    if (!ok) {
      this.options.observer?.shadowWorkBlocked?.();
      if (!this.shadowBlocked) {
        this.logger.warn(
          { pending_bytes: this.bytes, max_bytes: this.limitAll },
          "spool: nearly full; refusing new shadow work until the collector catches up",
        );
      }
    }
    this.shadowBlocked = !ok;
    return ok;
  }

  /**
   * Appends one record; resolves once it is durable. Rejects with a ShadowvmError: code "full"
   * (see the size policy), "closed", or a WireError when the body is invalid or the frame would
   * exceed the maximum frame size (split the batch).
   */
  append(body: SpoolBody): Promise<AppendReceipt> {
    if (this.closed) return Promise.reject(spoolError("closed", "the spool is closed"));
    const kind = Object.keys(body).find((k): k is SpoolBodyKind => k in BODY_CLASS);
    if (!kind || Object.keys(body).length !== 1) {
      return Promise.reject(
        spoolError(
          "invalid",
          `a spool record has exactly one data body (${Object.keys(BODY_CLASS).join(", ")})`,
        ),
      );
    }
    const cls = BODY_CLASS[kind];
    const seq = this.nextSeq;
    let frame: Uint8Array;
    try {
      frame = encodeFrame(
        {
          agent_id: this.options.agentId,
          epoch: this.epoch,
          seq,
          sent_at_ms: (this.options.now ?? Date.now)(),
          ...body,
        },
        { maxFrameBytes: this.options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES },
      );
    } catch (err) {
      return Promise.reject(err);
    }
    const key = seqKey(seq);
    const size = key.length + HEADER_BYTES + frame.byteLength;
    if (!this.makeRoom(cls, size)) {
      this.options.observer?.rejected?.(cls);
      const critical = CRITICAL.has(cls);
      if (critical) {
        this.logger.error(
          { class: cls, bytes: size, pending_bytes: this.bytes, max_bytes: this.limitAll },
          "spool: full; refusing a record that is never dropped (the caller keeps it)",
        );
      }
      return Promise.reject(
        spoolError(
          "full",
          `spool full: ${this.bytes} of ${this.limitAll} bytes pending${critical ? "" : ` (${cls} may use ${Math.floor(this.limitBulk)})`}, no telemetry left to drop; ${cls} record of ${size} bytes refused`,
        ),
      );
    }
    this.nextSeq = seq + 1;
    const value = new Uint8Array(HEADER_BYTES + frame.byteLength);
    value[0] = SPOOL_FORMAT;
    value[1] = SPOOL_CLASSES.indexOf(cls);
    new DataView(value.buffer).setUint32(2, crc32(frame));
    value.set(frame, HEADER_BYTES);
    const packed = pack(size, cls);
    // Counted now, so concurrent appends see each other in the size policy.
    this.track(seq, packed);
    return new Promise<AppendReceipt>((resolve, reject) => {
      this.queue.push({ seq, key, value, packed, resolve, reject });
      this.kick();
    });
  }

  /** Drops oldest telemetry until `size` more bytes fit under the class's limit. */
  private makeRoom(cls: SpoolClass, size: number): boolean {
    const limit = CRITICAL.has(cls) ? this.limitAll : this.limitBulk;
    if (this.bytes + size <= limit) return true;
    const queued = new Set(this.queue.map((p) => p.seq));
    let dropped = 0;
    for (const [seq, packed] of this.index) {
      if (this.bytes + size <= limit) break;
      // Only durable telemetry: a queued record's append() has not resolved yet.
      if (classOf(packed) !== "telemetry" || queued.has(seq)) continue;
      this.untrack(seq);
      this.drops.push(seqKey(seq));
      dropped++;
    }
    if (dropped) {
      this.options.observer?.dropped?.("telemetry", "spool_full", dropped);
      this.logger.warn(
        { dropped, pending_bytes: this.bytes, max_bytes: this.limitAll },
        "spool: full; dropped the oldest telemetry records",
      );
    }
    return this.bytes + size <= limit;
  }

  private kick(): void {
    if (this.writing) return;
    // Start on the next microtask, so appends made in the same synchronous run share the batch.
    this.writing = Promise.resolve()
      .then(() => this.writeLoop())
      .finally(() => {
        this.writing = undefined;
        // An append made between the loop's last check and here would otherwise wait forever.
        if (this.queue.length > 0 || this.drops.length > 0) this.kick();
      });
  }

  /** Group commit: everything queued goes into one synced LevelDB batch. */
  private async writeLoop(): Promise<void> {
    while (this.queue.length > 0 || this.drops.length > 0) {
      const batch = this.queue;
      const drops = this.drops;
      this.queue = [];
      this.drops = [];
      const ops: BatchOp[] = drops.map((key) => ({ type: "del", key }));
      for (const p of batch) ops.push({ type: "put", key: p.key, value: p.value });
      if (batch.length) {
        ops.push({
          type: "put",
          key: "m:next_seq",
          value: new Uint8Array(Buffer.from(String(batch.at(-1)!.seq + 1))),
        });
      }
      try {
        await this.db.batch(ops, { sync: true });
      } catch (err) {
        for (const p of batch) {
          this.untrack(p.seq);
          p.reject(spoolError("write_failed", `spool write failed: ${(err as Error).message}`));
        }
        this.logger.error({ err, records: batch.length }, "spool: write failed");
        continue;
      }
      for (const p of batch) {
        this.options.observer?.appended?.(classOf(p.packed));
        p.resolve({ epoch: this.epoch, seq: p.seq, bytes: sizeOf(p.packed) });
      }
      if (batch.length) this.emit("appended");
      this.emit("changed");
    }
  }

  /** Waits until every queued append is durable. */
  async settled(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /**
   * Up to `maxFrames` durable records with seq > afterSeq, in seq order, stopping after the one
   * that reaches `maxBytes`.
   */
  async readAfter(
    afterSeq: number,
    maxFrames: number,
    maxBytes = Number.POSITIVE_INFINITY,
  ): Promise<SpoolRecord[]> {
    const out: SpoolRecord[] = [];
    if (this.closed || maxFrames <= 0) return out;
    const queued = new Set(this.queue.map((p) => p.seq));
    let bytes = 0;
    for await (const [key, value] of this.db.iterator({ gt: seqKey(afterSeq), lt: "r;", limit: maxFrames })) {
      const seq = Number.parseInt(key.slice(2), 16);
      const packed = this.index.get(seq);
      if (packed === undefined || queued.has(seq)) continue; // dropped or acknowledged meanwhile
      out.push({ epoch: this.epoch, seq, cls: classOf(packed), frame: value.subarray(HEADER_BYTES) });
      bytes += value.byteLength;
      if (bytes >= maxBytes) break;
    }
    return out;
  }

  /** The first pending seq, or undefined when nothing is pending. */
  firstPendingSeq(): number | undefined {
    for (const seq of this.index.keys()) return seq;
    return undefined;
  }

  /** Deletes acknowledged records (inclusive ranges of our epoch); returns how many were pending. */
  async ack(ranges: readonly { epoch: number; first_seq: number; last_seq: number }[]): Promise<number> {
    const keys: string[] = [];
    for (const r of ranges) {
      if (r.epoch !== this.epoch) continue;
      if (r.last_seq - r.first_seq < this.index.size) {
        for (let seq = r.first_seq; seq <= r.last_seq; seq++) {
          if (this.untrack(seq) !== undefined) keys.push(seqKey(seq));
        }
      } else {
        for (const seq of [...this.index.keys()]) {
          if (seq >= r.first_seq && seq <= r.last_seq && this.untrack(seq) !== undefined)
            keys.push(seqKey(seq));
        }
      }
    }
    if (keys.length && !this.closed) {
      // Not synced (invariant 5).
      await this.db.batch(keys.map((key) => ({ type: "del" as const, key })));
      this.emit("changed");
    }
    return keys.length;
  }

  /** Applies the collector's resume points: drops every record it has committed (invariant 4). */
  async resume(points: readonly { epoch: number; committed_seq: number }[]): Promise<number> {
    const ours = points.find((p) => p.epoch === this.epoch);
    if (!ours || ours.committed_seq < 1) return 0;
    if (ours.committed_seq >= this.nextSeq) {
      this.logger.error(
        { epoch: this.epoch, committed_seq: ours.committed_seq, next_seq: this.nextSeq },
        "spool: the collector has committed seqs this spool never wrote (two agents with one id and data dir?)",
      );
    }
    const first = this.firstPendingSeq();
    if (first === undefined || first > ours.committed_seq) return 0;
    return this.ack([{ epoch: this.epoch, first_seq: first, last_seq: ours.committed_seq }]);
  }

  /** Moves a record the collector refused for good to the dead-letter range (counted, logged). */
  async deadLetter(seq: number, reason: string): Promise<void> {
    const packed = this.index.get(seq);
    if (packed === undefined || this.closed) return;
    const value = await this.db.get(seqKey(seq));
    this.untrack(seq);
    if (value !== undefined) {
      await this.db.batch(
        [
          { type: "del", key: seqKey(seq) },
          { type: "put", key: deadKey(seq), value },
        ],
        { sync: true },
      );
    }
    this.deadLetters++;
    this.options.observer?.deadLettered?.(classOf(packed));
    this.logger.error(
      { epoch: this.epoch, seq, class: classOf(packed), reason },
      "spool: the collector refused a record for good; moved it to the dead-letter range (d:*)",
    );
    this.emit("changed");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.settled();
    this.closed = true;
    await this.db.close();
  }
}
