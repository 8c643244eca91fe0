// One capture being written: parts are streamed in (chunked, deduplicated, compressed,
// encrypted), then commit() publishes the manifest, or the capture is aborted.
//
// Invariants:
// - A writer either commits or leaves nothing behind: any failure (source error, ENOSPC, a
//   bug) aborts the whole capture, removes its working directory (temporary chunk and manifest
//   files) and garbage-collects the chunks it added. A crash instead leaves the working
//   directory and unreferenced chunks, which CaptureStore.recover() removes.
// - Memory is bounded by the chunk pipeline (concurrency x max chunk size, plus the chunker's
//   2 x max chunk size) and by the per-capture chunk-id map (~150 bytes per distinct chunk),
//   never by the size of a part.
// - Every chunk id this writer references is in `chunks` before the writer relies on the
//   chunk's existence, which is what keeps the store's GC from deleting it (see capture-store).
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import type { Logger } from "@shadowvm/shared";
import { chunkId } from "./chunk-crypto.js";
import { Chunker, type ChunkerParams } from "./chunker.js";
import { CaptureStoreError, isNoSpace } from "./errors.js";
import { type StoreIo, sleep, writeNewFile } from "./fs-util.js";
import {
  ChunkTableBuilder,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  type Manifest,
  type ManifestPart,
  sealManifest,
} from "./manifest.js";

export interface PartProgress {
  part: string;
  /** Bytes of the part read from the source so far. */
  bytesRead: number;
  /** Total size when known (files, buffers, or `totalBytes` given by the caller). */
  totalBytes: number | undefined;
}

export interface AddPartOptions {
  /** Size of the source, for progress reports only. */
  totalBytes?: number;
  /** Called after each read from the source (at most every 100 ms) and once at the end. */
  onProgress?: (progress: PartProgress) => void;
  /** Bandwidth cap for reading the source, in bytes per second (unlimited when absent). */
  maxBytesPerSecond?: number;
}

export interface PartInfo {
  name: string;
  size: number;
  sha256: string;
  /** Chunk references in order, repeats included. */
  chunk_count: number;
}

export interface CaptureInfo {
  id: string;
  vm: string;
  /** When the capture started (ISO 8601); retention orders captures by it. */
  created_at: string;
  committed_at: string;
  metadata: Record<string, unknown>;
  parts: PartInfo[];
  /** Chunk bytes on disk referenced by this capture (each distinct chunk counted once). */
  stored_bytes: number;
  /** Chunk bytes this capture added to the store (not deduplicated against earlier data). */
  new_bytes: number;
  /** Size of the manifest file. */
  manifest_bytes: number;
}

export interface StoredChunk {
  storedSize: number;
  isNew: boolean;
}

/** What a writer needs from its store (implemented by CaptureStore). */
export interface WriterHost {
  readonly params: Readonly<ChunkerParams>;
  readonly gear: Uint32Array;
  readonly idKey: Buffer;
  readonly manifestKey: Buffer;
  readonly fingerprint: Buffer;
  readonly io: StoreIo;
  readonly fsync: boolean;
  readonly concurrency: number;
  readonly logger: Logger;
  /** Stores a chunk unless it exists; `tmpDir` holds its temporary file. */
  storeChunk(id: Buffer, hex: string, data: Buffer, tmpDir: string): Promise<StoredChunk>;
  /** fsyncs the directories that received new chunks since the last call. */
  syncChunkDirs(): Promise<void>;
  /** Publishes a sealed manifest under its final name without replacing an existing one. */
  publishManifest(tmp: string, id: string): Promise<boolean>;
  /** The writer is done: stop protecting its chunks; after an abort, collect `newChunks`. */
  retire(writer: CaptureWriter, outcome: "committed" | "aborted", newChunks: string[]): Promise<void>;
}

type State = "open" | "committing" | "committed" | "aborted";

const PART_NAME = /^[\x20-\x7e]{1,200}$/;
const PROGRESS_INTERVAL_MS = 100;

/** Sleeps so that reading never runs ahead of `rate` bytes per second on average. */
class Throttle {
  private readonly start = Date.now();
  private bytes = 0;
  constructor(private readonly rate: number) {}
  async take(n: number): Promise<void> {
    this.bytes += n;
    const due = this.start + (this.bytes / this.rate) * 1000;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
  }
}

interface PartResult {
  name: string;
  size: number;
  sha256: string;
  table: ChunkTableBuilder;
}

