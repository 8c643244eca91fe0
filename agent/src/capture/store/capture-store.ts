// The local capture store: content-defined, deduplicated, compressed and encrypted storage of
// VM captures (memory stream, disk images, config), from which shadow VMs are booted.
//
// On-disk layout (every directory 0700, every file 0600):
//   <dir>/store.json              format, version, key fingerprint, chunker parameters (written
//                                 once, atomically, when the store is created)
//   <dir>/store.lock              pid + boot id of the process that has the store open for writing
//   <dir>/chunks/<ab>/<64 hex id> chunk files, sharded by the first byte of the id (chunk-crypto.ts)
//   <dir>/manifests/<id>.manifest one sealed manifest per committed capture (manifest.ts)
//   <dir>/work/<id>/              an uncommitted capture's temporary chunk and manifest files
// The key file lives outside <dir> (key-file.ts).
//
// Invariants and crash recovery:
// - A chunk file only ever appears under its final name complete and fsynced (written to
//   work/<id>/<hex>.tmp, fsynced, renamed). A manifest is published the same way (link(2), which
//   never replaces), after the directories of its new chunks were fsynced. So after a crash every
//   manifest is complete and every chunk it references exists and is intact.
// - Committed manifests are the only source of truth for which chunks are live. GC is
//   mark-and-sweep: mark every chunk referenced by a manifest (or by a capture being written),
//   sweep the rest. Reference counts were rejected: they would be a second structure that has to
//   stay consistent with chunk files and manifests across crashes (a lost decrement leaks, a lost
//   increment deletes live data), whereas mark-and-sweep is correct by construction after any
//   crash. Its cost (reading all manifests) is paid only by remove/retention/recover.
// - GC refuses to sweep if any manifest cannot be read (damaged, wrong key): it could reference
//   any chunk. Remove or repair the manifest first.
// - A crash mid-capture leaves work/<id>/ and chunks no manifest references; recover() (run at
//   agent start-up) deletes the former and garbage-collects the latter.
// - Within this process, GC never deletes a chunk a capture being written relies on: writers
//   register chunk ids before checking for their existence, GC re-checks those registrations
//   right before each unlink, and a writer that finds a delete of its chunk in flight waits for
//   it and writes the chunk again. Other processes are kept out by store.lock (read-only opens,
//   e.g. `verify` from a CLI, take no lock and never delete).

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { constants } from "node:fs";
import {
  chmod,
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { Readable } from "node:stream";
import { type Logger, silentLogger } from "@shadowvm/shared";
import { Decoder, Encoder } from "@toondepauw/node-zstd";
import {
  type CaptureInfo,
  CaptureWriter,
  checkJson,
  type StoredChunk,
  toCaptureInfo,
  type WriterHost,
} from "./capture-writer.js";
import { chunkId, describeChunkFailure, FLAG_ZSTD, openChunk, sealChunk } from "./chunk-crypto.js";
import {
  type ChunkerParams,
  DEFAULT_CHUNKER_PARAMS,
  gearTableFromSeed,
  validateChunkerParams,
} from "./chunker.js";
import { CaptureStoreError, isErrno, isNoSpace } from "./errors.js";
import {
  DIR_MODE,
  defaultIo,
  FILE_MODE,
  fsyncDir,
  mkdirPrivate,
  publishNewFile,
  type StoreIo,
  writeFileAtomic,
  writeNewFile,
} from "./fs-util.js";
import { createKeyFile, deriveKeys, readKeyFile, type StoreKeys } from "./key-file.js";
import { CHUNK_RECORD_BYTES, type Manifest, type ManifestPart, openManifest } from "./manifest.js";

const STORE_FORMAT = "shadowvm-capture-store";
const STORE_VERSION = 1;
const CAPTURE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const CHUNK_NAME = /^[0-9a-f]{64}$/;
const MANIFEST_SUFFIX = ".manifest";

export interface CaptureStoreOptions {
  /** Store directory; created (0700) with the store if it does not exist or is empty. */
  dir: string;
  /**
   * Key file, outside `dir`. Created (0600, 32 random bytes) only when the store is new;
   * `keyFileCreated` then says so and the logger warns where it is.
   */
  keyFile: string;
  /** No lock, no writes: for verify/list/restore from a CLI while the agent runs. */
  readOnly?: boolean;
  logger?: Logger;
  /** Chunker parameters of a NEW store (an existing store keeps the ones in store.json). */
  chunker?: ChunkerParams;
  /** zstd level for chunks (default 3). */
  compressionLevel?: number;
  /** fsync files and directories before publishing them (default true; tests may disable). */
  fsync?: boolean;
  /** Chunks being compressed/encrypted/written at once per part (default 4). */
  concurrency?: number;
  /** Chunks read ahead when restoring/verifying (default 4). */
  readAhead?: number;
  /** Write primitive; tests inject ENOSPC through it. */
  io?: StoreIo;
}

export interface BeginCaptureOptions {
  vm: string;
  /** Capture id (default "cap-<UTC timestamp>-<random>"); must be unique in the store. */
  id?: string;
  metadata?: Record<string, unknown>;
}

export interface RestoreOptions {
  onProgress?: (progress: { part: string; bytesWritten: number; totalBytes: number }) => void;
  /** Leave all-zero chunks as holes (default true: disk images stay sparse). */
  sparse?: boolean;
  /** Replace an existing destination file (default false). */
  overwrite?: boolean;
}

export interface RestoreResult {
  path: string;
  bytes: number;
  sha256: string;
}

export interface VerifyProblem {
  code: CaptureStoreError["code"];
  message: string;
  part?: string;
  chunk_index?: number;
  chunk_id?: string;
}

export interface VerifyResult {
  id: string;
  ok: boolean;
  problems: VerifyProblem[];
  parts_checked: number;
  chunks_checked: number;
  bytes_checked: number;
}

export interface GcResult {
  /** False when GC was skipped (see `skipped_reason`); nothing was deleted then. */
  ran: boolean;
  skipped_reason?: string;
  referenced_chunks: number;
  deleted_chunks: number;
  freed_bytes: number;
}

export interface ScanResult {
  captures: CaptureInfo[];
  /** Manifests that cannot be read (damaged, truncated, other key). */
  damaged: Array<{ id: string; error: CaptureStoreError }>;
}

export interface RetentionPolicy {
  /** Keep the newest N captures of each VM. */
  keepPerVm?: number;
  /** Then remove the oldest captures until the store's referenced bytes fit. */
  maxTotalBytes?: number;
  /** Captures of each VM the byte budget may never remove (default 1: the newest). */
  minPerVm?: number;
}

export interface RetentionResult {
  removed: Array<{ id: string; vm: string; created_at: string; reason: "count" | "bytes" }>;
  /** Chunk + manifest bytes referenced by the readable captures, before and after (orphans excluded). */
  total_bytes_before: number;
  total_bytes_after: number;
  /** Still above maxTotalBytes (minPerVm stopped it). */
  over_budget: boolean;
  damaged: string[];
  gc: GcResult;
}

export interface RecoverResult {
  removed_work_dirs: string[];
  removed_temp_files: number;
  gc: GcResult;
}

interface StoreFile {
  format: typeof STORE_FORMAT;
  version: number;
  created_at: string;
  key_fingerprint: string;
  chunker: { min_size: number; avg_size: number; max_size: number };
}

/** Decoded chunk, or the reason it could not be read. */
type ChunkRead = { data: Buffer; error?: undefined } | { data?: undefined; error: CaptureStoreError };

interface RecordInfo {
  id: Buffer;
  hex: string;
  size: number;
  repeat: number;
  /** Index of the record's first chunk reference in the part (repeats counted). */
  index: number;
}

export class CaptureStore {
  readonly dir: string;
  readonly keyFile: string;
  /** True when open() created the key file (it must be backed up). */
  readonly keyFileCreated: boolean;
  readonly keyFingerprint: string;
  readonly readOnly: boolean;
  /**
   * False when the key file's fingerprint differs from the store's: every capture then fails
   * to read with "wrong_key", and writes are refused (they would mix keys).
   */
  readonly keyMatches: boolean;
  readonly chunker: Readonly<ChunkerParams>;

  private readonly keys: StoreKeys;
  private readonly gear: Uint32Array;
  private readonly io: StoreIo;
  private readonly fsync: boolean;
  private readonly concurrency: number;
  private readonly readAhead: number;
  private readonly logger: Logger;
  private readonly encoder: Encoder;
  private readonly decoder = new Decoder();
  private readonly writers = new Set<CaptureWriter>();
  /** Chunk unlinks in flight: a writer needing the chunk waits, then writes it again. */
  private readonly pendingDeletes = new Map<string, Promise<void>>();
  /** Chunk writes in flight, shared by concurrent writers of the same chunk. */
  private readonly inflightWrites = new Map<string, Promise<StoredChunk>>();
  /** Shard directories with renamed-in chunks not yet fsynced. */
  private readonly dirtyShards = new Set<string>();
  private readonly knownShards = new Set<string>();
  /** Chunk maps of writers that finished while a GC ran; that GC must keep their chunks. */
  private gcRetired: Array<ReadonlyMap<string, number>> | null = null;
  /** Serializes remove/retention/GC/recover. */
  private maintenance: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly host: WriterHost;

  private constructor(init: {
    dir: string;
    keyFile: string;
    keyFileCreated: boolean;
    readOnly: boolean;
    keys: StoreKeys;
    keyMatches: boolean;
    chunker: ChunkerParams;
    options: CaptureStoreOptions;
    logger: Logger;
  }) {
    const o = init.options;
    this.dir = init.dir;
    this.keyFile = init.keyFile;
    this.keyFileCreated = init.keyFileCreated;
    this.readOnly = init.readOnly;
    this.keys = init.keys;
    this.keyMatches = init.keyMatches;
    this.keyFingerprint = init.keys.fingerprint.toString("hex");
    this.chunker = Object.freeze({ ...init.chunker });
    this.gear = gearTableFromSeed(init.keys.chunkerGear);
    this.io = o.io ?? defaultIo;
    this.fsync = o.fsync ?? true;
    this.concurrency = Math.max(1, o.concurrency ?? 4);
    this.readAhead = Math.max(1, o.readAhead ?? 4);
    this.logger = init.logger;
    this.encoder = new Encoder(o.compressionLevel ?? 3);
    this.host = this.makeHost();
  }

  /** Opens (or creates) a store. See CaptureStoreOptions. */
  static async open(options: CaptureStoreOptions): Promise<CaptureStore> {
    const dir = resolve(options.dir);
    const keyFile = resolve(options.keyFile);
    const logger = options.logger ?? silentLogger();
    const readOnly = options.readOnly ?? false;
    const rel = relative(dir, keyFile);
    if (rel === "" || (!rel.startsWith("..") && !isAbsolute(rel))) {
      throw new CaptureStoreError(
        "key_in_store",
        `key file ${keyFile} is inside the store ${dir}; keep it outside so a copy of the store alone is useless`,
      );
    }

    let storeFile = await readStoreFile(dir);
    const isNew = storeFile === null;
    if (isNew) {
      if (readOnly) throw new CaptureStoreError("not_found", `no capture store at ${dir}`);
      const entries = await readdir(dir).catch((err) => {
        if (isErrno(err, "ENOENT")) return [] as string[];
        throw err;
      });
      if (entries.length > 0) {
        throw new CaptureStoreError(
          "store_format",
          `${dir} is not empty and has no store.json: not a capture store (refusing to use it)`,
        );
      }
    }

    let master: Buffer;
    let keyFileCreated = false;
    try {
      master = await readKeyFile(keyFile);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
      if (!isNew) {
        throw new CaptureStoreError(
          "key_missing",
          `key file ${keyFile} does not exist, but the store ${dir} was created with key ${storeFile?.key_fingerprint}; restore the key file (a new key could not read any capture)`,
        );
      }
      const created = await createKeyFile(keyFile);
      master = created.key;
      keyFileCreated = created.created;
      if (keyFileCreated) {
        logger.warn(
          { key_file: keyFile, store: dir },
          `created a new capture-store key at ${keyFile}; back it up: without it no capture can be restored`,
        );
      }
    }
    const keys = deriveKeys(master);
    master.fill(0);

    if (isNew) {
      const params = options.chunker ?? DEFAULT_CHUNKER_PARAMS;
      validateChunkerParams(params);
      storeFile = {
        format: STORE_FORMAT,
        version: STORE_VERSION,
        created_at: new Date().toISOString(),
        key_fingerprint: keys.fingerprint.toString("hex"),
        chunker: { min_size: params.minSize, avg_size: params.avgSize, max_size: params.maxSize },
      };
      await mkdirPrivate(dir);
      // store.json first: a directory with our subdirectories but no store.json is refused.
      await writeFileAtomic(
        defaultIo,
        join(dir, "store.json"),
        join(dir, `.store.json.tmp-${randomBytes(4).toString("hex")}`),
        [Buffer.from(`${JSON.stringify(storeFile, null, 2)}\n`)],
        "meta",
        true,
        dir,
      );
    }
    const sf = storeFile as StoreFile;
    const keyMatches = sf.key_fingerprint === keys.fingerprint.toString("hex");
    if (!keyMatches) {
      logger.error(
        {
          store: dir,
          key_file: keyFile,
          store_key: sf.key_fingerprint,
          key: keys.fingerprint.toString("hex"),
        },
        "the key file does not match the capture store: captures cannot be read and writes are refused",
      );
    }
    const store = new CaptureStore({
      dir,
      keyFile,
      keyFileCreated,
      readOnly,
      keys,
      keyMatches,
      chunker: { minSize: sf.chunker.min_size, avgSize: sf.chunker.avg_size, maxSize: sf.chunker.max_size },
      options,
      logger,
    });
    if (!readOnly) {
      await store.lock();
      for (const sub of ["", "chunks", "manifests", "work"]) {
        await mkdirPrivate(join(dir, sub));
        await chmod(join(dir, sub), DIR_MODE);
      }
    }
    return store;
  }

  /** Releases the lock; aborts captures still being written. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.writers]) await w.abort("the store was closed").catch(() => {});
    await this.maintenance.catch(() => {});
    this.closed = true;
    if (!this.readOnly) {
      const lockPath = join(this.dir, "store.lock");
      const lock = await readLock(lockPath);
      if (lock?.pid === process.pid) await unlink(lockPath).catch(() => {});
    }
  }

  /** Starts a capture; add parts to the returned writer, then commit() it. */
  async beginCapture(options: BeginCaptureOptions): Promise<CaptureWriter> {
    this.assertWritable();
    if (typeof options.vm !== "string" || options.vm.length === 0 || options.vm.length > 256) {
      throw new CaptureStoreError(
        "invalid_argument",
        "vm must be a non-empty string of at most 256 characters",
      );
    }
    const id = options.id ?? newCaptureId();
    assertCaptureId(id);
    const metadata = checkJson(options.metadata ?? {}, id);
    if (await exists(this.manifestPath(id))) {
      throw new CaptureStoreError("capture_exists", "a committed capture with this id already exists", {
        captureId: id,
      });
    }
    const workDir = join(this.dir, "work", id);
    try {
      // Not recursive: EEXIST makes the id reservation atomic.
      await mkdir(workDir, { mode: DIR_MODE });
    } catch (err) {
      if (!isErrno(err, "EEXIST")) throw err;
      throw new CaptureStoreError(
        "capture_exists",
        "a capture with this id is being written (or crashed: run recover())",
        {
          captureId: id,
        },
      );
    }
    await writeNewFile(
      this.io,
      join(workDir, "session.json"),
      [Buffer.from(`${JSON.stringify({ pid: process.pid, started_at: new Date().toISOString() })}\n`)],
      "meta",
      false,
    );
    const writer = new CaptureWriter(this.host, { id, vm: options.vm, workDir, metadata });
    this.writers.add(writer);
    return writer;
  }

  /** Readable captures, oldest first. Damaged manifests are skipped (and logged): see scan(). */
  async list(): Promise<CaptureInfo[]> {
    const { captures, damaged } = await this.scan();
    for (const d of damaged) this.logger.warn({ capture: d.id, code: d.error.code }, d.error.message);
    return captures;
  }

  /** All committed captures, readable ones oldest first, plus those that cannot be read. */
  async scan(): Promise<ScanResult> {
    const { manifests, damaged } = await this.loadAllManifests();
    return { captures: manifests.map(({ m, bytes }) => toCaptureInfo(m, bytes)), damaged };
  }

  async get(id: string): Promise<CaptureInfo> {
    const { m, bytes } = await this.loadManifest(id);
    return toCaptureInfo(m, bytes);
  }

  /** Removes a capture's manifest, then garbage-collects its chunks (unless `gc: false`). */
  async remove(id: string, options: { gc?: boolean } = {}): Promise<{ removed: string; gc: GcResult }> {
    assertCaptureId(id);
    this.assertWritable();
    return this.exclusive(async () => {
      try {
        await unlink(this.manifestPath(id));
      } catch (err) {
        if (isErrno(err, "ENOENT"))
          throw new CaptureStoreError("not_found", "no such capture", { captureId: id });
        throw err;
      }
      if (this.fsync) await fsyncDir(join(this.dir, "manifests"));
      this.logger.info({ capture: id }, "capture removed");
      const gc = options.gc === false ? skippedGc("not requested") : await this.tryGc();
      return { removed: id, gc };
    });
  }

  /**
   * A part as a stream. Each chunk is authenticated before its bytes are emitted; the part's
   * size and SHA-256 are checked at the end, and any failure destroys the stream with a
   * CaptureStoreError naming the capture, part and chunk.
   */
  async openPart(id: string, part: string): Promise<Readable> {
    const { m } = await this.loadManifest(id);
    const p = findPart(m, part);
    return Readable.from(this.partData(m, p), { objectMode: false });
  }

  /**
   * Restores a part into a file (e.g. a qcow2 image, or a memory stream for -incoming): written
   * to a temporary file next to `dest`, verified, fsynced and renamed; removed on any failure.
   */
  async restorePart(
    id: string,
    part: string,
    dest: string,
    options: RestoreOptions = {},
  ): Promise<RestoreResult> {
    const { m } = await this.loadManifest(id);
    const p = findPart(m, part);
    const path = resolve(dest);
    if (!options.overwrite && (await exists(path))) {
      throw new CaptureStoreError("invalid_argument", `${path} exists (pass overwrite: true to replace it)`, {
        captureId: id,
        part,
      });
    }
    const tmp = join(dirname(path), `.${randomBytes(6).toString("hex")}.restore-tmp`);
    const sparse = options.sparse ?? true;
    let fh: FileHandle | null;
    try {
      fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
    } catch (err) {
      throw new CaptureStoreError(
        isNoSpace(err) ? "no_space" : "io",
        `cannot create a file next to ${path}: ${(err as Error).message}`,
        { captureId: id, part, cause: err },
      );
    }
    let pos = 0;
    let lastProgress = 0;
    try {
      // partData checks the size and SHA-256 before it ends.
      for await (const data of this.partData(m, p)) {
        if (sparse && isAllZero(data)) {
          pos += data.length;
        } else {
          let off = 0;
          while (off < data.length) {
            const { bytesWritten } = await fh.write(data, off, data.length - off, pos + off);
            off += bytesWritten;
          }
          pos += data.length;
        }
        if (options.onProgress && Date.now() - lastProgress >= 100) {
          lastProgress = Date.now();
          options.onProgress({ part, bytesWritten: pos, totalBytes: p.size });
        }
      }
      await fh.truncate(pos);
      await fh.sync();
      await fh.close();
      fh = null;
      if (options.overwrite) await rename(tmp, path);
      else if (!(await publishNewFile(tmp, path))) {
        throw new CaptureStoreError("invalid_argument", `${path} appeared while restoring; not replaced`, {
          captureId: id,
          part,
        });
      }
      if (this.fsync) await fsyncDir(dirname(path));
      options.onProgress?.({ part, bytesWritten: pos, totalBytes: p.size });
      return { path, bytes: pos, sha256: p.sha256 };
    } catch (err) {
      await fh?.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      if (err instanceof CaptureStoreError) throw err;
      throw new CaptureStoreError(
        isNoSpace(err) ? "no_space" : "io",
        `restoring to ${path} failed: ${(err as Error).message}`,
        { captureId: id, part, cause: err },
      );
    }
  }

  /**
   * Reads every chunk of a capture: manifest authenticity, each chunk's GCM tag, size and id
   * (HMAC of the plaintext), and each part's size and SHA-256. Lists every problem found.
   */
  async verify(id: string): Promise<VerifyResult> {
    const result: VerifyResult = {
      id,
      ok: true,
      problems: [],
      parts_checked: 0,
      chunks_checked: 0,
      bytes_checked: 0,
    };
    const problem = (e: CaptureStoreError) => {
      result.ok = false;
      result.problems.push({
        code: e.code,
        message: e.message,
        ...(e.part !== undefined ? { part: e.part } : {}),
        ...(e.chunkIndex !== undefined ? { chunk_index: e.chunkIndex } : {}),
        ...(e.chunkId !== undefined ? { chunk_id: e.chunkId } : {}),
      });
    };
    let m: Manifest;
    try {
      m = (await this.loadManifest(id)).m;
    } catch (err) {
      if (!(err instanceof CaptureStoreError)) throw err;
      problem(err);
      return result;
    }
    // A damaged chunk is read once; later references to it (in any part) are reported once per
    // part, pointing at the first report.
    const bad = new Map<string, CaptureStoreError>();
    for (const p of m.parts) {
      result.parts_checked++;
      const sha = createHash("sha256");
      let bytes = 0;
      let broken = false;
      const reported = new Set<string>();
      for await (const { rec, read } of this.readRecords(m, p, true, bad)) {
        const known = bad.get(rec.hex);
        if (read.error || known) {
          broken = true;
          if (read.error && !known) {
            bad.set(rec.hex, read.error);
            problem(read.error);
          } else if (known && !reported.has(rec.hex) && known.part !== p.name) {
            problem(
              new CaptureStoreError(
                known.code,
                `the same damaged chunk as reported for part ${JSON.stringify(known.part)}`,
                {
                  captureId: m.id,
                  part: p.name,
                  chunkIndex: rec.index,
                  chunkId: rec.hex,
                },
              ),
            );
          }
          reported.add(rec.hex);
          continue;
        }
        result.chunks_checked += rec.repeat;
        for (let r = 0; r < rec.repeat; r++) sha.update(read.data);
        bytes += read.data.length * rec.repeat;
      }
      result.bytes_checked += bytes;
      if (broken) continue; // the hash cannot match; the chunk problems say why
      const check = partCheck(m, p, bytes, sha.digest("hex"));
      if (check) problem(check);
    }
    return result;
  }

  /**
   * Retention: per VM keep the newest `keepPerVm`; then, oldest first, remove captures until
   * the bytes referenced by the remaining ones fit in `maxTotalBytes` (never a VM's newest
   * `minPerVm`); then garbage-collect.
   */
  async applyRetention(policy: RetentionPolicy): Promise<RetentionResult> {
    this.assertWritable();
    const minPerVm = policy.minPerVm ?? 1;
    for (const [k, v] of Object.entries({
      keepPerVm: policy.keepPerVm,
      maxTotalBytes: policy.maxTotalBytes,
      minPerVm,
    })) {
      if (v !== undefined && !(Number.isInteger(v) && v >= 0)) {
        throw new CaptureStoreError(
          "invalid_argument",
          `retention ${k} must be a non-negative integer (got ${v})`,
        );
      }
    }
    return this.exclusive(async () => {
      const { manifests, damaged } = await this.loadAllManifests();
      const newestFirst = [...manifests].sort((a, b) => compareCaptures(b.m, a.m));
      const removed: RetentionResult["removed"] = [];
      const removedIds = new Set<string>();
      const rankInVm = new Map<string, number>();
      const byVmRank = new Map<string, number>();
      for (const { m } of newestFirst) {
        const rank = byVmRank.get(m.vm) ?? 0;
        byVmRank.set(m.vm, rank + 1);
        rankInVm.set(m.id, rank);
        if (policy.keepPerVm !== undefined && rank >= policy.keepPerVm) {
          removed.push({ id: m.id, vm: m.vm, created_at: m.created_at, reason: "count" });
          removedIds.add(m.id);
        }
      }
      // Bytes referenced by the remaining captures: distinct chunks (by refcount) + manifests.
      const refs = new Map<string, { size: number; count: number }>();
      let total = 0;
      const forEachChunk = (m: Manifest, fn: (hex: string, size: number) => void) => {
        const seen = new Set<string>();
        for (const p of m.parts) {
          for (let off = 0; off < p.chunks.length; off += CHUNK_RECORD_BYTES) {
            const hex = p.chunks.toString("hex", off, off + 32);
            if (seen.has(hex)) continue;
            seen.add(hex);
            fn(hex, p.chunks.readUInt32BE(off + 36));
          }
        }
      };
      const totalWith = (list: typeof manifests) => {
        refs.clear();
        total = 0;
        for (const { m, bytes } of list) {
          total += bytes;
          forEachChunk(m, (hex, size) => {
            const r = refs.get(hex);
            if (r) r.count++;
            else {
              refs.set(hex, { size, count: 1 });
              total += size;
            }
          });
        }
        return total;
      };
      const before = totalWith(manifests);
      totalWith(manifests.filter(({ m }) => !removedIds.has(m.id)));
      let overBudget = false;
      if (policy.maxTotalBytes !== undefined) {
        const oldestFirst = [...manifests].sort((a, b) => compareCaptures(a.m, b.m));
        for (const { m, bytes } of oldestFirst) {
          if (total <= policy.maxTotalBytes) break;
          if (removedIds.has(m.id)) continue;
          const newerInVm = rankInVm.get(m.id) ?? 0;
          if (newerInVm < minPerVm) continue;
          total -= bytes;
          forEachChunk(m, (hex) => {
            const r = refs.get(hex);
            if (r && --r.count === 0) total -= r.size;
          });
          removed.push({ id: m.id, vm: m.vm, created_at: m.created_at, reason: "bytes" });
          removedIds.add(m.id);
        }
        overBudget = total > policy.maxTotalBytes;
      }
      for (const r of removed) {
        await unlink(this.manifestPath(r.id)).catch((err) => {
          if (!isErrno(err, "ENOENT")) throw err;
        });
        this.logger.info({ capture: r.id, vm: r.vm, reason: r.reason }, "capture removed by retention");
      }
      if (removed.length > 0 && this.fsync) await fsyncDir(join(this.dir, "manifests"));
      const gc = await this.tryGc();
      return {
        removed,
        total_bytes_before: before,
        total_bytes_after: total,
        over_budget: overBudget,
        damaged: damaged.map((d) => d.id),
        gc,
      };
    });
  }

  /** Mark-and-sweep GC of chunks no committed manifest (or capture being written) references. */
  async gc(): Promise<GcResult> {
    this.assertWritable();
    return this.exclusive(() => this.runGc());
  }

  /**
   * Start-up crash recovery: deletes the working directories of captures that never committed
   * (and stray temporary files), then garbage-collects the chunks they left.
   */
  async recover(): Promise<RecoverResult> {
    this.assertWritable();
    return this.exclusive(async () => {
      const active = new Set([...this.writers].map((w) => w.id));
      const removedWorkDirs: string[] = [];
      let removedTemp = 0;
      for (const name of await readdir(join(this.dir, "work"))) {
        if (active.has(name)) continue;
        await rm(join(this.dir, "work", name), { recursive: true, force: true });
        removedWorkDirs.push(name);
      }
      for (const name of await readdir(this.dir)) {
        if (name.startsWith(".store.json.tmp-")) {
          await unlink(join(this.dir, name)).catch(() => {});
          removedTemp++;
        }
      }
      for (const name of await readdir(join(this.dir, "manifests"))) {
        if (!name.endsWith(MANIFEST_SUFFIX)) {
          await rm(join(this.dir, "manifests", name), { recursive: true, force: true });
          removedTemp++;
        }
      }
      if (removedWorkDirs.length > 0 || removedTemp > 0) {
        this.logger.info(
          { work_dirs: removedWorkDirs, temp_files: removedTemp },
          "removed the files of captures interrupted by a crash",
        );
      }
      const gc = await this.tryGc();
      return { removed_work_dirs: removedWorkDirs, removed_temp_files: removedTemp, gc };
    });
  }

  // ---------------------------------------------------------------------------------------

  private makeHost(): WriterHost {
    return {
      params: this.chunker,
      gear: this.gear,
      idKey: this.keys.chunkId,
      manifestKey: this.keys.manifest,
      fingerprint: this.keys.fingerprint,
      io: this.io,
      fsync: this.fsync,
      concurrency: this.concurrency,
      logger: this.logger,
      storeChunk: (id, hex, data, tmpDir) => this.storeChunk(id, hex, data, tmpDir),
      syncChunkDirs: () => this.syncChunkDirs(),
      publishManifest: async (tmp, id) => {
        const ok = await publishNewFile(tmp, this.manifestPath(id));
        if (ok && this.fsync) await fsyncDir(join(this.dir, "manifests"));
        return ok;
      },
      retire: (writer, outcome, newChunks) => this.retire(writer, outcome, newChunks),
    };
  }

  private manifestPath(id: string): string {
    return join(this.dir, "manifests", `${id}${MANIFEST_SUFFIX}`);
  }

  private chunkPath(hex: string): string {
    return join(this.dir, "chunks", hex.slice(0, 2), hex);
  }

  private assertWritable(): void {
    if (this.closed) throw new CaptureStoreError("invalid_state", "the store is closed");
    if (this.readOnly) throw new CaptureStoreError("read_only", `the store ${this.dir} was opened read-only`);
    if (!this.keyMatches) {
      throw new CaptureStoreError(
        "wrong_key",
        `the key file ${this.keyFile} (fingerprint ${this.keyFingerprint}) is not the key of the store ${this.dir}; refusing to write`,
      );
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.maintenance.then(fn, fn);
    this.maintenance = run.catch(() => {});
    return run;
  }

  private async lock(): Promise<void> {
    const lockPath = join(this.dir, "store.lock");
    const bootId = await readBootId();
    const content = Buffer.from(
      `${JSON.stringify({ pid: process.pid, boot_id: bootId, locked_at: new Date().toISOString() })}\n`,
    );
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeNewFile(defaultIo, lockPath, [content], "meta", false);
        return;
      } catch (err) {
        if (!isErrno(err, "EEXIST")) throw err;
      }
      const holder = await readLock(lockPath);
      const alive =
        holder !== null &&
        holder.boot_id === bootId &&
        (holder.pid === process.pid || isProcessAlive(holder.pid));
      if (alive) {
        throw new CaptureStoreError(
          "locked",
          `the store ${this.dir} is in use by process ${holder?.pid}${holder?.pid === process.pid ? " (this process: open it once)" : ""}; open it read-only, or stop that process (a stale lock from a dead process is taken over automatically)`,
        );
      }
      this.logger.warn({ store: this.dir, stale_pid: holder?.pid }, "taking over a stale store lock");
      await unlink(lockPath).catch(() => {});
    }
    throw new CaptureStoreError("locked", `cannot lock the store ${this.dir} (lock file ${lockPath})`);
  }

  /** Stores a chunk unless it exists. Concurrent requests for one chunk share a single write. */
  private storeChunk(id: Buffer, hex: string, data: Buffer, tmpDir: string): Promise<StoredChunk> {
    const shared = this.inflightWrites.get(hex);
    if (shared) {
      // If that write fails (e.g. its capture was aborted), do our own.
      return shared.then(
        (r) => ({ storedSize: r.storedSize, isNew: false }),
        () => this.storeChunk(id, hex, data, tmpDir),
      );
    }
    const write = (async (): Promise<StoredChunk> => {
      const deleting = this.pendingDeletes.get(hex);
      if (deleting) await deleting;
      const final = this.chunkPath(hex);
      try {
        return { storedSize: (await stat(final)).size, isNew: false };
      } catch (err) {
        if (!isErrno(err, "ENOENT")) throw err;
      }
      const compressed = await this.encoder.encode(data);
      const zstd = compressed.length < data.length;
      const sealed = sealChunk(this.keys.chunkEncryption, id, zstd ? compressed : data, zstd ? FLAG_ZSTD : 0);
      const tmp = join(tmpDir, `${hex}.tmp`);
      const size = await writeNewFile(this.io, tmp, [sealed], "chunk", this.fsync);
      const shard = hex.slice(0, 2);
      try {
        await this.ensureShard(shard);
        await rename(tmp, final);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        throw err;
      }
      this.dirtyShards.add(shard);
      return { storedSize: size, isNew: true };
    })();
    this.inflightWrites.set(hex, write);
    const clear = () => {
      if (this.inflightWrites.get(hex) === write) this.inflightWrites.delete(hex);
    };
    write.then(clear, clear);
    return write;
  }

  private async ensureShard(shard: string): Promise<void> {
    if (this.knownShards.has(shard)) return;
    const path = join(this.dir, "chunks", shard);
    const created = !(await exists(path));
    await mkdirPrivate(path);
    if (created && this.fsync) await fsyncDir(join(this.dir, "chunks"));
    this.knownShards.add(shard);
  }

  private async syncChunkDirs(): Promise<void> {
    if (!this.fsync) {
      this.dirtyShards.clear();
      return;
    }
    const shards = [...this.dirtyShards];
    // Cleared before syncing: chunks renamed in meanwhile mark their shard dirty again.
    this.dirtyShards.clear();
    await Promise.all(shards.map((s) => fsyncDir(join(this.dir, "chunks", s))));
  }

  private async retire(
    writer: CaptureWriter,
    outcome: "committed" | "aborted",
    newChunks: string[],
  ): Promise<void> {
    this.writers.delete(writer);
    if (outcome === "committed") {
      this.gcRetired?.push(writer.chunks);
      this.logger.info({ capture: writer.id, vm: writer.vm }, "capture committed");
      return;
    }
    if (newChunks.length === 0 || this.closed) return;
    // Collect the chunks the aborted capture added (others may share them: GC checks).
    await this.exclusive(() => this.runGc(new Set(newChunks))).catch((err) =>
      this.logger.warn(
        { capture: writer.id, err: (err as Error).message },
        "cannot collect the aborted capture's chunks now; recover() will",
      ),
    );
  }

  private async tryGc(): Promise<GcResult> {
    try {
      return await this.runGc();
    } catch (err) {
      if (err instanceof CaptureStoreError && err.code === "gc_unsafe") {
        this.logger.error({ store: this.dir }, err.message);
        return skippedGc(err.message);
      }
      throw err;
    }
  }

  /** Mark-and-sweep; with `candidates`, only those chunks are considered for deletion. */
  private async runGc(candidates?: ReadonlySet<string>): Promise<GcResult> {
    this.gcRetired = [];
    try {
      const marked = new Set<string>();
      const { manifests, damaged } = await this.loadAllManifests();
      if (damaged.length > 0) {
        throw new CaptureStoreError(
          "gc_unsafe",
          `garbage collection skipped: ${damaged.length} manifest(s) cannot be read (${damaged
            .map((d) => `${d.id}: ${d.error.code}`)
            .join(", ")}) and could reference any chunk; remove or repair them first`,
        );
      }
      for (const { m } of manifests) {
        for (const p of m.parts) {
          for (let off = 0; off < p.chunks.length; off += CHUNK_RECORD_BYTES) {
            marked.add(p.chunks.toString("hex", off, off + 32));
          }
        }
      }
      const isLive = (hex: string) =>
        marked.has(hex) ||
        [...this.writers].some((w) => w.chunks.has(hex)) ||
        (this.gcRetired ?? []).some((c) => c.has(hex));
      const result: GcResult = {
        ran: true,
        referenced_chunks: marked.size,
        deleted_chunks: 0,
        freed_bytes: 0,
      };
      const sweep = async (hex: string) => {
        if (isLive(hex)) return;
        const path = this.chunkPath(hex);
        let size = 0;
        try {
          size = (await stat(path)).size;
        } catch (err) {
          if (isErrno(err, "ENOENT")) return;
          throw err;
        }
        // Re-checked after the await, then decided and registered synchronously: a writer either
        // protected the chunk before this check or will see the pending delete and wait for it.
        if (isLive(hex) || this.pendingDeletes.has(hex)) return;
        const del = unlink(path).then(
          () => {
            result.deleted_chunks++;
            result.freed_bytes += size;
          },
          (err) => {
            if (!isErrno(err, "ENOENT")) throw err;
          },
        );
        this.pendingDeletes.set(hex, del);
        try {
          await del;
        } finally {
          this.pendingDeletes.delete(hex);
        }
      };
      if (candidates) {
        for (const hex of candidates) await sweep(hex);
      } else {
        const shards = await readdir(join(this.dir, "chunks"));
        for (const shard of shards) {
          let names: string[];
          try {
            names = await readdir(join(this.dir, "chunks", shard));
          } catch (err) {
            if (isErrno(err, "ENOTDIR", "ENOENT")) continue;
            throw err;
          }
          for (const name of names) if (CHUNK_NAME.test(name)) await sweep(name);
        }
      }
      if (result.deleted_chunks > 0) {
        this.logger.info(
          { deleted_chunks: result.deleted_chunks, freed_bytes: result.freed_bytes },
          "garbage-collected unreferenced chunks",
        );
      }
      return result;
    } finally {
      this.gcRetired = null;
    }
  }

  private async loadManifest(id: string): Promise<{ m: Manifest; bytes: number }> {
    assertCaptureId(id);
    let file: Buffer;
    try {
      file = await readFile(this.manifestPath(id));
    } catch (err) {
      if (isErrno(err, "ENOENT"))
        throw new CaptureStoreError("not_found", "no such capture", { captureId: id });
      throw err;
    }
    return { m: openManifest(file, id, this.keys.manifest, this.keys.fingerprint), bytes: file.length };
  }

  private async loadAllManifests(): Promise<{
    manifests: Array<{ m: Manifest; bytes: number }>;
    damaged: ScanResult["damaged"];
  }> {
    const manifests: Array<{ m: Manifest; bytes: number }> = [];
    const damaged: ScanResult["damaged"] = [];
    for (const name of await readdir(join(this.dir, "manifests"))) {
      if (!name.endsWith(MANIFEST_SUFFIX)) continue;
      const id = name.slice(0, -MANIFEST_SUFFIX.length);
      if (!CAPTURE_ID.test(id)) continue;
      try {
        manifests.push(await this.loadManifest(id));
      } catch (err) {
        if (err instanceof CaptureStoreError && err.code === "not_found") continue;
        if (err instanceof CaptureStoreError) damaged.push({ id, error: err });
        else throw err;
      }
    }
    manifests.sort((a, b) => compareCaptures(a.m, b.m));
    return { manifests, damaged };
  }

  /** Reads, authenticates and decompresses one chunk; `checkId` also recomputes its HMAC id. */
  private async readChunk(
    m: Manifest,
    p: ManifestPart,
    rec: RecordInfo,
    checkId: boolean,
  ): Promise<ChunkRead> {
    const ctx = { captureId: m.id, part: p.name, chunkIndex: rec.index, chunkId: rec.hex };
    let file: Buffer;
    try {
      file = await readFile(this.chunkPath(rec.hex));
    } catch (err) {
      if (isErrno(err, "ENOENT")) {
        return {
          error: new CaptureStoreError("chunk_missing", "the chunk file does not exist", {
            ...ctx,
            cause: err,
          }),
        };
      }
      return {
        error: new CaptureStoreError("io", `cannot read the chunk: ${(err as Error).message}`, {
          ...ctx,
          cause: err,
        }),
      };
    }
    const opened = openChunk(this.keys.chunkEncryption, rec.id, file);
    if (!opened.ok)
      return { error: new CaptureStoreError("chunk_corrupt", describeChunkFailure(opened.reason), ctx) };
    let data: Buffer;
    try {
      data = opened.flags & FLAG_ZSTD ? await this.decoder.decode(opened.body) : opened.body;
    } catch (err) {
      return {
        error: new CaptureStoreError("chunk_corrupt", "the chunk cannot be decompressed", {
          ...ctx,
          cause: err,
        }),
      };
    }
    if (data.length !== rec.size) {
      return {
        error: new CaptureStoreError(
          "chunk_corrupt",
          `the chunk has ${data.length} bytes, the manifest says ${rec.size}`,
          ctx,
        ),
      };
    }
    if (checkId && !timingSafeEqual(chunkId(this.keys.chunkId, data), rec.id)) {
      return {
        error: new CaptureStoreError("chunk_corrupt", "the chunk's content does not match its id", ctx),
      };
    }
    return { data };
  }

  /** The part's chunk records in order, each with its chunk read (read-ahead of `readAhead`). */
  private async *readRecords(
    m: Manifest,
    p: ManifestPart,
    checkId: boolean,
    skip?: ReadonlyMap<string, unknown>,
  ): AsyncGenerator<{ rec: RecordInfo; read: ChunkRead }> {
    const n = p.chunks.length / CHUNK_RECORD_BYTES;
    const queue: Array<{ rec: RecordInfo; read: Promise<ChunkRead> }> = [];
    let next = 0;
    let index = 0;
    const fill = () => {
      while (queue.length < this.readAhead && next < n) {
        const off = next * CHUNK_RECORD_BYTES;
        const rec: RecordInfo = {
          id: p.chunks.subarray(off, off + 32),
          hex: p.chunks.toString("hex", off, off + 32),
          size: p.chunks.readUInt32BE(off + 32),
          repeat: p.chunks.readUInt32BE(off + 40),
          index,
        };
        index += rec.repeat;
        next++;
        const read: Promise<ChunkRead> = skip?.has(rec.hex)
          ? Promise.resolve({ data: Buffer.alloc(0) })
          : this.readChunk(m, p, rec, checkId);
        queue.push({ rec, read });
      }
    };
    fill();
    while (queue.length > 0) {
      const head = queue.shift() as { rec: RecordInfo; read: Promise<ChunkRead> };
      const read = await head.read;
      fill();
      yield { rec: head.rec, read };
    }
  }

  /** The plaintext of a part in order; throws on the first problem (after its chunk's bytes). */
  private async *partData(m: Manifest, p: ManifestPart): AsyncGenerator<Buffer> {
    const sha = createHash("sha256");
    let bytes = 0;
    for await (const { rec, read } of this.readRecords(m, p, false)) {
      if (read.error) throw read.error;
      for (let r = 0; r < rec.repeat; r++) {
        sha.update(read.data);
        bytes += read.data.length;
        yield read.data;
      }
    }
    const check = partCheck(m, p, bytes, sha.digest("hex"));
    if (check) throw check;
  }
}

