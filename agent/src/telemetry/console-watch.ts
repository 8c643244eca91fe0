// The production console watch: follows each production VM's own serial console log, where it is a
// file the agent can read, and reports two things to the collector as ProductionEvent frames:
// - PRECURSOR: a line whose pattern (shared consoleLinePattern, the fingerprint normalisation) is a
//   precursor of a signature this VM's shadows produced (the agent's SignatureDb holds them,
//   recorded with the shadow runs): an early warning;
// - FAILURE: a failure report the console parser (shared ConsoleScanner, run incrementally) finds on
//   the production console itself, e.g. an OOM kill: production really failed, with its fingerprint.
//
// Where the log is: `telemetry.console_logs` ({<vm name or uuid>: path}) first, else discovered from
// the VM's QEMU command line (consoleLogFromCommandLine): a serial port's chardev with a `logfile=`
// (libvirt `<log file=...>`) or a `file` backend (`-chardev file,path=...`, libvirt
// `<serial type='file'>`), or `-serial file:PATH`. VMs whose console is a pty or socket without a log
// are not watched (their console is not on disk).
//
// Each file is followed by a ConsoleTail (start at the end, rotation, truncation, bounded lines).
// Like the shadows' live console, the scanner of a quiet console is ended after `settleMs` (a guest
// that stops printing after a report would otherwise keep it open) and restarted, and also every
// `maxScannerLines` lines (bounds what a flood keeps in memory). Events are rate limited per (VM,
// kind, fingerprint, pattern): at most one per `minEventIntervalMs`; the ones held back are counted
// in the next event's `suppressed`.
import type { Logger, shadowvm } from "@shadowvm/shared";
import { ConsoleScanner, consoleLinePattern, MAX_PATTERN_CHARS, type ParsedFailure } from "@shadowvm/shared";
import { readCommandLine } from "../hypervisor/qemu/qemu-process.js";
import type { PrecursorMatch, SignatureDb } from "../signatures/index.js";
import { ConsoleTail, type ConsoleTailOptions } from "./console-tail.js";

/** A production VM as the telemetry loop knows it. */
export interface WatchedVm {
  uuid: string;
  name: string;
  pid?: number | undefined;
  /** QEMU argv; read from /proc/<pid>/cmdline when absent. */
  commandLine?: readonly string[];
}

/** Where events go (the agent's Spool fits). */
export interface EventSink {
  append(body: { production_event: shadowvm.v1.IProductionEvent }): Promise<unknown>;
}

export interface ConsoleWatchOptions {
  /** The VMs to watch (called at every refresh). */
  vms: () => Iterable<WatchedVm>;
  /** Explicit console logs by VM name or uuid (telemetry.console_logs). */
  overrides?: Record<string, string>;
  /** Precursors per VM; a function when the database is opened lazily. */
  signatures?: SignatureDb | (() => Promise<SignatureDb | undefined>);
  sink: EventSink;
  logger: Logger;
  /** Read interval. Default 1000 ms. */
  pollMs?: number;
  /** VM list and precursor refresh. Default 30 000 ms. */
  refreshMs?: number;
  /** Quiet time after which open reports are completed. Default 3000 ms. */
  settleMs?: number;
  /** Scanner restarted after this many lines. Default 50 000. */
  maxScannerLines?: number;
  /** One event per (VM, kind, fingerprint, pattern) per this interval. Default 600 000 ms. */
  minEventIntervalMs?: number;
  tail?: ConsoleTailOptions;
  /** Tests: the clock. */
  now?: () => number;
}

export interface ConsoleWatchStats {
  vms: number;
  lines: number;
  precursors: number;
  failures: number;
  suppressed: number;
  errors: number;
}

const SERIAL_DEVICES = new Set([
  "isa-serial",
  "pci-serial",
  "pci-serial-2x",
  "pci-serial-4x",
  "virtconsole",
  "spapr-vty",
  "sclpconsole",
  "sclplmconsole",
]);

/** QEMU's `key=value,...` (",," is a literal comma); the first bare item is the head. */
function keyVal(text: string): { head: string | undefined; props: Map<string, string> } {
  const props = new Map<string, string>();
  let head: string | undefined;
  const parts = text.replaceAll(",,", "\u0000").split(",");
  parts.forEach((raw, i) => {
    const p = raw.replaceAll("\u0000", ",");
    const eq = p.indexOf("=");
    if (eq < 0 && i === 0) head = p;
    else if (eq >= 0) props.set(p.slice(0, eq), p.slice(eq + 1));
  });
  return { head, props };
}

