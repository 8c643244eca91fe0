// Live failure detection for one running shadow (see docs/detection.md).
//
// Sources, each turned into DetectedFailure with a fingerprint from the shared failureFingerprint:
// - console: the shadow's serial console file, followed as QEMU writes it, through the console
//   parser (LiveConsole); re-parsed as a whole at finish() for the run's result;
// - qemu_event: QMP events of the shadow (GUEST_PANICKED, WATCHDOG, BLOCK_IO_ERROR,
//   MEMORY_FAILURE, guest-initiated SHUTDOWN/RESET); STOP/RESUME track whether the guest runs;
// - probe: HTTP probes of the service; latency above the threshold (from the control shadow) over
//   a window is a performance-bottleneck failure;
// - heartbeat: the service stops answering (N consecutive failed probes) or the console stays
//   silent too long, while QEMU says the guest runs: a hang.
// QEMU process death and host-initiated shutdowns are not guest failures: they interrupt the run
// (outcome inconclusive unless a guest failure came first).
//
// A guest that panics under `-action panic=pause` stops inside panic(), before the kernel flushed
// messages printed from exception context (a machine check's report is one): the console stays
// empty. With `completePanics` (default) the observer lets such a guest finish its panic: it sets
// `reboot=shutdown,shutdown=pause` and continues the guest, which flushes its console and then
// stops again at its reboot, paused, as the shadow lab wants it.
import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { type FailureClass, failureFingerprint, type ParsedFailure, ShadowvmError } from "@shadowvm/shared";
import type { QmpEvent } from "../hypervisor/qemu/qmp-client.js";
import { ConsoleFollower } from "./console-follower.js";
import { type ConsoleHit, LiveConsole, parseConsoleFile } from "./live-console.js";
import { decideOutcome, rankDetected } from "./outcome.js";
import {
  type ConsoleView,
  consolePatterns,
  DEFAULT_PRECURSOR_OPTIONS,
  extractPrecursors,
  type PrecursorOptions,
  runPatterns,
  startupPatterns,
} from "./precursors.js";
import { eventEvidence, qemuEventFailure } from "./qemu-events.js";
import {
  describeSample,
  LatencyMonitor,
  MAX_KEPT_SAMPLES,
  type ProbeResult,
  type ProbeTarget,
  probeOnce,
  probeStats,
} from "./service-probe.js";
import type {
  ControlVerdict,
  DetectedFailure,
  DetectionClass,
  FailureSource,
  ObservationResult,
  ProbeSample,
} from "./types.js";

/** What the observer needs of a QMP connection (a QmpClient, or a fake in tests). */
export interface QmpEventSource {
  on(event: "event", listener: (e: QmpEvent) => void): unknown;
  on(event: "close", listener: (reason: Error | undefined) => void): unknown;
  off(event: "event", listener: (e: QmpEvent) => void): unknown;
  off(event: "close", listener: (reason: Error | undefined) => void): unknown;
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
}

export interface HeartbeatOptions {
  /**
   * Console silence (ms, while the guest runs) that counts as a hang: for guests that print a
   * heartbeat on their console. 0 turns it off; a guest whose console is quiet when healthy (the
   * demo guest) must leave it off.
   */
  consoleSilenceMs: number;
  /** Consecutive failed probes (while the guest runs) that make the service unresponsive. */
  probeFailures: number;
}

export interface ShadowObserverOptions {
  /** A QMP connection of the shadow, kept open by the caller for the run (events). */
  qmp?: QmpEventSource;
  /** The shadow's serial console file. */
  consoleLog: string;
  probe?: ProbeTarget;
  /** Probe latency threshold (see latencyThresholdFromControl); may also come later. */
  latencyThresholdMs?: number;
  /** Probes in the latency window (median above the threshold = breach). Default 5. */
  latencyWindow?: number;
  heartbeat?: HeartbeatOptions;
  /** The shadow's QEMU process: its exit is watched. */
  process?: ChildProcess;
  /** Or its pid (polled). */
  pid?: number;
  /** Date.now() of the run start (the shadow resumed). Default: construction time. */
  startedAtMs?: number;
  /** Console poll interval. Default 250 ms. */
  consolePollMs?: number;
  /** Console quiet time after which open reports are completed. Default 1500 ms. */
  consoleSettleMs?: number;
  /** Let a guest paused by its panic finish the panic (see above). Default true. */
  completePanics?: boolean;
  /** Poll interval of `pid`. Default 1000 ms. */
  processPollMs?: number;
  /** Precursor extraction at finish() (see precursors.ts); false turns it off. */
  precursors?: PrecursorOptions | false;
}