function partCheck(m: Manifest, p: ManifestPart, bytes: number, sha256: string): CaptureStoreError | null {
  if (bytes !== p.size) {
    return new CaptureStoreError(
      "part_size_mismatch",
      `the chunks add up to ${bytes} bytes, the manifest says ${p.size}`,
      {
        captureId: m.id,
        part: p.name,
      },
    );
  }
  if (sha256 !== p.sha256) {
    return new CaptureStoreError(
      "part_hash_mismatch",
      `SHA-256 ${sha256} does not match the manifest's ${p.sha256}`,
      {
        captureId: m.id,
        part: p.name,
      },
    );
  }
  return null;
}

function findPart(m: Manifest, name: string): ManifestPart {
  const p = m.parts.find((x) => x.name === name);
  if (!p) {
    throw new CaptureStoreError(
      "not_found",
      `no such part (the capture has: ${m.parts.map((x) => JSON.stringify(x.name)).join(", ")})`,
      { captureId: m.id, part: name },
    );
  }
  return p;
}

function compareCaptures(a: Manifest, b: Manifest): number {
  return (
    a.created_at.localeCompare(b.created_at) ||
    a.committed_at.localeCompare(b.committed_at) ||
    a.id.localeCompare(b.id)
  );
}

function skippedGc(reason: string): GcResult {
  return { ran: false, skipped_reason: reason, referenced_chunks: 0, deleted_chunks: 0, freed_bytes: 0 };
}