export class CaptureWriter {
  readonly id: string;
  readonly vm: string;
  readonly createdAt: string;
  /** Distinct chunk ids referenced so far (hex) -> stored size, -1 while being stored. */
  readonly chunks = new Map<string, number>();
  private readonly host: WriterHost;
  private readonly workDir: string;
  private metadata: Record<string, unknown>;
  private state: State = "open";
  private failure: CaptureStoreError | null = null;
  private readonly parts = new Map<string, PartResult | null>();
  private readonly ops = new Set<Promise<void>>();
  private readonly newChunks: string[] = [];
  private newBytes = 0;

  /** @internal Created by CaptureStore.beginCapture(). */
  constructor(
    host: WriterHost,
    init: { id: string; vm: string; workDir: string; metadata: Record<string, unknown> },
  ) {
    this.host = host;
    this.id = init.id;
    this.vm = init.vm;
    this.workDir = init.workDir;
    this.metadata = { ...init.metadata };
    this.createdAt = new Date().toISOString();
  }

  get status(): State {
    return this.state;
  }

  /** Merges caller metadata (e.g. { pause_ms }) into the manifest's metadata object. */
  setMetadata(patch: Record<string, unknown>): void {
    this.assertOpen();
    this.metadata = { ...this.metadata, ...checkJson(patch, this.id) };
  }

  /** Adds a part from a stream (or any async iterable of bytes). */
  async addStream(
    name: string,
    source: Readable | AsyncIterable<Uint8Array | string>,
    options: AddPartOptions = {},
  ): Promise<PartInfo> {
    this.assertOpen();
    if (!PART_NAME.test(name)) {
      throw new CaptureStoreError(
        "invalid_argument",
        `part name ${JSON.stringify(name)} is invalid (1-200 printable ASCII characters)`,
        { captureId: this.id },
      );
    }
    if (this.parts.has(name)) {
      throw new CaptureStoreError("invalid_argument", "the capture already has this part", {
        captureId: this.id,
        part: name,
      });
    }
    if (options.maxBytesPerSecond !== undefined && !(options.maxBytesPerSecond > 0)) {
      throw new CaptureStoreError("invalid_argument", "maxBytesPerSecond must be > 0", {
        captureId: this.id,
        part: name,
      });
    }
    this.parts.set(name, null);
    try {
      const result = await this.ingest(name, source, options);
      this.assertOpen();
      this.parts.set(name, result);
      return { name, size: result.size, sha256: result.sha256, chunk_count: result.table.count };
    } catch (err) {
      const e = this.toStoreError(err, name);
      await this.fail(e);
      throw e;
    }
  }

  /** Adds a part from a file (e.g. a frozen disk image), read as a stream. */
  async addFile(name: string, path: string, options: AddPartOptions = {}): Promise<PartInfo> {
    this.assertOpen();
    let total = options.totalBytes;
    if (total === undefined) {
      try {
        const st = await stat(path);
        if (st.isFile()) total = st.size;
      } catch (err) {
        const e = new CaptureStoreError("source_error", `cannot read ${path}: ${(err as Error).message}`, {
          captureId: this.id,
          part: name,
          cause: err,
        });
        await this.fail(e);
        throw e;
      }
    }
    // Small reads under a bandwidth cap keep the reads smooth rather than bursty.
    const cap = options.maxBytesPerSecond;
    const highWaterMark = cap ? Math.max(64 * 1024, Math.min(1024 * 1024, Math.floor(cap / 8))) : 1024 * 1024;
    return this.addStream(name, createReadStream(path, { highWaterMark }), { ...options, totalBytes: total });
  }

  /** Adds a small part held in memory (config.json, network.json). */
  async addBuffer(name: string, data: Uint8Array | string, options: AddPartOptions = {}): Promise<PartInfo> {
    const buf = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    return this.addStream(name, Readable.from([buf]), { totalBytes: buf.length, ...options });
  }

