// How the explorer gets outcomes: a TrialRunner runs a batch of profiles (in parallel shadows, in a
// simulator, or through an oracle program) and returns one Outcome per profile, in order.
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import type { StressProfile } from "@shadowvm/shared";
import type { Outcome } from "./types.js";

export interface TrialRunner {
  run(profiles: StressProfile[]): Promise<Outcome[]>;
  close?(): Promise<void>;
}

/** A runner failure that keeps the outcomes of the batch that did complete before it. */
export class OracleError extends Error {
  readonly completed: Outcome[];
  /** The offending line, when the oracle sent one. */
  readonly line: string | undefined;
  constructor(message: string, completed: Outcome[], line?: string) {
    super(message);
    this.name = "OracleError";
    this.completed = completed;
    this.line = line;
  }
}

/** Checks one decoded answer; returns the problem or the outcome. */
export function parseOutcome(value: unknown): Outcome | string {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return "answer is not a JSON object";
  const o = value as Record<string, unknown>;
  if (!("failed" in o)) return 'field "failed" is missing';
  if (typeof o.failed !== "boolean")
    return `field "failed" must be a boolean, got ${JSON.stringify(o.failed)}`;
  if (!("signatures" in o)) return 'field "signatures" is missing';
  if (!Array.isArray(o.signatures)) return `field "signatures" must be an array of strings`;
  for (const s of o.signatures) {
    if (typeof s !== "string") return `field "signatures" must hold strings only, got ${JSON.stringify(s)}`;
  }
  return { failed: o.failed, signatures: o.signatures as string[] };
}

/** The line-protocol form of a profile (the StressProfile JSON keys, nothing else). */
export function profileToJson(p: StressProfile): string {
  return JSON.stringify({
    cpu_load: p.cpu_load,
    memory_load: p.memory_load,
    io_load: p.io_load,
    net_latency_ms: p.net_latency_ms,
    net_loss_pct: p.net_loss_pct,
    faults: p.faults.map((f) => ({
      kind: f.kind,
      rate: f.rate,
      at_s: f.at_s,
      ...(f.duration_s === undefined ? {} : { duration_s: f.duration_s }),
    })),
    duration_s: p.duration_s,
  });
}

export interface OracleProcessOptions {
  /** Longest wait for one answer (default 60 s). */
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs an oracle program once (`sh -c "<command>"`) and talks to it over its stdio: one JSON
 * StressProfile per line in, one `{"failed": bool, "signatures": [...]}` per line out, in order.
 * Any protocol breach rejects with an OracleError naming the problem and the line received; the
 * runner is then dead (a confused oracle cannot be trusted with the next batch).
 */
export class OracleProcessRunner implements TrialRunner {
  readonly command: string;
  private readonly opts: OracleProcessOptions;
  private child: ChildProcessWithoutNullStreams | undefined;
  private buffer = "";
  private lines: string[] = [];
  private waiter: (() => void) | undefined;
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private spawnError: Error | undefined;
  private stderrTail = "";
  private fatal: string | undefined;
  private answered = 0;

  constructor(command: string, opts: OracleProcessOptions = {}) {
    this.command = command;
    this.opts = opts;
  }

  private start(): ChildProcessWithoutNullStreams {
    if (this.child) return this.child;
    const child = spawn("sh", ["-c", this.command], {
      cwd: this.opts.cwd,
      env: this.opts.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      this.buffer += chunk;
      let nl = this.buffer.indexOf("\n");
      while (nl >= 0) {
        const line = this.buffer.slice(0, nl).replace(/\r$/, "");
        this.buffer = this.buffer.slice(nl + 1);
        // Blank lines carry nothing; tolerate them.
        if (line.trim() !== "") this.lines.push(line);
        nl = this.buffer.indexOf("\n");
      }
      this.wake();
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-2000);
    });
    child.on("error", (err) => {
      this.spawnError = err;
      this.wake();
    });
    // "close" rather than "exit": it fires after the last stdout bytes were delivered.
    child.on("close", (code, signal) => {
      this.exited = { code, signal };
      this.wake();
    });
    // A dead reader makes writes fail with EPIPE; the exit handler reports it properly.
    child.stdin.on("error", () => {});
    this.child = child;
    return child;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private describeExit(): string {
    const e = this.exited;
    const how = e?.signal ? `was killed by ${e.signal}` : `exited with code ${String(e?.code)}`;
    const tail = this.stderrTail.trim();
    return `oracle process ${how}${tail ? `; its stderr ended with: ${tail.split("\n").slice(-5).join(" | ")}` : ""}`;
  }

  async run(profiles: StressProfile[]): Promise<Outcome[]> {
    if (this.fatal)
      throw new OracleError(`oracle runner is unusable after an earlier error: ${this.fatal}`, []);
    const child = this.start();
    const done: Outcome[] = [];
    const fail = (msg: string, line?: string): never => {
      this.fatal = msg;
      this.kill();
      throw new OracleError(msg, done, line);
    };
    if (this.lines.length > 0) {
      const line = this.lines[0]!;
      fail(`oracle sent a line nobody asked for: ${JSON.stringify(line)}`, line);
    }
    if (this.exited) fail(`${this.describeExit()} before profile ${this.answered + 1} was sent`);
    child.stdin.write(profiles.map((p) => `${profileToJson(p)}\n`).join(""));
    const timeoutMs = this.opts.timeoutMs ?? 60_000;
    for (let i = 0; i < profiles.length; i++) {
      const n = this.answered + 1;
      const line = await this.nextLine(timeoutMs);
      if (line === undefined) {
        if (this.spawnError) fail(`could not start the oracle: ${this.spawnError.message}`);
        if (this.exited)
          fail(
            `${this.describeExit()} after ${done.length} of ${profiles.length} answers (answer ${n} never came)`,
          );
        fail(`oracle gave no answer for profile ${n} within ${timeoutMs} ms`);
      }
      let value: unknown;
      try {
        value = JSON.parse(line!);
      } catch {
        fail(`oracle answer ${n} is not JSON: ${JSON.stringify(line)}`, line);
      }
      const parsed = parseOutcome(value);
      if (typeof parsed === "string")
        fail(`oracle answer ${n} is invalid: ${parsed}; line: ${JSON.stringify(line)}`, line);
      done.push(parsed as Outcome);
      this.answered++;
    }
    return done;
  }

  private nextLine(timeoutMs: number): Promise<string | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve(undefined);
      }, timeoutMs);
      const check = () => {
        const line = this.lines.shift();
        if (line !== undefined || this.exited || this.spawnError) {
          clearTimeout(timer);
          resolve(line);
        } else this.waiter = check;
      };
      check();
    });
  }

  private kill(): void {
    if (this.child && !this.exited) this.child.kill("SIGKILL");
  }

  /** Ends the oracle's input and waits (briefly) for it to exit. */
  async close(): Promise<void> {
    const child = this.child;
    if (!child || this.exited) return;
    child.stdin.end();
    const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
    const timer = setTimeout(() => this.kill(), 2000);
    await exited;
    clearTimeout(timer);
  }
}

/** In-process runner over a function (simulators, benchmarks, tests). */
export class FunctionRunner implements TrialRunner {
  constructor(private readonly fn: (p: StressProfile) => Outcome | Promise<Outcome>) {}
  async run(profiles: StressProfile[]): Promise<Outcome[]> {
    const out: Outcome[] = [];
    for (const p of profiles) out.push(await this.fn(p));
    return out;
  }
}