function assertCaptureId(id: string): void {
  if (typeof id !== "string" || !CAPTURE_ID.test(id)) {
    throw new CaptureStoreError(
      "invalid_argument",
      `capture id ${JSON.stringify(id)} is invalid (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
    );
  }
}

/** "cap-20250101T120000Z-1a2b3c4d": sortable, and free of VM names (file names are not encrypted). */
export function newCaptureId(now = new Date()): string {
  const ts = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `cap-${ts}-${randomBytes(4).toString("hex")}`;
}

const ZERO = Buffer.alloc(1024 * 1024);

function isAllZero(buf: Buffer): boolean {
  for (let off = 0; off < buf.length; off += ZERO.length) {
    const end = Math.min(buf.length, off + ZERO.length);
    if (!buf.subarray(off, end).equals(ZERO.subarray(0, end - off))) return false;
  }
  return true;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return false;
    throw err;
  }
}

async function readStoreFile(dir: string): Promise<StoreFile | null> {
  let text: string;
  try {
    text = await readFile(join(dir, "store.json"), "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return null;
    throw err;
  }
  let sf: StoreFile;
  try {
    sf = JSON.parse(text) as StoreFile;
  } catch (err) {
    throw new CaptureStoreError("store_format", `${dir}/store.json is not valid JSON`, { cause: err });
  }
  if (sf.format !== STORE_FORMAT || sf.version !== STORE_VERSION) {
    throw new CaptureStoreError(
      "store_format",
      `${dir}/store.json: unsupported store (format ${String(sf.format)} version ${String(sf.version)}; this agent reads ${STORE_FORMAT} v${STORE_VERSION})`,
    );
  }
  return sf;
}

async function readBootId(): Promise<string> {
  try {
    return (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
  } catch {
    return "unknown";
  }
}

async function readLock(path: string): Promise<{ pid: number; boot_id: string } | null> {
  try {
    const v = JSON.parse(await readFile(path, "utf8")) as { pid: number; boot_id: string };
    return typeof v.pid === "number" ? v : null;
  } catch {
    return null;
  }
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, "EPERM");
  }
}