  /**
   * Publishes the capture: fsyncs the new chunks' directories, then writes the sealed manifest
   * to a temporary file, fsyncs it and links it to its final name (atomic, never replacing).
   */
  async commit(options: { metadata?: Record<string, unknown> } = {}): Promise<CaptureInfo> {
    this.assertOpen();
    const inProgress = [...this.parts].filter(([, r]) => r === null).map(([n]) => n);
    if (inProgress.length > 0) {
      throw new CaptureStoreError(
        "invalid_state",
        `cannot commit while parts are still being added: ${inProgress.join(", ")}`,
        { captureId: this.id },
      );
    }
    if (this.parts.size === 0) {
      throw new CaptureStoreError("invalid_state", "cannot commit a capture without parts", {
        captureId: this.id,
      });
    }
    if (options.metadata) this.setMetadata(options.metadata);
    this.state = "committing";
    let published = false;
    try {
      await this.host.syncChunkDirs();
      const manifest = this.buildManifest();
      const sealed = sealManifest(manifest, this.host.manifestKey, this.host.fingerprint);
      const tmp = `${this.workDir}/manifest.tmp`;
      await writeNewFile(this.host.io, tmp, [sealed], "manifest", this.host.fsync);
      published = await this.host.publishManifest(tmp, this.id);
      if (!published) {
        throw new CaptureStoreError("capture_exists", "a committed capture with this id already exists", {
          captureId: this.id,
        });
      }
      this.state = "committed";
      await rm(this.workDir, { recursive: true, force: true }).catch((err) =>
        this.host.logger.warn({ err, capture: this.id }, "cannot remove the capture's working directory"),
      );
      await this.host.retire(this, "committed", []);
      return toCaptureInfo(manifest, sealed.length);
    } catch (err) {
      if (published) throw err;
      this.state = "open";
      const e = this.toStoreError(err, undefined);
      await this.fail(e);
      throw e;
    }
  }

  /** Abandons the capture and removes everything it wrote. No-op when already aborted. */
  async abort(reason = "aborted by the caller"): Promise<void> {
    if (this.state === "committed" || this.state === "committing") {
      throw new CaptureStoreError("invalid_state", `the capture is already ${this.state}`, {
        captureId: this.id,
      });
    }
    await this.fail(new CaptureStoreError("aborted", reason, { captureId: this.id }));
  }

  private assertOpen(): void {
    if (this.state === "open") return;
    if (this.state === "aborted") {
      throw new CaptureStoreError(
        "aborted",
        `the capture was aborted${this.failure ? ` (${this.failure.message})` : ""}`,
        { captureId: this.id, cause: this.failure },
      );
    }
    throw new CaptureStoreError("invalid_state", `the capture is ${this.state}`, { captureId: this.id });
  }

  private async fail(e: CaptureStoreError): Promise<void> {
    if (this.state === "aborted" || this.state === "committed") return;
    this.state = "aborted";
    this.failure = e;
    // Let in-flight chunk writes settle so none lands after the clean-up below.
    while (this.ops.size > 0) await Promise.allSettled([...this.ops]);
    await rm(this.workDir, { recursive: true, force: true }).catch((err) =>
      this.host.logger.warn(
        { err, capture: this.id },
        "cannot remove the aborted capture's working directory",
      ),
    );
    await this.host.retire(this, "aborted", this.newChunks.splice(0));
    this.host.logger.warn({ capture: this.id, code: e.code, reason: e.message }, "capture aborted");
  }

