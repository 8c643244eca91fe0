// The agent's failure-signature database (LevelDB): every failure fingerprint seen in a shadow run,
// rolled up, and a change feed of SignatureUpdate messages for the collector.
//
// ## Per fingerprint
// title, class, frame, first/last seen, count (failures with this fingerprint, i.e. shadow runs
// that hit it), the production VMs (UUIDs) whose shadows produced it and the stress profiles under
// which it happened. Both lists are bounded (most recent last; `vms_dropped` / `profiles_dropped`
// count what fell off), profiles are deduplicated by their canonical JSON (stressProfileToJson).
// Precursors: the console patterns that preceded the failure in its shadows (Failure.precursors),
// each with how many runs showed it and when last; bounded (`maxPrecursors`, the least seen and
// oldest fall off). `recordCleanRun` counts, per precursor, the runs of the signature's VMs that
// showed the line and went their full time without the failure (`without`): a line that stress
// prints whether or not the guest breaks is noise, not a warning. `precursorsFor(vm)` lists them
// for the signatures a VM's shadows produced: what the production console watch
// (agent/src/telemetry/console-watch.ts) looks for.
// The first title/class/frame stay; a fingerprint is a hash of class + normalised title, so later
// titles differ at most in masked numbers.
//
// ## Change feed
// Every change of a signature queues an update; a signature has at most one queued update, the
// newest (SignatureUpdate semantics: the newest replaces the previous one), built from the current
// record when read. `pendingUpdates()` lists them in change order with a sequence number;
// `ackUpdates(seq)` removes those up to seq. A signature changed again after it was read gets a new,
// higher seq, so acknowledging the old one does not lose the change. The `update` event fires after
// each committed change (for a sender that pushes instead of polling).
//
// ## Keys (UTF-8, JSON values)
//   m:format          "1"
//   m:next_seq        next feed sequence number (decimal)
//   s:<fingerprint>   SignatureRecord (+ pending_seq while an update is queued)
//   u:<seq, 16 hex>   fingerprint whose update is queued
// A change is one synced write batch (record, feed entry, next_seq): after a crash either all of it
// is there or none. Writes are serialised inside the process; LevelDB's lock keeps other processes
// out. Inside one process the database is shared: open() of a location that is already open returns
// the same instance (the first opener's options apply) and every open() is matched by one close();
// the last close() closes LevelDB. So the campaigns and the console watch of `serve` can each open it.
import { EventEmitter } from "node:events";
import { join, resolve } from "node:path";
import {
  type StressProfile,
  type shadowvm,
  stressProfileToJson,
  stressProfileToProto,
} from "@shadowvm/shared";
import { Level } from "level";
import type { AgentConfig } from "../config/agent-config.js";

export interface SignatureRecord {
  fingerprint: string;
  title: string;
  class: string;
  frame: string | null;
  first_seen_ms: number;
  last_seen_ms: number;
  count: number;
  /** Production VM UUIDs, least recently hit first. */
  vms: string[];
  /** Distinct VMs that fell off the bounded list. */
  vms_dropped: number;
  /** Deduplicated profiles, least recently hit first. */
  profiles: StressProfile[];
  profiles_dropped: number;
  last_shadow_run_id?: string;
  /** Console patterns that preceded it in shadows, most seen first (absent in older records). */
  precursors?: PrecursorStat[];
  precursors_dropped?: number;
}

/** One precursor pattern of a signature. */
export interface PrecursorStat {
  pattern: string;
  /** Shadow runs whose failure it preceded. */
  count: number;
  last_seen_ms: number;
  /** Shadow runs of the signature's VMs that showed it and went their full time without the failure. */
  without?: number;
}

/** A precursor to look for on a VM's console, with the signature it warns of. */
export interface PrecursorMatch {
  pattern: string;
  fingerprint: string;
  title: string;
  class: string;
  /** Shadow runs in which it preceded that failure. */
  count: number;
  /** Shadow runs that showed it and went their full time without that failure. */
  without: number;
}

/** One failure to add to the database. */
export interface SignatureObservation {
  fingerprint: string;
  title: string;
  class: string;
  frame?: string | null;
  /** When it was seen (ms since the epoch). */
  seenAtMs: number;
  /** UUID (or name, when there is no UUID) of the production VM whose shadow hit it. */
  vm: string;
  profile?: StressProfile;
  shadowRunId?: string;
  /** Console patterns that preceded it (DetectedFailure.precursors). */
  precursors?: readonly string[];
}