export interface FinishOptions {
  /** The control shadow's verdict: unhealthy makes the run inconclusive; its threshold is used. */
  control?: ControlVerdict;
  /**
   * The control shadow's console file (as far as it got): lines whose patterns appear there are
   * noise, not precursors. Missing or unreadable = no control noise.
   */
  noiseConsoleLog?: string;
  /** Further noise patterns (consoleLinePattern form). */
  noisePatterns?: Iterable<string>;
}

/**
 * Distinct console patterns a run reports (kept with its result until the campaign ends); a console
 * with more counts only its first ones as showing known precursors.
 */
const MAX_RUN_PATTERNS = 20_000;

/** Consoles larger than this are not read again for precursors (a note says so). */
const MAX_PRECURSOR_CONSOLE_BYTES = 32 * 1024 * 1024;

async function readConsoleLines(path: string): Promise<string[] | null> {
  try {
    if ((await stat(path)).size > MAX_PRECURSOR_CONSOLE_BYTES) return null;
    return (await readFile(path, "utf8")).split("\n");
  } catch {
    return null;
  }
}

interface Interruption {
  reason: string;
  offsetMs: number;
}

const MAX_EVIDENCE = 20;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no procfs: kill(0) said it exists
  }
}

export class ShadowObserver extends EventEmitter<{ failure: [DetectedFailure]; note: [string] }> {
  readonly startedAtMs: number;
  private readonly o: ShadowObserverOptions;
  private readonly live: LiveConsole;
  private readonly follower: ConsoleFollower;
  private readonly liveConsole = new Map<string, DetectedFailure>();
  private readonly other = new Map<string, DetectedFailure>();
  private readonly notes: string[] = [];
  private readonly samples: ProbeSample[] = [];
  private probesSent = 0;
  private readonly latency: LatencyMonitor;
  private consecutiveProbeFailures = 0;
  private unresponsive = false;
  private consoleSilent = false;
  private lastConsoleAt: number;
  private vmRunning = true;
  private panicked = false;
  private guestStopped = false;
  private exited = false;
  private interruption: Interruption | undefined;
  private started = false;
  private stopping = false;
  private finishing: Promise<ObservationResult> | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private pidTimer: NodeJS.Timeout | undefined;
  private probeLoop: Promise<void> | undefined;
  private readonly probeAbort = new AbortController();
  private wake: (() => void) | undefined;
  private readonly onQmpEvent = (e: QmpEvent) => this.handleEvent(e);
  private readonly onQmpClose = (reason: Error | undefined) => this.handleQmpClose(reason);
  private readonly onExit = (code: number | null, signal: NodeJS.Signals | null) =>
    this.handleExit(code, signal);

  constructor(options: ShadowObserverOptions) {
    super();
    if (options.probe) {
      const url = new URL(options.probe.url); // throws TypeError on a malformed URL, here and not later
      if (url.protocol !== "http:") {
        throw new ShadowvmError(
          "detection",
          "invalid",
          `probe URL must be http://, got ${options.probe.url}`,
        );
      }
    }
    this.o = options;
    this.startedAtMs = options.startedAtMs ?? Date.now();
    this.lastConsoleAt = Date.now();
    this.latency = new LatencyMonitor(options.latencyThresholdMs, options.latencyWindow ?? 5);
    this.live = new LiveConsole((hit) => this.handleConsoleHit(hit));
    this.follower = new ConsoleFollower(options.consoleLog, (chunk) => this.handleConsoleChunk(chunk), {
      pollMs: options.consolePollMs ?? 250,
      onTruncate: () =>
        this.note(`console ${options.consoleLog} was truncated; reading it again from the start`),
      onError: (err) => this.note(`reading console ${options.consoleLog} failed: ${err.message}`),
    });
  }

