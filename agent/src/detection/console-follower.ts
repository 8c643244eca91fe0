// Follows a growing file (a shadow's serial console, written by QEMU) and hands every new byte to a
// callback, in order. Reads are triggered by inotify (fs.watch) when the platform offers it and by
// a poll timer in any case (watch events can be coalesced or missed), and never overlap. A file
// that does not exist yet is waited for; a file that shrinks (truncated) is read again from 0.
import { type FSWatcher, watch } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

export interface ConsoleFollowerOptions {
  /** Poll interval. Default 250 ms. */
  pollMs?: number;
  /** Largest read. Default 1 MiB. */
  readBytes?: number;
  /** Called when the file was truncated and is read again from the start. */
  onTruncate?: () => void;
  /** Called when a read fails (other than the file not existing yet); following goes on. */
  onError?: (err: Error) => void;
}

export class ConsoleFollower {
  readonly path: string;
  /** Bytes handed to the callback so far. */
  bytes = 0;
  /** Date.now() of the last read that returned data (0 before any). */
  lastDataAt = 0;
  private readonly onChunk: (chunk: Buffer) => void;
  private readonly pollMs: number;
  private readonly readBytes: number;
  private readonly onTruncate: (() => void) | undefined;
  private readonly onError: ((err: Error) => void) | undefined;
  private handle: FileHandle | undefined;
  private offset = 0;
  private timer: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private running = false;
  private reading: Promise<void> = Promise.resolve();
  private again = false;
  private inFlight = false;

  constructor(path: string, onChunk: (chunk: Buffer) => void, options: ConsoleFollowerOptions = {}) {
    this.path = path;
    this.onChunk = onChunk;
    this.pollMs = options.pollMs ?? 250;
    this.readBytes = options.readBytes ?? 1024 * 1024;
    this.onTruncate = options.onTruncate;
    this.onError = options.onError;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.tryWatch();
    this.kick();
  }

  /** Reads whatever the file holds now; resolves when it has been handed over. */
  async drain(): Promise<void> {
    this.kick();
    await this.reading;
    // a kick during the read scheduled one more pass
    while (this.inFlight) await this.reading;
  }

  /** Stops following (after a final drain) and closes the file. */
  async stop(): Promise<void> {
    await this.drain();
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    await this.reading;
    const h = this.handle;
    this.handle = undefined;
    await h?.close().catch(() => undefined);
  }

  private tryWatch(): void {
    if (this.watcher) return;
    try {
      this.watcher = watch(this.path, { persistent: false }, () => this.kick());
      this.watcher.on("error", () => {
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      this.watcher = undefined; // not there yet, or no inotify: the poll timer does the work
    }
  }

  private kick(): void {
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.reading = (async () => {
      try {
        do {
          this.again = false;
          await this.readAvailable();
        } while (this.again);
      } catch (err) {
        this.onError?.(err as Error);
      } finally {
        this.inFlight = false;
        if (this.running) this.timer = setTimeout(() => this.kick(), this.pollMs);
      }
    })();
  }

  private async readAvailable(): Promise<void> {
    if (!this.handle) {
      try {
        this.handle = await open(this.path, "r");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
        throw err;
      }
      this.tryWatch();
    }
    const { size } = await this.handle.stat();
    if (size < this.offset) {
      this.offset = 0;
      this.onTruncate?.();
    }
    while (this.offset < size) {
      const want = Math.min(this.readBytes, size - this.offset);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await this.handle.read(buf, 0, want, this.offset);
      if (bytesRead === 0) break;
      this.offset += bytesRead;
      this.bytes += bytesRead;
      this.lastDataAt = Date.now();
      this.onChunk(buf.subarray(0, bytesRead));
    }
  }
}