export interface PendingSignatureUpdate {
  seq: number;
  update: shadowvm.v1.SignatureUpdate.$Properties;
}

export interface SignatureDbOptions {
  /** VMs kept per signature. Default 64. */
  maxVms?: number;
  /** Profiles kept per signature. Default 32. */
  maxProfiles?: number;
  /** Precursor patterns kept per signature. Default 32. */
  maxPrecursors?: number;
}

/** Databases open in this process, by resolved location (see the header). */
const shared = new Map<string, { db: Promise<SignatureDb>; refs: number }>();

const FORMAT = "1";
type Stored = SignatureRecord & { pending_seq?: number };
type BatchOp = { type: "put"; key: string; value: string } | { type: "del"; key: string };

function feedKey(seq: number): string {
  return `u:${seq.toString(16).padStart(16, "0")}`;
}

/** The agent's signature database: one per data directory, shared by campaigns and the console watch. */
export function signatureDbPath(config: Pick<AgentConfig, "data_dir">): string {
  return join(config.data_dir, "signatures");
}

/** The wire form of a signature (shadowvm.v1.SignatureUpdate). */
export function signatureUpdateMessage(r: SignatureRecord): shadowvm.v1.SignatureUpdate.$Properties {
  return {
    fingerprint: r.fingerprint,
    title: r.title,
    class: r.class,
    first_seen_ms: r.first_seen_ms,
    last_seen_ms: r.last_seen_ms,
    count: r.count,
    vms: [...r.vms],
    profiles: r.profiles.map((p) => stressProfileToProto(p)),
  };
}

function publicRecord(s: Stored): SignatureRecord {
  const { pending_seq: _, ...rest } = s;
  return rest;
}

export class SignatureDb extends EventEmitter<{ update: [SignatureRecord]; precursors: [] }> {
  readonly location: string;
  private readonly db: Level<string, string>;
  private readonly maxVms: number;
  private readonly maxProfiles: number;
  private readonly maxPrecursors: number;
  private nextSeq = 1;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(location: string, db: Level<string, string>, options: SignatureDbOptions) {
    super();
    this.location = location;
    this.db = db;
    this.maxVms = Math.max(1, options.maxVms ?? 64);
    this.maxProfiles = Math.max(1, options.maxProfiles ?? 32);
    this.maxPrecursors = Math.max(0, options.maxPrecursors ?? 32);
  }

  /**
   * Opens the database at `location`, or joins the instance already open in this process (its
   * options stay). Match every open() with one close().
   */
  static async open(location: string, options: SignatureDbOptions = {}): Promise<SignatureDb> {
    const key = resolve(location);
    const open = shared.get(key);
    if (open) {
      open.refs++;
      try {
        return await open.db;
      } catch (err) {
        open.refs--;
        throw err;
      }
    }
    const entry = { db: SignatureDb.openLevel(location, options), refs: 1 };
    shared.set(key, entry);
    entry.db.catch(() => {
      if (shared.get(key) === entry) shared.delete(key);
    });
    return entry.db;
  }

  private static async openLevel(location: string, options: SignatureDbOptions): Promise<SignatureDb> {
    const db = new Level<string, string>(location, { keyEncoding: "utf8", valueEncoding: "utf8" });
    await db.open();
    const self = new SignatureDb(location, db, options);
    try {
      const format = await db.get("m:format");
      if (format === undefined) {
        await db.batch(
          [
            { type: "put", key: "m:format", value: FORMAT },
            { type: "put", key: "m:next_seq", value: "1" },
          ],
          { sync: true },
        );
      } else if (format !== FORMAT) {
        throw new Error(`signature database ${location} has format ${format}; this agent reads ${FORMAT}`);
      }
      self.nextSeq = Number((await db.get("m:next_seq")) ?? "1");
    } catch (err) {
      await db.close();
      throw err;
    }
    return self;
  }