  /** Starts following the console, QMP events, the process and the probes. */
  start(): this {
    if (this.started) return this;
    this.started = true;
    const o = this.o;
    this.follower.start();
    if (o.qmp) {
      o.qmp.on("event", this.onQmpEvent);
      o.qmp.on("close", this.onQmpClose);
    }
    if (o.process) {
      if (o.process.exitCode !== null || o.process.signalCode !== null) {
        this.handleExit(o.process.exitCode, o.process.signalCode);
      } else {
        o.process.once("exit", this.onExit);
      }
    } else if (o.pid !== undefined) {
      const pid = o.pid;
      const poll = () => {
        if (this.stopping) return;
        if (!pidAlive(pid)) this.handleExit(null, null);
        else this.pidTimer = setTimeout(poll, o.processPollMs ?? 1000);
      };
      poll();
    }
    if (o.heartbeat && o.heartbeat.consoleSilenceMs > 0) this.scheduleSilenceCheck();
    if (o.probe) this.probeLoop = this.runProbes(o.probe);
    return this;
  }

  /** ms since the run start. */
  now(): number {
    return Date.now() - this.startedAtMs;
  }

  /** QEMU says the guest runs, and it has not panicked or shut down. */
  get guestRunning(): boolean {
    return this.vmRunning && !this.panicked && !this.guestStopped && !this.exited;
  }

  /** Console bytes read so far. */
  get consoleBytes(): number {
    return this.live.bytes;
  }

  /** Sets (or replaces) the latency threshold, e.g. once the control shadow has a baseline. */
  setLatencyThreshold(ms: number | undefined): void {
    this.latency.thresholdMs = ms;
  }

  /** Failures seen so far, most important first (the console part is the live parse). */
  failures(): DetectedFailure[] {
    return rankDetected([...this.liveConsole.values(), ...this.other.values()]);
  }

  /** Probe samples so far (the newest MAX_KEPT_SAMPLES). */
  probeSamples(): readonly ProbeSample[] {
    return this.samples;
  }