function device(value: string): { driver: string | undefined; chardev: string | undefined } {
  if (value.trimStart().startsWith("{")) {
    try {
      const j = JSON.parse(value) as Record<string, unknown>;
      return {
        driver: typeof j["driver"] === "string" ? j["driver"] : undefined,
        chardev: typeof j["chardev"] === "string" ? j["chardev"] : undefined,
      };
    } catch {
      return { driver: undefined, chardev: undefined };
    }
  }
  const { head, props } = keyVal(value);
  return { driver: props.get("driver") ?? head, chardev: props.get("chardev") };
}

/**
 * The serial console log file named by a QEMU command line, or undefined: the first serial port
 * whose chardev logs to a file (`logfile=`) or is a file (`file,path=`), or `-serial file:PATH`.
 */
export function consoleLogFromCommandLine(argv: readonly string[]): string | undefined {
  const chardevs = new Map<string, { backend: string; path?: string; logfile?: string }>();
  const serials: ({ chardev: string } | { file: string })[] = [];
  for (let i = 0; i < argv.length - 1; i++) {
    const opt = argv[i]!.replace(/^--/, "-");
    const value = argv[i + 1]!;
    if (opt === "-chardev") {
      const { head, props } = keyVal(value);
      const id = props.get("id");
      if (!id) continue;
      const c: { backend: string; path?: string; logfile?: string } = {
        backend: props.get("backend") ?? head ?? "",
      };
      const path = props.get("path");
      const logfile = props.get("logfile");
      if (path) c.path = path;
      if (logfile) c.logfile = logfile;
      chardevs.set(id, c);
    } else if (opt === "-device") {
      const d = device(value);
      if (d.driver && d.chardev && SERIAL_DEVICES.has(d.driver)) serials.push({ chardev: d.chardev });
    } else if (opt === "-serial") {
      if (value.startsWith("file:")) serials.push({ file: value.slice(5) });
      else if (value.startsWith("chardev:")) serials.push({ chardev: value.slice(8) });
    } else continue;
    i++;
  }
  // libvirt names its serial chardevs charserialN; use them if no device names one.
  if (serials.length === 0)
    for (const id of [...chardevs.keys()].sort())
      if (/^(?:char)?serial\d+$/.test(id)) serials.push({ chardev: id });
  for (const s of serials) {
    if ("file" in s) return s.file;
    const c = chardevs.get(s.chardev);
    if (c?.logfile) return c.logfile;
    if (c?.backend === "file" && c.path) return c.path;
  }
  return undefined;
}

interface VmWatch {
  vm: WatchedVm;
  path: string;
  source: "config" | "cmdline";
  tail: ConsoleTail;
  scanner: ConsoleScanner;
  /** Global line number of the scanner's line 0. */
  base: number;
  lineNo: number;
  scannerLines: number;
  lastLineAt: number;
  /** Arrival time of recent lines (ring): line -> ms. */
  times: Float64Array;
  precursors: Map<string, PrecursorMatch[]>;
}

const TIME_RING = 4096;
const MAX_LIMITER_KEYS = 10_000;
const clip = (s: string) => (s.length > 1000 ? `${s.slice(0, 1000)}…` : s);

export class ConsoleWatch {
  readonly stats: ConsoleWatchStats = {
    vms: 0,
    lines: 0,
    precursors: 0,
    failures: 0,
    suppressed: 0,
    errors: 0,
  };
  private readonly o: ConsoleWatchOptions;
  private readonly now: () => number;
  private readonly watches = new Map<string, VmWatch>();
  private readonly limiter = new Map<string, { sentAt: number; suppressed: number }>();
  private readonly cmdlines = new Map<number, readonly string[]>();
  private pollTimer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private signaturesDirty = true;
  private db: SignatureDb | undefined;
  private readonly warned = new Set<string>();

  constructor(options: ConsoleWatchOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
  }

  /** Watched VMs: uuid -> console log path. */
  get watched(): Map<string, { name: string; path: string; source: "config" | "cmdline" }> {
    return new Map(
      [...this.watches].map(([u, w]) => [u, { name: w.vm.name, path: w.path, source: w.source }]),
    );
  }

  start(): this {
    if (this.pollTimer || this.stopped) return this;
    void this.serial(() => this.refresh());
    this.pollTimer = setInterval(() => void this.serial(() => this.pollAll()), this.o.pollMs ?? 1000);
    this.refreshTimer = setInterval(() => void this.serial(() => this.refresh()), this.o.refreshMs ?? 30_000);
    return this;
  }

