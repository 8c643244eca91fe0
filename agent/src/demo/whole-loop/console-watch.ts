// Follows a VM's serial console file with the shared console parser and reports each failure when
// it shows: the demo's way of seeing the production VM itself fail (its OOM kill).
//
// The parser completes a report at its end marker or when the console goes on with other lines; a
// guest that prints nothing after its report would never complete it, so after a quiet spell the
// scanner is ended (completing what is open) and a fresh one continues.
import { ConsoleScanner, type ParsedFailure } from "@shadowvm/shared";
import { LogFollower } from "./service-process.js";

export interface ConsoleFailure {
  failure: ParsedFailure;
  /** When the watcher read the report's last line (ms since the epoch). */
  seenAtMs: number;
}

export class ConsoleWatch {
  readonly failures: ConsoleFailure[] = [];
  private scanner = new ConsoleScanner();
  private pending = false;
  private lastLineAt = 0;
  /** Lines read so far, and at the start of the current scanner (its line numbers are relative). */
  private lines = 0;
  private base = 0;
  private readonly follower: LogFollower;
  private readonly settleTimer: NodeJS.Timeout;

  constructor(
    readonly file: string,
    private readonly onFailure: (f: ConsoleFailure) => void = () => undefined,
    quietMs = 2000,
  ) {
    this.follower = new LogFollower(file, (line) => {
      this.lastLineAt = Date.now();
      this.pending = true;
      this.lines++;
      this.take(this.scanner.push(`${line}\n`));
    });
    this.settleTimer = setInterval(() => {
      if (this.pending && Date.now() - this.lastLineAt >= quietMs) this.settle();
    }, 250);
    this.settleTimer.unref();
  }

  private take(found: ParsedFailure[]): void {
    for (const found1 of found) {
      const failure = { ...found1, line: found1.line + this.base };
      const f = { failure, seenAtMs: Date.now() };
      this.failures.push(f);
      this.onFailure(f);
    }
  }

  private settle(): void {
    this.take(this.scanner.end());
    this.scanner = new ConsoleScanner();
    this.base = this.lines;
    this.pending = false;
  }

  /** The first failure of `cls` seen so far. */
  first(cls: string): ConsoleFailure | undefined {
    return this.failures.find((f) => f.failure.class === cls);
  }

  stop(): void {
    this.follower.stop();
    clearInterval(this.settleTimer);
  }
}
