// Follows a production VM's serial console log (a file QEMU or libvirt appends to) line by line,
// `tail -F` style, for the console watch (console-watch.ts):
// - on first sight of the file it starts at the end (what was printed before the agent came is not
//   news); a file that appears later, or the new file after a rotation, is read from its start;
// - truncation (size below the read offset, e.g. `> file` or logrotate's copytruncate) restarts at 0;
// - rotation (the path names another inode, e.g. rename + create): the rest of the old file is read
//   first, then the new one from 0;
// - bounded memory: a line longer than `maxLineBytes` keeps its first `maxLineBytes` bytes (the rest
//   is counted in `droppedBytes`) and at most `maxReadBytes` are read per poll, so a flood is taken in
//   over several polls;
// - binary-safe: lines are split on \n as bytes and decoded as UTF-8 with replacement characters
//   (a trailing \r is dropped); NULs and other control bytes stay in the text for the pattern
//   normalisation to mask.
// Reads are driven by poll() (the watch's timer); one poll at a time.
import { type FileHandle, open, stat } from "node:fs/promises";

export interface ConsoleTailOptions {
  /** Bytes kept of one line. Default 4096 (the console parser looks at no more). */
  maxLineBytes?: number;
  /** Bytes read per poll at most. Default 4 MiB. */
  maxReadBytes?: number;
  /** Size of one read. Default 64 KiB. */
  chunkBytes?: number;
  /** Start at the end of a file that exists when first seen. Default true. */
  startAtEnd?: boolean;
}

export type TailEvent = "opened" | "truncated" | "rotated";

export class ConsoleTail {
  readonly path: string;
  /** Complete lines handed out. */
  lines = 0;
  /** Bytes read. */
  bytes = 0;
  /** Bytes of over-long lines that were not kept. */
  droppedBytes = 0;
  private readonly maxLine: number;
  private readonly maxRead: number;
  private readonly chunk: Buffer;
  private startAtEnd: boolean;
  private handle: FileHandle | undefined;
  private ino = -1;
  private dev = -1;
  private offset = 0;
  private readonly partial: Buffer;
  private partialLen = 0;
  private polling = false;

  constructor(
    path: string,
    private readonly onLine: (line: string) => void,
    options: ConsoleTailOptions = {},
    private readonly onEvent?: (e: TailEvent, detail: string) => void,
  ) {
    this.path = path;
    this.maxLine = Math.max(64, options.maxLineBytes ?? 4096);
    this.maxRead = Math.max(1024, options.maxReadBytes ?? 4 * 1024 * 1024);
    this.chunk = Buffer.allocUnsafe(Math.max(256, options.chunkBytes ?? 64 * 1024));
    this.partial = Buffer.allocUnsafe(this.maxLine);
    this.startAtEnd = options.startAtEnd ?? true;
  }

  /** Bytes of the current file consumed. */
  get position(): number {
    return this.offset;
  }

  /** Reads what is new; returns the number of complete lines handed out. */
  async poll(): Promise<number> {
    if (this.polling) return 0;
    this.polling = true;
    const before = this.lines;
    try {
      let budget = this.maxRead;
      if (!this.handle && !(await this.openFile())) return 0;
      let st: { ino: number; dev: number } | undefined;
      try {
        st = await stat(this.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
      if (!st || st.ino !== this.ino || st.dev !== this.dev) {
        // Rotated (or removed): finish the old file, then follow the new one from its start.
        budget -= await this.readAvailable(budget);
        if (!st || budget <= 0) return this.lines - before;
        await this.closeFile();
        this.flushPartial();
        this.startAtEnd = false;
        if (!(await this.openFile())) return this.lines - before;
        this.onEvent?.("rotated", this.path);
      }
      await this.readAvailable(budget);
      return this.lines - before;
    } finally {
      this.polling = false;
    }
  }

  async close(): Promise<void> {
    await this.closeFile();
  }

  private async openFile(): Promise<boolean> {
    let h: FileHandle;
    try {
      h = await open(this.path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.startAtEnd = false; // it appears later: everything in it is new
        return false;
      }
      throw err;
    }
    const st = await h.stat();
    this.handle = h;
    this.ino = st.ino;
    this.dev = st.dev;
    this.offset = this.startAtEnd ? st.size : 0;
    this.startAtEnd = false;
    this.partialLen = 0;
    this.onEvent?.("opened", `${this.path} at ${this.offset}`);
    return true;
  }

  private async closeFile(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close().catch(() => undefined);
  }

  /** Reads from the open file up to its end or `budget` bytes; returns the bytes read. */
  private async readAvailable(budget: number): Promise<number> {
    const h = this.handle;
    if (!h) return 0;
    const { size } = await h.stat();
    if (size < this.offset) {
      this.onEvent?.("truncated", `${this.path}: ${size} < ${this.offset}`);
      this.offset = 0;
      this.partialLen = 0;
    }
    let read = 0;
    while (read < budget) {
      const want = Math.min(this.chunk.length, budget - read);
      const { bytesRead } = await h.read(this.chunk, 0, want, this.offset);
      if (bytesRead === 0) break;
      this.offset += bytesRead;
      this.bytes += bytesRead;
      read += bytesRead;
      this.split(this.chunk.subarray(0, bytesRead));
    }
    return read;
  }

  private split(buf: Buffer): void {
    let pos = 0;
    for (let nl = buf.indexOf(10, pos); nl >= 0; nl = buf.indexOf(10, pos)) {
      this.append(buf, pos, nl);
      this.emitLine();
      pos = nl + 1;
    }
    if (pos < buf.length) this.append(buf, pos, buf.length);
  }

  private append(buf: Buffer, from: number, to: number): void {
    const room = this.maxLine - this.partialLen;
    const n = Math.min(room, to - from);
    if (n > 0) buf.copy(this.partial, this.partialLen, from, from + n);
    this.partialLen += n;
    this.droppedBytes += to - from - n;
  }

  private emitLine(): void {
    let len = this.partialLen;
    if (len > 0 && this.partial[len - 1] === 13) len--;
    const line = this.partial.toString("utf8", 0, len);
    this.partialLen = 0;
    this.lines++;
    this.onLine(line);
  }

  /** A file that ended without a newline (rotated away): its last line is complete. */
  private flushPartial(): void {
    if (this.partialLen > 0) this.emitLine();
  }
}