  /** One refresh and one poll, in order (tests, and start-up). */
  async tick(): Promise<void> {
    await this.serial(() => this.refresh());
    await this.serial(() => this.pollAll());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.pollTimer = undefined;
    this.refreshTimer = undefined;
    await this.running;
    for (const w of this.watches.values()) {
      this.settle(w);
      await w.tail.close();
    }
    this.watches.clear();
    this.db?.off("update", this.onUpdate);
    this.db?.off("precursors", this.onUpdate);
  }

  private readonly onUpdate = () => {
    this.signaturesDirty = true;
  };

  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.running.then(async () => {
      if (this.stopped) return;
      try {
        await fn();
      } catch (err) {
        this.stats.errors++;
        this.o.logger.warn({ err: (err as Error).message }, "console watch: error");
      }
    });
    this.running = run;
    return run;
  }

  private warnOnce(key: string, obj: Record<string, unknown>, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.o.logger.warn(obj, msg);
  }

  private commandLine(vm: WatchedVm): readonly string[] {
    if (vm.commandLine) return vm.commandLine;
    if (!vm.pid) return [];
    let c = this.cmdlines.get(vm.pid);
    if (!c) {
      c = readCommandLine(vm.pid);
      if (this.cmdlines.size > 1000) this.cmdlines.clear();
      this.cmdlines.set(vm.pid, c);
    }
    return c;
  }

  private async refresh(): Promise<void> {
    const overrides = this.o.overrides ?? {};
    const seen = new Set<string>();
    for (const vm of this.o.vms()) {
      seen.add(vm.uuid);
      const configured = overrides[vm.uuid] ?? overrides[vm.name];
      const path = configured ?? consoleLogFromCommandLine(this.commandLine(vm));
      const current = this.watches.get(vm.uuid);
      if (current && current.path === path) {
        current.vm = vm;
        continue;
      }
      if (current) await this.unwatch(current);
      if (!path) continue;
      const w: VmWatch = {
        vm,
        path,
        source: configured ? "config" : "cmdline",
        tail: new ConsoleTail(
          path,
          (line) => this.onLine(w, line),
          this.o.tail,
          (e, detail) => this.o.logger.info({ vm: vm.name, event: e, detail }, "console watch: console log"),
        ),
        scanner: new ConsoleScanner(),
        base: 0,
        lineNo: 0,
        scannerLines: 0,
        lastLineAt: 0,
        times: new Float64Array(TIME_RING),
        precursors: new Map(),
      };
      this.watches.set(vm.uuid, w);
      this.signaturesDirty = true;
      this.o.logger.info({ vm: vm.name, uuid: vm.uuid, path, source: w.source }, "console watch: watching");
    }
    for (const [uuid, w] of this.watches) if (!seen.has(uuid)) await this.unwatch(w);
    this.stats.vms = this.watches.size;
    if (this.signaturesDirty) await this.loadPrecursors();
  }

  private async unwatch(w: VmWatch): Promise<void> {
    this.settle(w);
    await w.tail.close();
    this.watches.delete(w.vm.uuid);
  }

  private async signatureDb(): Promise<SignatureDb | undefined> {
    if (this.db) return this.db;
    const s = this.o.signatures;
    if (!s) return undefined;
    try {
      const db = typeof s === "function" ? await s() : s;
      if (db) {
        this.db = db;
        db.on("update", this.onUpdate);
        db.on("precursors", this.onUpdate);
      }
      return db;
    } catch (err) {
      this.warnOnce(
        "db",
        { err: (err as Error).message },
        "console watch: signature database unavailable; retrying",
      );
      return undefined;
    }
  }

  private async loadPrecursors(): Promise<void> {
    if (this.watches.size === 0) return;
    const db = await this.signatureDb();
    if (!db) return;
    this.signaturesDirty = false;
    for (const w of this.watches.values()) {
      const map = new Map<string, PrecursorMatch[]>();
      for (const m of await db.precursorsFor([w.vm.uuid, w.vm.name])) {
        const list = map.get(m.pattern) ?? [];
        list.push(m);
        map.set(m.pattern, list);
      }
      w.precursors = map;
    }
  }

  private async pollAll(): Promise<void> {
    const now = this.now();
    for (const w of this.watches.values()) {
      try {
        await w.tail.poll();
      } catch (err) {
        this.stats.errors++;
        this.warnOnce(
          `read:${w.path}`,
          { vm: w.vm.name, path: w.path, err: (err as Error).message },
          "console watch: cannot read the console log",
        );
      }
      if (w.scannerLines > 0 && now - w.lastLineAt >= (this.o.settleMs ?? 3000)) this.settle(w);
    }
  }

  private onLine(w: VmWatch, line: string): void {
    const now = this.now();
    this.stats.lines++;
    w.lineNo++;
    w.scannerLines++;
    w.lastLineAt = now;
    w.times[w.lineNo % TIME_RING] = now;
    if (w.precursors.size > 0) {
      const p = consoleLinePattern(line);
      const matches = p ? w.precursors.get(p.pattern) : undefined;
      if (p && matches) {
        for (const m of matches) {
          this.event(w, {
            kind: 1,
            ts_ms: now,
            fingerprint: m.fingerprint,
            title: m.title,
            class: m.class,
            line: clip(line),
            pattern: p.pattern.slice(0, MAX_PATTERN_CHARS),
            precursor_runs_with: m.count,
            precursor_runs_without: m.without,
          });
        }
      }
    }
    for (const f of w.scanner.push(`${line}\n`)) this.failure(w, f);
    if (w.scannerLines >= (this.o.maxScannerLines ?? 50_000)) this.settle(w);
  }

  /** Ends the scanner (completing open reports) and starts a fresh one. */
  private settle(w: VmWatch): void {
    if (w.scannerLines === 0) return;
    for (const f of w.scanner.end()) this.failure(w, f);
    w.scanner = new ConsoleScanner();
    w.base = w.lineNo;
    w.scannerLines = 0;
  }

  private failure(w: VmWatch, f: ParsedFailure): void {
    const line = w.base + f.line;
    const at = w.lineNo - line < TIME_RING ? w.times[line % TIME_RING]! : 0;
    this.event(w, {
      kind: 2,
      ts_ms: at > 0 ? at : this.now(),
      fingerprint: f.fingerprint,
      title: f.title,
      class: f.class,
      line: clip(f.evidence[0] ?? ""),
      pattern: "",
    });
  }

  private event(
    w: VmWatch,
    e: Required<
      Pick<
        shadowvm.v1.IProductionEvent,
        "kind" | "ts_ms" | "fingerprint" | "title" | "class" | "line" | "pattern"
      >
    > &
      Pick<shadowvm.v1.IProductionEvent, "precursor_runs_with" | "precursor_runs_without">,
  ): void {
    const key = `${w.vm.uuid}\u0000${e.kind}\u0000${e.fingerprint}\u0000${e.pattern}`;
    const now = this.now();
    const seen = this.limiter.get(key);
    if (seen && now - seen.sentAt < (this.o.minEventIntervalMs ?? 600_000)) {
      seen.suppressed++;
      this.stats.suppressed++;
      return;
    }
    if (!seen && this.limiter.size >= MAX_LIMITER_KEYS)
      this.limiter.delete(this.limiter.keys().next().value!);
    const suppressed = seen?.suppressed ?? 0;
    this.limiter.delete(key);
    this.limiter.set(key, { sentAt: now, suppressed: 0 });
    if (e.kind === 1) this.stats.precursors++;
    else this.stats.failures++;
    const body: shadowvm.v1.IProductionEvent = { vm_uuid: w.vm.uuid, vm_name: w.vm.name, ...e, suppressed };
    this.o.logger.info(
      {
        vm: w.vm.name,
        kind: e.kind === 1 ? "precursor" : "failure",
        title: e.title,
        fingerprint: e.fingerprint,
        line: e.line,
      },
      e.kind === 1
        ? "console watch: precursor seen on the production console"
        : "console watch: failure on the production console",
    );
    this.o.sink.append({ production_event: body }).catch((err: Error) => {
      this.stats.errors++;
      this.o.logger.warn({ vm: w.vm.name, err: err.message }, "console watch: event not spooled");
    });
  }
}

/** The watch as `serve` runs it: the signature database at <data_dir>/signatures, opened when needed. */
export function startConsoleWatch(
  config: { data_dir: string; telemetry: { console_logs?: Record<string, string> } },
  deps: { vms: () => Iterable<WatchedVm>; sink: EventSink; logger: Logger },
): { watch: ConsoleWatch; stop(): Promise<void> } {
  let db: Promise<SignatureDb> | undefined;
  const watch = new ConsoleWatch({
    vms: deps.vms,
    overrides: config.telemetry.console_logs ?? {},
    signatures: async () => {
      db ??= import("../signatures/index.js").then((m) => m.SignatureDb.open(m.signatureDbPath(config)));
      return db.catch((err) => {
        db = undefined;
        throw err;
      });
    },
    sink: deps.sink,
    logger: deps.logger,
  }).start();
  return {
    watch,
    async stop() {
      await watch.stop();
      await (await db?.catch(() => undefined))?.close();
    },
  };
}