  /** Adds failures (in order); returns the updated records. */
  record(observations: SignatureObservation | readonly SignatureObservation[]): Promise<SignatureRecord[]> {
    const list = Array.isArray(observations) ? observations : [observations as SignatureObservation];
    return this.serialized(async () => {
      const changed = new Map<string, Stored>();
      const ops: BatchOp[] = [];
      let seq = this.nextSeq;
      for (const obs of list) {
        const current = changed.get(obs.fingerprint) ?? (await this.load(obs.fingerprint)) ?? this.fresh(obs);
        const next = this.apply(current, obs);
        if (current.pending_seq !== undefined) ops.push({ type: "del", key: feedKey(current.pending_seq) });
        next.pending_seq = seq++;
        changed.set(obs.fingerprint, next);
      }
      // One feed entry per changed fingerprint: the last seq given to it.
      const put: BatchOp[] = [];
      for (const r of changed.values()) {
        put.push({ type: "put", key: `s:${r.fingerprint}`, value: JSON.stringify(r) });
        put.push({ type: "put", key: feedKey(r.pending_seq!), value: r.fingerprint });
      }
      // Deleting a seq assigned earlier in this same batch would be harmless (never written).
      await this.db.batch([...ops, ...put, { type: "put", key: "m:next_seq", value: String(seq) }], {
        sync: true,
      });
      this.nextSeq = seq;
      const out = [...changed.values()].map(publicRecord);
      for (const r of out) this.emit("update", r);
      return out;
    });
  }

  /** Adds the failures of one finished shadow run. */
  recordRun(run: {
    vm: string;
    /** The run's failures (DetectedFailure fits). */
    failures: readonly {
      fingerprint: string;
      title: string;
      class: string;
      frame?: string | null;
      precursors?: readonly string[] | undefined;
    }[];
    finishedAtMs?: number;
    profile?: StressProfile;
    shadowRunId?: string;
  }): Promise<SignatureRecord[]> {
    const seenAtMs = run.finishedAtMs ?? Date.now();
    return this.record(
      run.failures.map((f) => ({
        fingerprint: f.fingerprint,
        title: f.title,
        class: f.class,
        frame: f.frame ?? null,
        seenAtMs,
        vm: run.vm,
        ...(run.profile ? { profile: run.profile } : {}),
        ...(run.shadowRunId ? { shadowRunId: run.shadowRunId } : {}),
        ...(f.precursors?.length ? { precursors: f.precursors } : {}),
      })),
    );
  }

  /**
   * A shadow run of `vm` that went its full time without failing: each precursor of a signature
   * of that VM that the run's console showed (`consolePatterns`, after start-up) counts one run
   * `without` its failure. No SignatureUpdate is queued (precursors do not go to the collector
   * with the signature); the `precursors` event fires when a count changed. Returns how many.
   */
  recordCleanRun(run: { vm: string; consolePatterns: Iterable<string> }): Promise<number> {
    const shown = new Set(run.consolePatterns);
    return this.serialized(async () => {
      if (shown.size === 0) return 0;
      const put: BatchOp[] = [];
      let counted = 0;
      for await (const value of this.db.values({ gte: "s:", lt: "s;" })) {
        const s = JSON.parse(value) as Stored;
        if (!s.precursors?.length || !s.vms.includes(run.vm)) continue;
        let changed = false;
        s.precursors = s.precursors.map((p) => {
          if (!shown.has(p.pattern)) return p;
          changed = true;
          counted++;
          return { ...p, without: (p.without ?? 0) + 1 };
        });
        if (changed) put.push({ type: "put", key: `s:${s.fingerprint}`, value: JSON.stringify(s) });
      }
      if (put.length > 0) {
        await this.db.batch(put, { sync: true });
        this.emit("precursors");
      }
      return counted;
    });
  }

  async get(fingerprint: string): Promise<SignatureRecord | undefined> {
    const s = await this.load(fingerprint);
    return s ? publicRecord(s) : undefined;
  }

  /** Every signature, by fingerprint. */
  async list(): Promise<SignatureRecord[]> {
    const out: SignatureRecord[] = [];
    for await (const value of this.db.values({ gte: "s:", lt: "s;" })) {
      out.push(publicRecord(JSON.parse(value) as Stored));
    }
    return out;
  }

  /** Queued updates in change order (oldest first), at most `limit`. */
  async pendingUpdates(limit = 1000): Promise<PendingSignatureUpdate[]> {
    const out: PendingSignatureUpdate[] = [];
    for await (const [key, fp] of this.db.iterator({ gte: "u:", lt: "u;", limit })) {
      const s = await this.load(fp);
      if (!s) continue;
      out.push({ seq: Number.parseInt(key.slice(2), 16), update: signatureUpdateMessage(s) });
    }
    return out;
  }

