// The console parser on a live serial console.
//
// ConsoleScanner completes a report at its end marker, after QUIET_LINES lines without a stack
// frame, or at end(); operational signals complete once BURST_LINES quiet lines passed. A guest
// that panics or hangs prints nothing after its report, so on a live console those completions may
// never come. LiveConsole therefore ends the scanner once the console has been quiet for a while
// (`settle()`, called by the observer after `consoleSettleMs` without output) and continues with a
// fresh one: reports are emitted within about that delay of their last line. The price is that a
// report printed with a longer pause in the middle is cut in two; the observer re-parses the whole
// console file at the end of the run, and that parse is the one the run's result holds.
//
// Line numbers are global (1-based over the whole console); every chunk's arrival time is kept so a
// line maps to the moment it appeared.
import { createReadStream, existsSync } from "node:fs";
import { ConsoleScanner, type ParsedFailure } from "@shadowvm/shared";

export interface ConsoleHit {
  failure: ParsedFailure;
  /** Global 1-based line of the report's first line. */
  line: number;
}

/** Entries of the line -> time map kept at most (thinned beyond). */
const MAX_MARKS = 100_000;
/** Chunks closer together than this share one time mark. */
const MARK_GRANULARITY_MS = 20;

export class LiveConsole {
  bytes = 0;
  /** Failures the scanners dropped (flood bounds). */
  dropped = 0;
  private scanner = new ConsoleScanner();
  private base = 0;
  private completedLines = 0;
  private segmentHasData = false;
  private marks: { line: number; offsetMs: number }[] = [];
  private readonly onHit: (hit: ConsoleHit) => void;

  constructor(onHit: (hit: ConsoleHit) => void) {
    this.onHit = onHit;
  }

  /** Lines started so far (a trailing partial line counts). */
  get lines(): number {
    return this.completedLines;
  }

  /** Feeds a chunk that arrived `offsetMs` after the run start. */
  push(chunk: Buffer, offsetMs: number): void {
    if (chunk.length === 0) return;
    const line = this.completedLines + 1;
    const last = this.marks[this.marks.length - 1];
    if (!last || (last.line !== line && offsetMs - last.offsetMs >= MARK_GRANULARITY_MS)) {
      this.marks.push({ line, offsetMs });
      if (this.marks.length > MAX_MARKS) this.marks = this.marks.filter((_, i) => i % 2 === 0);
    }
    let n = 0;
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) n++;
    this.completedLines += n;
    this.bytes += chunk.length;
    this.segmentHasData = true;
    for (const f of this.scanner.push(chunk)) this.hit(f);
  }

  /** Ends the current scanner (completing open reports) and starts a fresh one. */
  settle(): void {
    if (!this.segmentHasData) return;
    for (const f of this.scanner.end()) this.hit(f);
    this.dropped += this.scanner.dropped;
    this.scanner = new ConsoleScanner();
    this.base = this.completedLines;
    this.segmentHasData = false;
  }

  /** ms after the run start at which global line `line` started to arrive. */
  lineOffset(line: number): number {
    const m = this.marks;
    if (m.length === 0) return 0;
    let lo = 0;
    let hi = m.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (m[mid]!.line <= line) lo = mid;
      else hi = mid - 1;
    }
    return m[lo]!.offsetMs;
  }

  private hit(f: ParsedFailure): void {
    this.onHit({ failure: f, line: this.base + f.line });
  }
}

/**
 * Parses a whole console file as one stream (the authoritative parse of a finished run): ranked
 * failures (see rankFailures) and the count the scanner dropped. Null when the file is gone.
 */
export async function parseConsoleFile(
  path: string,
): Promise<{ failures: ParsedFailure[]; dropped: number } | null> {
  if (!existsSync(path)) return null;
  const scanner = new ConsoleScanner();
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
      scanner.push(chunk as Buffer);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  scanner.end();
  return { failures: scanner.results(), dropped: scanner.dropped };
}
