// One service of the demo loop (the agent, the collector, Alertmanager) as a separate process: its
// stdout and stderr go straight to a log file (so it keeps running when the main job leaves it
// behind with --keep), which is followed line by line for an optional callback; it runs in its own
// process group (Ctrl-C in the terminal reaches only the main job, which stops everything in
// order); every process started here is SIGKILLed when this Node process exits, unless detached.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { open } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";
import { ShadowvmError } from "@shadowvm/shared";

const running = new Set<ServiceProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const p of running) p.killNow();
  });
}

export interface ServiceProcessOptions {
  /** Shown in errors and progress lines. */
  name: string;
  command: string;
  args: string[];
  /** stdout and stderr, appended. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with every complete output line (stdout and stderr, as the log file has them). */
  onLine?: (line: string) => void;
}

export class ServiceProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private detachedFromExit = false;
  /** The last lines of output, for error messages. */
  private readonly tailLines: string[] = [];
  private readonly follower: LogFollower;

  private constructor(readonly options: ServiceProcessOptions) {
    const fd = openSync(options.logFile, "a");
    try {
      this.child = spawn(options.command, options.args, {
        stdio: ["ignore", fd, fd],
        env: options.env ?? process.env,
        cwd: options.cwd,
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    this.follower = new LogFollower(options.logFile, (line) => {
      this.note(line);
      try {
        options.onLine?.(line);
      } catch {
        /* a display problem must not take the service down */
      }
    });
    this.exited = new Promise((resolve) => {
      this.child.once("error", (err) => this.note(`spawn failed: ${err.message}`));
      this.child.once("exit", (code, signal) => {
        running.delete(this);
        // The last lines it wrote, then stop following.
        void this.follower.poll().finally(() => {
          this.follower.stop();
          resolve({ code, signal });
        });
      });
    });
    running.add(this);
    installExitHook();
  }

  static start(options: ServiceProcessOptions): ServiceProcess {
    return new ServiceProcess(options);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines it printed, joined with " | ". */
  tail(lines = 8): string {
    return this.tailLines.slice(-lines).join(" | ");
  }

  private note(line: string): void {
    this.tailLines.push(line.length > 400 ? `${line.slice(0, 400)}…` : line);
    if (this.tailLines.length > 50) this.tailLines.shift();
  }

  /** Throws (with its last output) if it has exited. */
  assertRunning(): void {
    if (!this.running) {
      throw new ShadowvmError(
        "demo",
        "service-exited",
        `${this.options.name} exited (${this.child.exitCode ?? this.child.signalCode}); last output: ${this.tail()}; log ${this.options.logFile}`,
      );
    }
  }

  /** SIGTERM (or `signal`), SIGKILL after `timeoutMs`; resolves once it has exited. */
  async stop(timeoutMs = 15_000, signal: NodeJS.Signals = "SIGTERM") {
    if (this.running) {
      this.child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.killNow();
          resolve();
        }, timeoutMs);
      });
      await Promise.race([this.exited, killed]);
      clearTimeout(timer);
    }
    return this.exited;
  }

  /** SIGKILL at once (synchronous: usable from an exit hook). */
  killNow(): void {
    if (this.running) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }

  /** Leave it running after this process exits (the demo's --keep). */
  detach(): void {
    if (this.detachedFromExit) return;
    this.detachedFromExit = true;
    running.delete(this);
    this.follower.stop();
    this.child.unref();
  }
}

/** Follows a growing text file, calling back with each complete line (polls; cheap). */
export class LogFollower {
  private offset = 0;
  private partial = "";
  private readonly decoder = new StringDecoder("utf8");
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<void> | undefined;

  constructor(
    readonly file: string,
    private readonly onLine: (line: string) => void,
    intervalMs = 250,
  ) {
    this.timer = setInterval(() => void this.poll(), intervalMs);
    this.timer.unref();
  }

  /** Reads what was appended since the last call. */
  poll(): Promise<void> {
    this.busy ??= this.read()
      .catch(() => {
        /* unreadable for now: the next poll tries again */
      })
      .finally(() => {
        this.busy = undefined;
      });
    return this.busy;
  }

  private async read(): Promise<void> {
    let fh: Awaited<ReturnType<typeof open>> | undefined;
    try {
      fh = await open(this.file, "r");
      for (;;) {
        const buf = Buffer.alloc(256 * 1024);
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        this.partial += this.decoder.write(buf.subarray(0, bytesRead));
        let nl = this.partial.indexOf("\n");
        while (nl >= 0) {
          const line = this.partial.slice(0, nl).replace(/\r$/, "");
          this.partial = this.partial.slice(nl + 1);
          this.onLine(line);
          nl = this.partial.indexOf("\n");
        }
      }
    } finally {
      await fh?.close();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