  private async ingest(
    name: string,
    source: Readable | AsyncIterable<Uint8Array | string>,
    options: AddPartOptions,
  ): Promise<PartResult> {
    const chunker = new Chunker(this.host.params, this.host.gear);
    const table = new ChunkTableBuilder();
    const sha = createHash("sha256");
    const inflight = new Set<Promise<void>>();
    let firstError: unknown = null;
    let size = 0;
    const throttle = options.maxBytesPerSecond ? new Throttle(options.maxBytesPerSecond) : null;
    let lastProgress = 0;
    const report = (force: boolean) => {
      if (!options.onProgress) return;
      const now = Date.now();
      if (!force && now - lastProgress < PROGRESS_INTERVAL_MS) return;
      lastProgress = now;
      options.onProgress({ part: name, bytesRead: size, totalBytes: options.totalBytes });
    };

    const handle = async (chunk: Buffer): Promise<void> => {
      const id = chunkId(this.host.idKey, chunk);
      const hex = id.toString("hex");
      table.add(id, chunk.length);
      if (this.chunks.has(hex)) return;
      // Registered before any await: from here on the GC treats the chunk as referenced.
      this.chunks.set(hex, -1);
      while (inflight.size >= this.host.concurrency) await Promise.race(inflight);
      if (firstError) throw firstError;
      this.assertOpen();
      const op: Promise<void> = this.host.storeChunk(id, hex, chunk, this.workDir).then(
        (r) => {
          this.chunks.set(hex, r.storedSize);
          if (r.isNew) {
            this.newChunks.push(hex);
            this.newBytes += r.storedSize;
          }
        },
        (err) => {
          firstError ??= err;
        },
      );
      const tracked = op.finally(() => {
        inflight.delete(tracked);
        this.ops.delete(tracked);
      });
      inflight.add(tracked);
      this.ops.add(tracked);
    };

    const iterator = (source as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
    let done = false;
    try {
      for (;;) {
        let next: IteratorResult<Uint8Array | string>;
        try {
          next = await iterator.next();
        } catch (err) {
          throw new CaptureStoreError(
            "source_error",
            `reading the source failed: ${(err as Error).message}`,
            {
              captureId: this.id,
              part: name,
              cause: err,
            },
          );
        }
        if (next.done) {
          done = true;
          break;
        }
        this.assertOpen();
        if (firstError) throw firstError;
        const value = next.value;
        const buf = typeof value === "string" ? Buffer.from(value, "utf8") : value;
        if (buf.length === 0) continue;
        sha.update(buf);
        size += buf.length;
        for (const c of chunker.push(buf)) await handle(c);
        report(false);
        if (throttle) await throttle.take(buf.length);
      }
      for (const c of chunker.finish()) await handle(c);
      while (inflight.size > 0) await Promise.all([...inflight]);
      if (firstError) throw firstError;
      report(true);
      return { name, size, sha256: sha.digest("hex"), table };
    } finally {
      // Stop reading (and close a file stream) when we leave early.
      if (!done) await iterator.return?.().catch(() => {});
      await Promise.allSettled([...inflight]);
    }
  }

  private buildManifest(): Manifest {
    const storedSize = (hex: string) => {
      const s = this.chunks.get(hex);
      if (s === undefined || s < 0) throw new Error(`internal: chunk ${hex} has no stored size`);
      return s;
    };
    const parts: ManifestPart[] = [];
    for (const [name, r] of this.parts) {
      if (!r) throw new Error(`internal: part ${name} unfinished`);
      parts.push({
        name,
        size: r.size,
        sha256: r.sha256,
        chunk_count: r.table.count,
        chunks: r.table.finish(storedSize),
      });
    }
    let stored = 0;
    for (const s of this.chunks.values()) stored += s;
    const p = this.host.params;
    return {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      id: this.id,
      vm: this.vm,
      created_at: this.createdAt,
      committed_at: new Date().toISOString(),
      metadata: this.metadata,
      chunker: { min_size: p.minSize, avg_size: p.avgSize, max_size: p.maxSize },
      stored_bytes: stored,
      new_bytes: this.newBytes,
      parts,
    };
  }

  private toStoreError(err: unknown, part: string | undefined): CaptureStoreError {
    if (err instanceof CaptureStoreError) return err;
    if (isNoSpace(err)) {
      return new CaptureStoreError(
        "no_space",
        `no space left on the store's file system (${(err as Error).message}); the capture was aborted and its partial files removed`,
        { captureId: this.id, part, cause: err },
      );
    }
    return new CaptureStoreError("io", (err as Error)?.message ?? String(err), {
      captureId: this.id,
      part,
      cause: err,
    });
  }
}

export function checkJson(value: Record<string, unknown>, captureId: string): Record<string, unknown> {
  try {
    const copy = JSON.parse(JSON.stringify(value)) as unknown;
    if (typeof copy !== "object" || copy === null || Array.isArray(copy)) throw new Error("not an object");
    return copy as Record<string, unknown>;
  } catch (err) {
    throw new CaptureStoreError(
      "invalid_argument",
      `metadata must be a JSON object (${(err as Error).message})`,
      {
        captureId,
      },
    );
  }
}

export function toCaptureInfo(m: Manifest, manifestBytes: number): CaptureInfo {
  return {
    id: m.id,
    vm: m.vm,
    created_at: m.created_at,
    committed_at: m.committed_at,
    metadata: m.metadata,
    parts: m.parts.map((p) => ({ name: p.name, size: p.size, sha256: p.sha256, chunk_count: p.chunk_count })),
    stored_bytes: m.stored_bytes,
    new_bytes: m.new_bytes,
    manifest_bytes: manifestBytes,
  };
}
