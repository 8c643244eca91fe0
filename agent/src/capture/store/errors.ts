// The capture store's one error type. Every failure carries a stable code (for the CLI's exit
// status and for metrics) and, where it applies, the capture, part and chunk it concerns, so a
// message such as
//   capture cap-20250101T120000Z-1a2b3c4d part "disk:vda" chunk #17 (id 3fa2c1d09e77): ...
// tells an operator exactly what is damaged.
import { ShadowvmError } from "@shadowvm/shared";

export type CaptureStoreErrorCode =
  /** The key file exists but is not in the expected format. */
  | "key_invalid"
  /** The key file is readable by group/others. */
  | "key_insecure"
  /** The store exists but its key file does not (a new key would make every capture unreadable). */
  | "key_missing"
  /** The key file lies inside the store directory. */
  | "key_in_store"
  /** The store or a manifest was written with a different key. */
  | "wrong_key"
  /** Another live process holds the store's lock. */
  | "locked"
  /** The store directory is not a capture store, or has an unknown format version. */
  | "store_format"
  /** A write was attempted on a store opened read-only or opened with the wrong key. */
  | "read_only"
  | "not_found"
  | "invalid_argument"
  | "capture_exists"
  /** An operation on a capture writer in the wrong state (e.g. a part after commit). */
  | "invalid_state"
  | "manifest_truncated"
  | "manifest_corrupt"
  | "chunk_missing"
  | "chunk_corrupt"
  | "part_size_mismatch"
  | "part_hash_mismatch"
  /** ENOSPC/EDQUOT while writing: the capture was aborted and its partial files removed. */
  | "no_space"
  /** GC refused to run because a manifest could not be read (it could reference any chunk). */
  | "gc_unsafe"
  /** The capture was aborted (by the caller or by an earlier failure). */
  | "aborted"
  /** Reading the source of a part failed. */
  | "source_error"
  | "io";

export interface CaptureStoreErrorContext {
  captureId?: string | undefined;
  part?: string | undefined;
  /** Position of the chunk reference in the part's chunk list (0-based). */
  chunkIndex?: number | undefined;
  /** Hex chunk id. */
  chunkId?: string | undefined;
  cause?: unknown;
}

export class CaptureStoreError extends ShadowvmError {
  declare readonly code: CaptureStoreErrorCode;
  readonly captureId: string | undefined;
  readonly part: string | undefined;
  readonly chunkIndex: number | undefined;
  readonly chunkId: string | undefined;

  constructor(code: CaptureStoreErrorCode, message: string, context: CaptureStoreErrorContext = {}) {
    super("capture-store", code, withContext(message, context), { cause: context.cause });
    this.name = "CaptureStoreError";
    this.captureId = context.captureId;
    this.part = context.part;
    this.chunkIndex = context.chunkIndex;
    this.chunkId = context.chunkId;
  }
}

/** Prefixes the message with "capture X part "p" chunk #n (id abcd…):" for what is known. */
function withContext(message: string, c: CaptureStoreErrorContext): string {
  const where: string[] = [];
  if (c.captureId !== undefined) where.push(`capture ${c.captureId}`);
  if (c.part !== undefined) where.push(`part ${JSON.stringify(c.part)}`);
  if (c.chunkIndex !== undefined || c.chunkId !== undefined) {
    const idx = c.chunkIndex !== undefined ? `#${c.chunkIndex}` : "";
    const id = c.chunkId !== undefined ? `(id ${c.chunkId.slice(0, 16)})` : "";
    where.push(["chunk", idx, id].filter(Boolean).join(" "));
  }
  return where.length > 0 ? `${where.join(" ")}: ${message}` : message;
}

export function isErrno(err: unknown, ...codes: string[]): err is NodeJS.ErrnoException {
  return (
    typeof err === "object" &&
    err !== null &&
    typeof (err as NodeJS.ErrnoException).code === "string" &&
    codes.includes((err as NodeJS.ErrnoException).code as string)
  );
}

/** Disk-full conditions: both end a capture with code "no_space". */
export function isNoSpace(err: unknown): boolean {
  return isErrno(err, "ENOSPC", "EDQUOT");
}
