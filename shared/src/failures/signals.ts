// Operational signals that matter on production kernels but are not kernel crash reports:
// OOM kills, block I/O errors, filesystem errors and read-only remounts, machine checks and
// memory failures, userspace segfaults and unknown NMIs.
//
// Rules:
// - Titles hold what identifies the failure and drop what varies between occurrences: pids,
//   addresses, sectors, block numbers, timestamps, CPU numbers. Victim process names are kept
//   (an OOM kill of postgres is a different signature from one of java) but normalised for
//   kernel threads (`kworker/3:1H` -> `kworker`). Disks are named without partition numbers.
// - Repeats of the same title within BURST_LINES console lines of each other are one failure
//   (an I/O error storm is one signal); the failure completes once the burst is quiet or the
//   console ends. OOM kills are grouped from `invoked oom-killer` to `Killed process`.
// - Machine-check lines (`mce: [Hardware Error]: ...`) form one burst whose title comes from its
//   most specific line. An uncorrected machine check is a root cause: it ranks with kernel
//   reports and makes the panic it triggers a consequence. Everything else ranks after kernel
//   reports.
// Matching uses literal pre-checks and anchored, linear regexes on lines capped at a few KB.

import type { FailureClass } from "./types.js";

export interface SignalReport {
  kind: string;
  class: FailureClass;
  title: string;
  line: number;
  evidence: string[];
  /** 0: a root cause of kernel failure (uncorrected machine check); 2: operational signal. */
  tier: 0 | 2;
}

/** Lines a burst of identical signals may be apart and still count as one failure. */
export const BURST_LINES = 200;
const MAX_EVIDENCE = 20;
const OOM_WINDOW = 600;
const MAX_SIGNAL_TEXT = 1024;

/** `kworker/3:1H` -> `kworker`, `ksoftirqd/0` -> `ksoftirqd`; userspace names are kept. */
export function normalizeComm(comm: string): string {
  const c = comm.trim();
  const slash = c.indexOf("/");
  if (slash > 0) return c.slice(0, slash);
  return c.length > 0 ? c : "?";
}

const OOM_KILL_PREFIX = "OOM kill of ";
const MEMCG_SUFFIX = " (memory cgroup)";

/** The title of an OOM kill: the process the OOM killer ended (its comm may hold spaces). */
export function oomKillTitle(victim: string, memcg: boolean): string {
  return `${OOM_KILL_PREFIX}${victim}${memcg ? MEMCG_SUFFIX : ""}`;
}

/** The process an OOM-kill title names (oomKillTitle's inverse); undefined for any other title. */
export function oomKillVictim(title: string): string | undefined {
  if (!title.startsWith(OOM_KILL_PREFIX)) return undefined;
  const rest = title.slice(OOM_KILL_PREFIX.length);
  return rest.endsWith(MEMCG_SUFFIX) ? rest.slice(0, -MEMCG_SUFFIX.length) : rest;
}

/** `vda1` -> `vda`, `nvme0n1p2` -> `nvme0n1`, `mmcblk0p1` -> `mmcblk0`; others unchanged. */
export function diskOf(dev: string): string {
  const d = dev.replace(/^\/dev\//, "");
  const p = /^((?:nvme\d+n\d+|mmcblk\d+|loop\d+|nbd\d+|rbd\d+|md\d+))p\d+$/.exec(d);
  if (p) return p[1]!;
  const s = /^((?:[shv]d|xvd)[a-z]+)\d+$/.exec(d);
  if (s) return s[1]!;
  return d;
}

interface Hit {
  kind: string;
  class: FailureClass;
  title: string;
}

const IO_ERROR_RE = /(?:^|: )([A-Za-z/][A-Za-z/ ]*?) error, dev ([^\s,]+)/;
const BUFFER_IO_RE = /^Buffer I\/O error on dev(?:ice)? ([^\s,]+)/;
const EXT_ERROR_RE = /^(EXT[234]-fs) error \(device [^)]+\)(?::| in) ([A-Za-z_]\w*)/;
const REMOUNT_RO_RE = /^([A-Za-z0-9]+)(?:-fs)? \([^)]+\): Remounting filesystem read-only/;
const ABORT_JOURNAL_RE = /^Aborting journal on device /;
const JBD2_IO_RE =
  /^JBD2: (?:Detected IO errors while flushing file data|Error -?\d+ detected when updating journal superblock)/;