  /** Removes queued updates with seq <= uptoSeq (sent and acknowledged); returns how many. */
  ackUpdates(uptoSeq: number): Promise<number> {
    return this.serialized(async () => {
      const ops: BatchOp[] = [];
      for await (const [key, fp] of this.db.iterator({ gte: "u:", lte: feedKey(uptoSeq) })) {
        ops.push({ type: "del", key });
        const s = await this.load(fp);
        if (s && s.pending_seq === Number.parseInt(key.slice(2), 16)) {
          delete s.pending_seq;
          ops.push({ type: "put", key: `s:${fp}`, value: JSON.stringify(s) });
        }
      }
      if (ops.length > 0) {
        await this.db.batch(ops, { sync: true });
      }
      return ops.filter((o) => o.type === "del").length;
    });
  }

  /**
   * The precursors of every signature whose shadows ran for one of `vms` (UUIDs or names, as
   * recorded), one entry per (pattern, fingerprint), most seen first.
   */
  async precursorsFor(vms: readonly string[]): Promise<PrecursorMatch[]> {
    const wanted = new Set(vms.filter((v) => v !== ""));
    const out: PrecursorMatch[] = [];
    for (const r of await this.list()) {
      if (!r.precursors?.length || !r.vms.some((v) => wanted.has(v))) continue;
      for (const p of r.precursors)
        out.push({
          pattern: p.pattern,
          fingerprint: r.fingerprint,
          title: r.title,
          class: r.class,
          count: p.count,
          without: p.without ?? 0,
        });
    }
    return out.sort((a, b) => b.count - a.count || (a.fingerprint < b.fingerprint ? -1 : 1));
  }

  /** Releases this opener's hold; the last one closes the database. */
  async close(): Promise<void> {
    const key = resolve(this.location);
    const entry = shared.get(key);
    if (entry && (await entry.db.catch(() => undefined)) === this) {
      entry.refs--;
      if (entry.refs > 0) return;
      shared.delete(key);
    }
    await this.queue.catch(() => undefined);
    await this.db.close();
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async load(fingerprint: string): Promise<Stored | undefined> {
    const v = await this.db.get(`s:${fingerprint}`);
    return v === undefined ? undefined : (JSON.parse(v) as Stored);
  }

  private fresh(obs: SignatureObservation): Stored {
    return {
      fingerprint: obs.fingerprint,
      title: obs.title,
      class: obs.class,
      frame: obs.frame ?? null,
      first_seen_ms: obs.seenAtMs,
      last_seen_ms: obs.seenAtMs,
      count: 0,
      vms: [],
      vms_dropped: 0,
      profiles: [],
      profiles_dropped: 0,
    };
  }

  private apply(current: Stored, obs: SignatureObservation): Stored {
    const next: Stored = {
      ...current,
      vms: [...current.vms],
      profiles: [...current.profiles],
      count: current.count + 1,
      first_seen_ms: Math.min(current.first_seen_ms, obs.seenAtMs),
      last_seen_ms: Math.max(current.last_seen_ms, obs.seenAtMs),
    };
    if (next.frame === null && obs.frame) next.frame = obs.frame;
    if (obs.shadowRunId) next.last_shadow_run_id = obs.shadowRunId;
    const vmAt = next.vms.indexOf(obs.vm);
    if (vmAt >= 0) next.vms.splice(vmAt, 1);
    next.vms.push(obs.vm);
    if (next.vms.length > this.maxVms) {
      next.vms.splice(0, next.vms.length - this.maxVms);
      next.vms_dropped++;
    }
    if (obs.precursors?.length && this.maxPrecursors > 0) {
      const list = [...(current.precursors ?? [])];
      for (const pattern of new Set(obs.precursors)) {
        const at = list.findIndex((p) => p.pattern === pattern);
        if (at >= 0) list[at] = { ...list[at]!, count: list[at]!.count + 1, last_seen_ms: obs.seenAtMs };
        else list.push({ pattern, count: 1, last_seen_ms: obs.seenAtMs });
      }
      list.sort((a, b) => b.count - a.count || b.last_seen_ms - a.last_seen_ms);
      if (list.length > this.maxPrecursors) {
        next.precursors_dropped = (current.precursors_dropped ?? 0) + list.length - this.maxPrecursors;
        list.length = this.maxPrecursors;
      }
      next.precursors = list;
    }
    if (obs.profile) {
      const profile = stressProfileToJson(obs.profile);
      const key = JSON.stringify(profile);
      const at = next.profiles.findIndex((p) => JSON.stringify(p) === key);
      if (at >= 0) next.profiles.splice(at, 1);
      next.profiles.push(profile);
      if (next.profiles.length > this.maxProfiles) {
        next.profiles.splice(0, next.profiles.length - this.maxProfiles);
        next.profiles_dropped++;
      }
    }
    return next;
  }
}
