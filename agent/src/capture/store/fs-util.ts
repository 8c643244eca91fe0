// File-system helpers for the store: every file is created 0600 and every directory 0700, and
// everything a reader may see under its final name is written to a temporary name, fsynced and
// renamed (or hard-linked, when an existing file must not be replaced).
import { closeSync, constants, fsync, openSync, unlinkSync, writeSync } from "node:fs";
import { link, mkdir, open, rename, unlink } from "node:fs/promises";
import { promisify } from "node:util";

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/**
 * The store's write primitive. Tests inject one that fails with ENOSPC to check that a full
 * disk aborts a capture cleanly.
 *
 * It is synchronous on purpose: a chunk file is small (tens of KiB), and doing open + write +
 * close + rename as direct syscalls costs far less than one thread-pool round trip each (measured
 * ~180 us vs ~600 us per chunk file on the benchmark VM). Only fsync, the slow one, is async.
 */
export interface StoreIo {
  /** Writes all of `data` to `fd` at its current position. */
  write(fd: number, data: Uint8Array, what: "chunk" | "manifest" | "meta"): void;
}

export const defaultIo: StoreIo = {
  write(fd, data) {
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
  },
};

const fsyncAsync = promisify(fsync);

export async function mkdirPrivate(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: DIR_MODE });
}

export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Creates `tmp` exclusively (0600), writes the buffers, optionally fsyncs. Removes it on failure. */
export async function writeNewFile(
  io: StoreIo,
  tmp: string,
  data: readonly Uint8Array[],
  what: "chunk" | "manifest" | "meta",
  sync: boolean,
): Promise<number> {
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
  let size = 0;
  try {
    for (const d of data) {
      io.write(fd, d, what);
      size += d.length;
    }
    if (sync) await fsyncAsync(fd);
  } catch (err) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {}
    throw err;
  }
  closeSync(fd);
  return size;
}

/** Atomically replaces `path` with the given content (temp + fsync + rename + fsync dir). */
export async function writeFileAtomic(
  io: StoreIo,
  path: string,
  tmp: string,
  data: readonly Uint8Array[],
  what: "manifest" | "meta",
  sync: boolean,
  dir: string,
): Promise<void> {
  await writeNewFile(io, tmp, data, what, sync);
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  if (sync) await fsyncDir(dir);
}

/**
 * Like writeFileAtomic, but never replaces an existing `path`: link(2) fails with EEXIST.
 * Returns false when `path` already existed.
 */
export async function publishNewFile(tmp: string, path: string): Promise<boolean> {
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