const XFS_RE = /^XFS \([^)]+\): (.*)$/;
const BTRFS_ERROR_IN_RE = /^BTRFS(?: error|: error| critical) \(device [^)]+\)(?::)? in ([A-Za-z_]\w*)/;
const BTRFS_RO_RE = /^BTRFS (?:info|error|warning) \(device [^)]+\):? forced readonly/;
const MEMORY_FAILURE_RE = /^Memory failure: (?:0x[0-9a-f]+: )?(.*)$/;
const EDAC_RE = /^EDAC \S+: (?:\d+ )?(CE|UE) /;
const NMI_UNKNOWN_RE = /^Uhhuh\. NMI received for unknown reason/;
const NMI_OTHER_RE = /^NMI: (PCI system error \(SERR\)|IOCK error)/;

function xfsTitle(msg: string): string | null {
  const io = /^metadata I\/O error(?: in "([A-Za-z_]\w*)|: block \S+ \("([A-Za-z_]\w*)"\))/.exec(msg);
  if (io) return `XFS: metadata I/O error in ${io[1] ?? io[2]}`;
  if (/^Corruption of in-memory data detected/.test(msg)) return "XFS: corruption of in-memory data";
  if (/^Corruption detected/.test(msg)) return "XFS: corruption detected";
  if (/^Internal error /.test(msg)) {
    const f = /of file (?:\S*\/)?([\w.]+)/.exec(msg);
    return `XFS: internal error${f ? ` in ${f[1]}` : ""}`;
  }
  if (/[Ss]hut(?:ting)? down filesystem|has been shut down|force_shutdown/.test(msg))
    return "XFS: filesystem shut down";
  return null;
}

/** Single-line signals (everything except OOM and machine-check bursts). */
function matchLine(text: string): Hit | null {
  if (text.includes(" error, dev ")) {
    const m = IO_ERROR_RE.exec(text);
    if (m) return { kind: "io-error", class: "io_error", title: `I/O error on ${diskOf(m[2]!)}` };
  }
  if (text.startsWith("Buffer I/O error")) {
    const m = BUFFER_IO_RE.exec(text);
    if (m) return { kind: "io-error", class: "io_error", title: `I/O error on ${diskOf(m[1]!)}` };
  }
  if (text.startsWith("EXT")) {
    const m = EXT_ERROR_RE.exec(text);
    if (m) return { kind: "fs-error", class: "fs_error", title: `${m[1]!} error in ${m[2]!}` };
  }
  if (text.includes("Remounting filesystem read-only")) {
    const m = REMOUNT_RO_RE.exec(text);
    if (m) {
      const fs = m[1]!.toUpperCase().startsWith("EXT") ? `${m[1]!.toUpperCase()}-fs` : m[1]!;
      return { kind: "fs-readonly", class: "fs_error", title: `${fs}: filesystem remounted read-only` };
    }
  }
  if (ABORT_JOURNAL_RE.test(text))
    return { kind: "fs-journal", class: "fs_error", title: "JBD2: journal aborted" };
  if (text.startsWith("JBD2: ") && JBD2_IO_RE.test(text))
    return { kind: "fs-journal", class: "fs_error", title: "JBD2: journal I/O error" };
  if (text.startsWith("XFS (")) {
    const m = XFS_RE.exec(text);
    const title = m ? xfsTitle(m[1]!) : null;
    if (title) return { kind: "fs-error", class: "fs_error", title };
  }
  if (text.startsWith("BTRFS")) {
    const m = BTRFS_ERROR_IN_RE.exec(text);
    if (m) return { kind: "fs-error", class: "fs_error", title: `BTRFS error in ${m[1]!}` };
    if (BTRFS_RO_RE.test(text))
      return { kind: "fs-readonly", class: "fs_error", title: "BTRFS: filesystem forced read-only" };
  }
  if (text.startsWith("Memory failure: ")) {
    const m = MEMORY_FAILURE_RE.exec(text);
    if (m) return { kind: "memory-failure", class: "memory_error", title: memoryFailureTitle(m[1]!) };
  }
  if (text.startsWith("EDAC ")) {
    const m = EDAC_RE.exec(text);
    if (m)
      return {
        kind: "edac",
        class: "memory_error",
        title: m[1] === "UE" ? "EDAC: uncorrected memory error" : "EDAC: corrected memory error",
      };
  }
  if (text.includes("]: segfault at ")) {
    const title = segfaultTitle(text);
    if (title) return { kind: "segfault", class: "crash", title };
  }
  if (NMI_UNKNOWN_RE.test(text))
    return { kind: "nmi", class: "nmi", title: "NMI received for unknown reason" };
  if (text.startsWith("NMI: ")) {
    const m = NMI_OTHER_RE.exec(text);
    if (m) return { kind: "nmi", class: "nmi", title: `NMI: ${m[1]!}` };
  }
  return null;
}

function memoryFailureTitle(msg: string): string {
  const sigbus = /^Sending SIGBUS to (.+?):\d+ due to hardware memory corruption/.exec(msg);
  if (sigbus) return `Memory failure: SIGBUS to ${normalizeComm(sigbus[1]!)}`;
  return `Memory failure: ${msg
    .replace(/\b0x[0-9a-f]+\b/g, "ADDR")
    .replace(/\b\d+\b/g, "NUM")
    .trim()}`;
}

/** `nginx[1234]: segfault at 0 ip 00007f.. sp 00007ff.. error 4 in libc.so.6[7f..+1b000]`. */
function segfaultTitle(text: string): string | null {
  const at = text.indexOf("]: segfault at ");
  const open = text.lastIndexOf("[", at);
  if (open <= 0 || !/^\d+$/.test(text.slice(open + 1, at))) return null;
  const comm = normalizeComm(text.slice(0, open));
  const obj = / in ([^\s[]+)\[/.exec(text.slice(at));
  return obj ? `segfault in ${comm} (${obj[1]!})` : `segfault in ${comm}`;
}

const OOM_INVOKED_RE = /^(.*?) invoked oom-killer: /;
const OOM_KILL_LINE_RE = /^oom-kill:.*?,task=([^,]*),pid=\d+/;
const OOM_KILLED_RE =
  /^(Memory cgroup )?[Oo]ut of memory(?: \([a-z_]+\))?: Kill(?:ed)? process \d+ \(([^)]*)\)/;
const OOM_NONE_RE = /^Out of memory and no killable processes/;
const MCE_MARK = "[Hardware Error]: ";

interface Burst {
  report: SignalReport;
  last: number;
}

interface OomState {
  line: number;
  evidence: string[];
  invoker: string;
  victim: string | null;
  memcg: boolean;
}

interface MceState {
  line: number;
  last: number;
  evidence: string[];
  reason: string | null;
  bank: string | null;
  severity: string | null;
  logged: boolean;
}

/** Uncorrected: an exception with a bank, a reason, or a fatal severity (not just "events logged"). */
function mceFatal(s: MceState): boolean {
  return s.reason !== null || s.bank !== null || (s.severity !== null && /fatal/i.test(s.severity));
}

function mceTitle(s: MceState): string {
  if (s.reason) return `machine check: ${s.reason}`;
  if (s.bank !== null) return `machine check exception in bank ${s.bank}`;
  if (s.severity) return `hardware error: ${s.severity} severity`;
  if (s.logged) return "machine check events logged";
  return "hardware error";
}

/** Tracks operational signals line by line; emits each signal once its burst is complete. */
export class SignalTracker {
  private bursts = new Map<string, Burst>();
  private oom: OomState | null = null;
  private mce: MceState | null = null;
  private nextCheck = Number.POSITIVE_INFINITY;
  /** Uncorrected machine checks seen so far (causes of a later panic). */
  causesSeen = 0;

  /** Cheap test: any signal still waiting for more lines? */
  get busy(): boolean {
    return this.bursts.size > 0 || this.oom !== null || this.mce !== null;
  }

  /** Call for every line; `text` is prefix-stripped (or null when the line has no trigger word). */
  onLine(lineNo: number, line: string | null, raw: string, out: SignalReport[]): void {
    if (lineNo >= this.nextCheck) this.expire(lineNo, out);
    if (line === null) return;
    // Signal messages are short; the cap bounds regex work on adversarial lines.
    const text = line.length > MAX_SIGNAL_TEXT ? line.slice(0, MAX_SIGNAL_TEXT) : line;
    if (text.includes(MCE_MARK)) {
      this.onMce(lineNo, text, raw);
      return;
    }
    if (this.onOom(lineNo, text, raw, out)) return;
    const hit = matchLine(text);
    if (hit === null) return;
    const key = `${hit.kind}\u0000${hit.title}`;
    const burst = this.bursts.get(key);
    if (burst) {
      burst.last = lineNo;
      if (burst.report.evidence.length < MAX_EVIDENCE) burst.report.evidence.push(raw);
    } else {
      this.bursts.set(key, {
        report: {
          kind: hit.kind,
          class: hit.class,
          title: hit.title,
          line: lineNo,
          evidence: [raw],
          tier: 2,
        },
        last: lineNo,
      });
    }
    this.nextCheck = Math.min(this.nextCheck, lineNo + BURST_LINES + 1);
  }

  /** Completes everything still open (end of console). */
  flush(out: SignalReport[]): void {
    this.expire(Number.POSITIVE_INFINITY, out);
  }

  private onOom(lineNo: number, text: string, raw: string, out: SignalReport[]): boolean {
    if (text.includes("invoked oom-killer: ")) {
      const m = OOM_INVOKED_RE.exec(text);
      if (m) {
        if (this.oom) this.finishOom(out);
        this.oom = {
          line: lineNo,
          evidence: [raw],
          invoker: normalizeComm(m[1]!),
          victim: null,
          memcg: false,
        };
        this.nextCheck = Math.min(this.nextCheck, lineNo + OOM_WINDOW + 1);
        return true;
      }
    }
    if (text.startsWith("oom-kill:")) {
      const m = OOM_KILL_LINE_RE.exec(text);
      if (m && this.oom) {
        this.oom.victim = normalizeComm(m[1]!);
        this.oom.memcg ||= text.includes("CONSTRAINT_MEMCG");
        this.oom.evidence.push(raw);
        return true;
      }
      return m !== null;
    }
    if (text.includes("ut of memory")) {
      const m = OOM_KILLED_RE.exec(text);
      if (m) {
        const state = this.oom ?? { line: lineNo, evidence: [], invoker: "?", victim: null, memcg: false };
        state.victim = normalizeComm(m[2]!);
        state.memcg ||= m[1] !== undefined;
        state.evidence.push(raw);
        this.oom = state;
        this.finishOom(out);
        return true;
      }
      if (OOM_NONE_RE.test(text)) {
        const state = this.oom ?? { line: lineNo, evidence: [], invoker: "?", victim: null, memcg: false };
        state.evidence.push(raw);
        this.oom = null;
        out.push({
          kind: "oom-no-killable",
          class: "oom",
          title: "OOM: no killable processes",
          line: state.line,
          evidence: state.evidence,
          tier: 2,
        });
        return true;
      }
    }
    return false;
  }

  private finishOom(out: SignalReport[]): void {
    const s = this.oom;
    if (!s) return;
    this.oom = null;
    const title = s.victim ? oomKillTitle(s.victim, s.memcg) : `OOM: oom-killer invoked by ${s.invoker}`;
    out.push({
      kind: "oom-kill",
      class: "oom",
      title,
      line: s.line,
      evidence: s.evidence.slice(0, MAX_EVIDENCE),
      tier: 2,
    });
  }

  private onMce(lineNo: number, text: string, raw: string): void {
    const s = this.mce ?? {
      line: lineNo,
      last: lineNo,
      evidence: [],
      reason: null,
      bank: null,
      severity: null,
      logged: false,
    };
    this.mce = s;
    s.last = lineNo;
    if (s.evidence.length < MAX_EVIDENCE) s.evidence.push(raw);
    const msg = text.slice(text.indexOf(MCE_MARK) + MCE_MARK.length);
    const reason = /^Machine check: (.+)$/.exec(msg);
    if (reason && s.reason === null) s.reason = reason[1]!.trim().replace(/\s+/g, " ");
    const bank = /Machine Check(?: Exception)?: [0-9a-f]+ Bank (\d+):/.exec(msg);
    if (bank && s.bank === null) s.bank = bank[1]!;
    const sev = /event severity: (\w+)/.exec(msg);
    if (sev && s.severity === null) s.severity = sev[1]!;
    if (msg.startsWith("Machine check events logged")) s.logged = true;
    if (reason || bank || (sev && /fatal/i.test(sev[1]!))) this.causesSeen++;
    this.nextCheck = Math.min(this.nextCheck, lineNo + BURST_LINES + 1);
  }

  private expire(lineNo: number, out: SignalReport[]): void {
    let next = Number.POSITIVE_INFINITY;
    if (this.mce) {
      if (lineNo > this.mce.last + BURST_LINES) {
        const s = this.mce;
        this.mce = null;
        out.push({
          kind: "mce",
          class: "memory_error",
          title: mceTitle(s),
          line: s.line,
          evidence: s.evidence,
          tier: mceFatal(s) ? 0 : 2,
        });
      } else next = Math.min(next, this.mce.last + BURST_LINES + 1);
    }
    if (this.oom) {
      if (lineNo > this.oom.line + OOM_WINDOW) this.finishOom(out);
      else next = Math.min(next, this.oom.line + OOM_WINDOW + 1);
    }
    const done: Burst[] = [];
    for (const [key, b] of this.bursts) {
      if (lineNo > b.last + BURST_LINES) {
        done.push(b);
        this.bursts.delete(key);
      } else next = Math.min(next, b.last + BURST_LINES + 1);
    }
    done.sort((a, b) => a.report.line - b.report.line);
    for (const b of done) out.push(b.report);
    this.nextCheck = next;
  }
}

/**
 * Literal words that every signal line contains; lines without them skip signal matching.
 * Words start with a capital or a bracket so one regex scans for them fast (see
 * console-parser.ts); SIGNAL_TRIGGER_SUBSTRINGS are the few that cannot and are found with
 * indexOf instead.
 */
export const SIGNAL_TRIGGER_WORDS: readonly string[] = [
  "Kill", // `Out of memory: Killed process`, `Memory cgroup out of memory: Killed process`, `Kill process`
  "Out of memory",
  "I/O error",
  "EXT4-fs error",
  "EXT3-fs error",
  "EXT2-fs error",
  "Remounting filesystem read-only",
  "Aborting journal",
  "JBD2: ",
  "XFS (",
  "BTRFS",
  "Hardware Error]",
  "Memory failure: ",
  "EDAC ",
  "]: segfault at ",
  "NMI",
];
export const SIGNAL_TRIGGER_SUBSTRINGS: readonly string[] = [
  "oom-kill", // `invoked oom-killer:`, `oom-kill:constraint=...`
  " error, dev ", // `critical medium error, dev sda, sector ...`
];