  /** Resolves with the first failure (already seen or coming) that matches; rejects after timeoutMs. */
  waitForFailure(predicate: (f: DetectedFailure) => boolean, timeoutMs: number): Promise<DetectedFailure> {
    const seen = this.failures().find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onFailure = (f: DetectedFailure) => {
        if (!predicate(f)) return;
        cleanup();
        resolve(f);
      };
      const timer = setTimeout(() => {
        cleanup();
        const have = this.failures().map((f) => `${f.title} [${f.class}, ${f.source}]`);
        reject(
          new Error(
            `no matching failure within ${timeoutMs} ms (seen: ${have.join("; ") || "none"}; notes: ${this.notes.join("; ") || "none"})`,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("failure", onFailure);
      };
      this.on("failure", onFailure);
    });
  }

  /**
   * Ends the observation (call it before stopping the shadow: a QEMU exit after finish() is not
   * an interruption) and returns the run's result. The console file is parsed once more as a
   * whole; failures found only then are emitted too. Idempotent.
   */
  finish(options: FinishOptions = {}): Promise<ObservationResult> {
    this.finishing ??= this.doFinish(options);
    return this.finishing;
  }

  // --- console ---------------------------------------------------------------------------------

  private handleConsoleChunk(chunk: Buffer): void {
    this.lastConsoleAt = Date.now();
    if (this.consoleSilent) this.consoleSilent = false;
    this.live.push(chunk, this.now());
    if (this.stopping) return;
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      this.live.settle();
    }, this.o.consoleSettleMs ?? 1500);
  }

  private handleConsoleHit(hit: ConsoleHit): void {
    const f = hit.failure;
    const existing = this.liveConsole.get(f.fingerprint);
    const offset = this.live.lineOffset(hit.line);
    if (existing) {
      existing.count++;
      existing.lastOffsetMs = Math.max(existing.lastOffsetMs, offset);
      return;
    }
    const d = consoleFailure(f, hit.line, offset);
    this.liveConsole.set(f.fingerprint, d);
    this.emit("failure", d);
  }

  private scheduleSilenceCheck(): void {
    const limit = this.o.heartbeat!.consoleSilenceMs;
    this.silenceTimer = setTimeout(
      () => {
        if (this.stopping) return;
        const quiet = Date.now() - this.lastConsoleAt;
        if (quiet >= limit && this.guestRunning && !this.consoleSilent) {
          this.consoleSilent = true;
          this.record({
            title: "guest console silent",
            class: "hang",
            source: "heartbeat",
            kind: "heartbeat:console",
            evidence: [`no console output for ${quiet} ms while the guest was running (limit ${limit} ms)`],
            offsetMs: this.now(),
            group: 4,
          });
        }
        this.scheduleSilenceCheck();
      },
      Math.max(50, Math.min(1000, limit / 4)),
    );
  }

  // --- QEMU -------------------------------------------------------------------------------------

  private handleEvent(e: QmpEvent): void {
    if (this.stopping) return;
    const offsetMs = e.timestampMs - this.startedAtMs;
    const d = e.data;
    switch (e.event) {
      case "STOP":
        this.vmRunning = false;
        return;
      case "RESUME":
        this.vmRunning = true;
        this.lastConsoleAt = Date.now();
        return;
      case "SHUTDOWN":
      case "RESET": {
        if (e.event === "SHUTDOWN") this.vmRunning = false;
        if (d["guest"] !== true) {
          // A host-side stop or reset: not the guest's doing, and the shadow no longer continues
          // from the capture.
          const what = e.event === "SHUTDOWN" ? "QEMU shut down" : "QEMU reset";
          const reason = `${what} from the host (${String(d["reason"] ?? "unknown")})`;
          this.note(reason);
          this.interrupt(reason, offsetMs);
          return;
        }
        if (e.event === "SHUTDOWN") this.guestStopped = true;
        if (d["reason"] === "guest-panic") {
          this.panicked = true; // recorded under the GUEST_PANICKED title: one failure
          break;
        }
        if (this.panicked) {
          this.note(`${e.event} ${JSON.stringify(d)} after the guest panicked (its consequence)`);
          return;
        }
        break;
      }
      case "GUEST_PANICKED":
        this.panicked = true;
        if (d["action"] === "pause") this.vmRunning = false;
        break;
    }
    const hit = qemuEventFailure(e);
    if (!hit) return;
    this.record({
      ...hit,
      source: "qemu_event",
      evidence: [eventEvidence(e)],
      offsetMs,
      group: 2,
    });
    if (e.event === "GUEST_PANICKED" && d["action"] === "pause" && (this.o.completePanics ?? true)) {
      void this.completePanic();
    }
  }

  private async completePanic(): Promise<void> {
    const qmp = this.o.qmp;
    if (!qmp) return;
    try {
      await qmp.execute("set-action", { reboot: "shutdown", shutdown: "pause" });
    } catch (err) {
      this.note(
        `cannot let the panicked guest finish its panic: set-action failed (${(err as Error).message})`,
      );
      return;
    }
    try {
      await qmp.execute("cont");
      this.note(
        "the guest paused in its panic was continued to flush its console; it pauses again at its reboot",
      );
    } catch (err) {
      this.note(`cannot continue the panicked guest: ${(err as Error).message}`);
    }
  }

  private handleQmpClose(reason: Error | undefined): void {
    if (this.stopping) return;
    this.note(`QMP connection closed${reason ? ` (${reason.message})` : ""}: QEMU events are no longer seen`);
    if (!this.o.process && this.o.pid === undefined) {
      this.vmRunning = false;
      this.interrupt("QMP connection lost (no QEMU process to watch)", this.now());
    }
  }

  private handleExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || this.exited) return;
    this.exited = true;
    this.vmRunning = false;
    const how = signal ? `signal ${signal}` : code !== null ? `code ${code}` : "gone";
    if (this.guestStopped) {
      this.note(`QEMU exited (${how}) after the guest shut down`);
      return;
    }
    this.interrupt(`QEMU process exited (${how})`, this.now());
  }

  private interrupt(reason: string, offsetMs: number): void {
    if (this.interruption) return;
    this.interruption = { reason, offsetMs };
  }

  // --- probes -----------------------------------------------------------------------------------

  private async runProbes(target: ProbeTarget): Promise<void> {
    while (!this.stopping) {
      const t0 = Date.now();
      const runningBefore = this.guestRunning;
      this.probesSent++;
      const r = await probeOnce(target.url, target.timeoutMs, this.probeAbort.signal).catch(
        (err: Error): ProbeResult => ({ ok: false, latencyMs: 0, timedOut: false, error: err.message }),
      );
      if (this.stopping) return;
      const sample: ProbeSample = {
        offsetMs: this.now(),
        ok: r.ok,
        latencyMs: r.latencyMs,
        timedOut: r.timedOut,
        guestRunning: runningBefore && this.guestRunning,
        ...(r.status !== undefined ? { status: r.status } : {}),
        ...(r.error !== undefined ? { error: r.error } : {}),
      };
      this.handleSample(sample);
      const wait = t0 + target.intervalMs - Date.now();
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }

  private handleSample(s: ProbeSample): void {
    this.samples.push(s);
    if (this.samples.length > MAX_KEPT_SAMPLES) this.samples.shift();
    if (!s.guestRunning) return;
    const hb = this.o.heartbeat;
    if (s.ok) {
      this.consecutiveProbeFailures = 0;
      this.unresponsive = false;
    } else {
      this.consecutiveProbeFailures++;
      if (
        hb &&
        hb.probeFailures > 0 &&
        this.consecutiveProbeFailures >= hb.probeFailures &&
        !this.unresponsive
      ) {
        this.unresponsive = true;
        const recent = this.samples.filter((x) => x.guestRunning).slice(-this.consecutiveProbeFailures);
        this.record({
          title: "service unresponsive",
          class: "hang",
          source: "heartbeat",
          kind: "heartbeat:service",
          evidence: [
            `${this.consecutiveProbeFailures} consecutive probes of ${this.o.probe!.url} failed while the guest was running`,
            ...recent.slice(-MAX_EVIDENCE + 2).map(describeSample),
            `last console output ${Date.now() - this.lastConsoleAt} ms ago`,
          ],
          offsetMs: s.offsetMs,
          group: 4,
        });
      }
    }
    const breach = this.latency.add(s);
    if (breach) this.recordBreach(breach, this.latency.thresholdMs!);
  }

  private recordBreach(window: ProbeSample[], thresholdMs: number): void {
    this.record({
      title: "service probe latency breach",
      class: "performance",
      source: "probe",
      kind: "probe:latency",
      evidence: [
        `median probe latency over ${window.length} probes above the threshold of ${Math.round(thresholdMs)} ms`,
        ...window.map(describeSample),
      ],
      offsetMs: window[window.length - 1]!.offsetMs,
      group: 5,
    });
  }

  // --- bookkeeping ------------------------------------------------------------------------------

  private record(x: {
    title: string;
    class: DetectionClass;
    source: FailureSource;
    kind: string;
    evidence: string[];
    offsetMs: number;
    group: number;
  }): void {
    const fingerprint = failureFingerprint(x.title, x.class as FailureClass);
    const existing = this.other.get(fingerprint);
    if (existing) {
      existing.count++;
      existing.lastOffsetMs = Math.max(existing.lastOffsetMs, x.offsetMs);
      return;
    }
    const f: DetectedFailure = {
      title: x.title,
      class: x.class,
      frame: null,
      fingerprint,
      corrupted: false,
      evidence: x.evidence.slice(0, MAX_EVIDENCE),
      offsetMs: x.offsetMs,
      lastOffsetMs: x.offsetMs,
      count: 1,
      source: x.source,
      kind: x.kind,
      group: x.group,
    };
    this.other.set(fingerprint, f);
    this.emit("failure", f);
  }

  private note(text: string): void {
    this.notes.push(text);
    this.emit("note", text);
  }

  private async doFinish(options: FinishOptions): Promise<ObservationResult> {
    if (!this.started) this.start();
    // Read what the console holds now, then stop every source.
    await this.follower.drain();
    this.stopping = true;
    const o = this.o;
    if (o.qmp) {
      o.qmp.off("event", this.onQmpEvent);
      o.qmp.off("close", this.onQmpClose);
    }
    o.process?.off("exit", this.onExit);
    for (const t of [this.settleTimer, this.silenceTimer, this.pidTimer]) if (t) clearTimeout(t);
    this.probeAbort.abort();
    this.wake?.();
    await this.probeLoop;
    await this.follower.stop();
    this.live.settle();
    const finishedAtMs = Date.now();

    // The authoritative console parse: the whole file in one stream.
    const parsed = await parseConsoleFile(o.consoleLog).catch((err: Error) => {
      this.note(`re-reading console ${o.consoleLog} failed: ${err.message}; keeping the live parse`);
      return null;
    });
    let consoleFailures: DetectedFailure[];
    let dropped = this.live.dropped;
    if (parsed) {
      dropped = parsed.dropped;
      const byFp = new Map<string, DetectedFailure>();
      for (const f of parsed.failures) {
        const offset = this.live.lineOffset(f.line);
        const seen = byFp.get(f.fingerprint);
        if (seen) {
          seen.count++;
          seen.lastOffsetMs = Math.max(seen.lastOffsetMs, offset);
          continue;
        }
        byFp.set(f.fingerprint, consoleFailure(f, f.line, offset));
      }
      for (const [fp, f] of byFp) if (!this.liveConsole.has(fp)) this.emit("failure", f);
      for (const [fp, f] of this.liveConsole) {
        if (!byFp.has(fp)) {
          this.note(
            `console failure "${f.title}" seen live (a report split by a pause in the output) is not in the whole-console parse`,
          );
        }
      }
      consoleFailures = [...byFp.values()];
    } else {
      if (this.live.bytes > 0)
        this.note(`console ${o.consoleLog} is gone at finish; the result holds the live parse`);
      consoleFailures = [...this.liveConsole.values()];
    }

    // A threshold that arrived only with the control's verdict: judge the recorded probes now.
    const threshold = options.control?.latencyThresholdMs ?? this.latency.thresholdMs;
    if (threshold !== undefined && this.latency.thresholdMs === undefined) {
      const monitor = new LatencyMonitor(threshold, o.latencyWindow ?? 5);
      for (const s of this.samples) {
        const breach = monitor.add(s);
        if (breach) this.recordBreach(breach, threshold);
      }
    }

    const failures = rankDetected([...consoleFailures, ...this.other.values()]);
    const consolePatterns = await this.addPrecursors(failures, options);
    const decision = decideOutcome({
      failures,
      ...(this.interruption ? { interruption: this.interruption } : {}),
      ...(options.control ? { control: options.control } : {}),
    });
    return {
      outcome: decision.outcome,
      failures,
      notes: [...decision.notes, ...this.notes],
      startedAtMs: this.startedAtMs,
      finishedAtMs,
      ...(this.interruption ? { interruption: { ...this.interruption } } : {}),
      probes: probeStats(this.samples, this.probesSent),
      console: { bytes: this.live.bytes, lines: this.live.lines, droppedFailures: dropped },
      ...(threshold !== undefined ? { latencyThresholdMs: threshold } : {}),
      ...(consolePatterns ? { consolePatterns } : {}),
    };
  }

  /**
   * Sets `precursors` on every failure (precursors.ts): the console lines before it, minus the
   * control's console and this shadow's start-up lines. Returns the console's patterns after the
   * start-up window (runPatterns), or undefined when precursors are off or the console is unread.
   */
  private async addPrecursors(
    failures: DetectedFailure[],
    options: FinishOptions,
  ): Promise<string[] | undefined> {
    if (this.o.precursors === false) return undefined;
    const popts = { ...DEFAULT_PRECURSOR_OPTIONS, ...(this.o.precursors ?? {}) };
    const lines = await readConsoleLines(this.o.consoleLog);
    if (!lines) {
      if (this.live.bytes > MAX_PRECURSOR_CONSOLE_BYTES)
        this.note(`console larger than ${MAX_PRECURSOR_CONSOLE_BYTES} bytes: no precursors extracted`);
      return undefined;
    }
    const view: ConsoleView = { lines, lineOffsetMs: (n) => this.live.lineOffset(n) };
    const shown = [...runPatterns(view, popts.startupNoiseMs, MAX_RUN_PATTERNS)];
    if (failures.length === 0) return shown;
    const noise = startupPatterns(view, popts.startupNoiseMs);
    if (options.noiseConsoleLog) {
      const control = await readConsoleLines(options.noiseConsoleLog);
      if (control) for (const p of consolePatterns(control)) noise.add(p);
    }
    for (const p of options.noisePatterns ?? []) noise.add(p);
    for (const f of failures) {
      f.precursors = extractPrecursors(
        view,
        {
          ...(f.source === "console" && f.line !== undefined ? { line: f.line } : {}),
          offsetMs: f.offsetMs,
          evidence: f.evidence,
        },
        noise,
        popts,
      );
    }
    return shown;
  }
}

function consoleFailure(f: ParsedFailure, line: number, offsetMs: number): DetectedFailure {
  return {
    title: f.title,
    class: f.class,
    frame: f.frame,
    fingerprint: f.fingerprint,
    corrupted: f.corrupted,
    evidence: f.evidence,
    offsetMs,
    lastOffsetMs: offsetMs,
    count: 1,
    source: "console",
    kind: f.kind,
    line,
    group: f.tier === 0 ? 0 : f.tier === 1 ? 1 : 3,
  };
}
