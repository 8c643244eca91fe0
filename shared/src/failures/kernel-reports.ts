// Kernel crash report rules: which console line starts a report and how its title is built.
//
// Each rule recognises a report header line (prefix already stripped) and later, once the
// report's lines are collected, builds the title `<kind of failure> in <guilty frame>` following
// syzkaller's conventions (see docs/failure-signatures.md). Frames come from, depending on the
// kind: the faulting instruction line (RIP/pc) then the call trace; the call trace alone; the
// function named in the header; or lockdep's `at: func` lines. Frames are filtered with
// frame-filter.ts. When a kind needs a frame and none can be found, the title says
// `in corrupted` and the report is marked corrupted.
// Header regexes are anchored and linear; they only run on lines that passed the cheap trigger.

import {
  canonicalFrame,
  type Frame,
  type FrameSkipper,
  hungTaskFrame,
  isRipLine,
  makeSkipper,
  parseFrameLine,
  ripFrameName,
  stallFrame,
  syscallFrameName,
} from "./frame-filter.js";
import type { FailureClass } from "./types.js";

export interface BuiltTitle {
  title: string;
  frame: string | null;
  corrupted: boolean;
}

/** Read-only view over a collected report: the header line is lines[0]. */
export class ReportView {
  private frames: (Frame | null | undefined)[] = [];
  constructor(readonly lines: readonly string[]) {}

  /** Reliable frame on line i (null: not a frame, or an unreliable `?` frame). */
  frameAt(i: number): Frame | null {
    let f = this.frames[i];
    if (f === undefined) {
      const parsed = parseFrameLine(this.lines[i] ?? "");
      f = parsed && !parsed.questionable ? parsed : null;
      this.frames[i] = f;
    }
    return f;
  }

  find(pred: (text: string) => boolean, from = 0): number {
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i]!)) return i;
    return -1;
  }

  has(needle: string): boolean {
    return this.find((t) => t.includes(needle)) >= 0;
  }

  /** Frames on lines after `from` until a section boundary (bounded scan). */
  framesAfter(from: number, max = 160): string[] {
    const out: string[] = [];
    const end = Math.min(this.lines.length, from + 1 + max);
    for (let i = from + 1; i < end; i++) {
      const text = this.lines[i]!;
      if (i > from + 1 && isSectionEnd(text)) break;
      const f = this.frameAt(i);
      if (f === null) continue;
      if (out[out.length - 1] !== f.name) out.push(f.name);
      if (f.caller) out.push(f.caller);
    }
    return out;
  }

  /** Index of the first call-trace keyword line at or after `from`. */
  traceStart(from = 0): number {
    return this.find(isTraceKeyword, from);
  }
}

const TRACE_KEYWORD_RE = /Call Trace|Call trace|^Backtrace|^\s*backtrace|[^k] backtrace:/;
export function isTraceKeyword(text: string): boolean {
  return TRACE_KEYWORD_RE.test(text);
}

/** Lines that start a different section of a report: frames beyond them belong elsewhere. */
const SECTION_END_RE =
  /^(?:Allocated by task|Freed by task|Allocated:|Freed:|The buggy address|Memory state around|Last potentially related work|Second to last potentially|---\[ end |Kernel Offset:|Showing all locks held|Showing busy workqueues|Uninit was |Local variable |Bytes \d|Modules linked in|page last |page_owner |Sending NMI from|NMI backtrace for cpu)/;
function isSectionEnd(text: string): boolean {
  return SECTION_END_RE.test(text);
}

// ---------------------------------------------------------------------------------------------
// Frame strategies.

/** First non-skipped frame among: the RIP/pc line's function, then the call trace after it. */
function ripThenTrace(v: ReportView, skip: FrameSkipper, from = 0): string | null {
  const candidates: string[] = [];
  const rip = v.find(isRipLine, from);
  if (rip >= 0) {
    const name = ripFrameName(v.lines[rip]!);
    if (name) candidates.push(name);
    candidates.push(...v.framesAfter(rip));
  } else {
    const t = v.traceStart(from);
    if (t >= 0) candidates.push(...v.framesAfter(t));
    else candidates.push(...v.framesAfter(from));
  }
  return firstKept(candidates, skip) ?? traceOnly(v, skip, from);
}

/** First non-skipped frame of the first call trace at or after `from`. */
function traceOnly(v: ReportView, skip: FrameSkipper, from = 0): string | null {
  let t = v.traceStart(from);
  while (t >= 0) {
    const f = firstKept(v.framesAfter(t), skip);
    if (f) return f;
    t = v.traceStart(t + 1);
  }
  return null;
}

function firstKept(frames: readonly string[], skip: FrameSkipper): string | null {
  for (const f of frames) if (!skip(f)) return f;
  return null;
}

const HEX_RE = /^[0-9a-f]+$/;
/** A `path/file.c:123` source reference (syzkaller's {{SRC}}). */
const SOURCE_LINE_RE = /[\w/.-]+\.[a-z]+:\d+/;
const AT_FUNC_RE = /\bat: (?:\[<[0-9a-f]+>\]\s+)?([A-Za-z_][A-Za-z0-9_.]*)\+0x/;
const PC_FUNC_RE = /\[<[0-9a-f]+>\]\s+([A-Za-z_][A-Za-z0-9_.]*)\+0x/;

/** Lockdep's `at: func` after the line containing `marker` (or after the header), or null. */
function lockdepAtFunc(v: ReportView, marker: string | null): string | null {
  const start = marker ? v.find((t) => t.includes(marker)) : 0;
  if (start < 0) return null;
  const end = Math.min(v.lines.length, start + 40);
  for (let i = start; i < end; i++) {
    const text = v.lines[i]!;
    const m = AT_FUNC_RE.exec(text) ?? (i > start ? PC_FUNC_RE.exec(text) : null);
    if (m) return canonicalFrame(m[1]!);
  }
  return null;
}

/** Lockdep title; a report cut before the `marker` line is titled by its header, corrupted. */
function lockdepTitle(v: ReportView, m: RegExpExecArray, prefix: string, marker: string): BuiltTitle {
  if (v.find((t) => t.includes(marker)) < 0) return fixed(m[0]!.trim(), true);
  return withFrame(prefix, lockdepAt(v, marker));
}

/**
 * Lockdep reports: the function that took the lock (`at: func`), unless it is a generic helper
 * (down_trylock, _atomic_dec_and_lock, ...); then the report's own call trace.
 */
function lockdepAt(v: ReportView, marker: string | null, skip: FrameSkipper = SKIP_DEFAULT): string | null {
  const at = lockdepAtFunc(v, marker);
  if (at !== null && !skip(at)) return at;
  const fromTrace = traceOnly(v, skip);
  return fromTrace ?? at;
}

/**
 * Circular locking dependency (syzkaller's order): the lock being acquired (`at:` after the `is
 * trying to acquire lock` line `start`), else the lock already held (the next `at:`), else the first
 * kept frame after that line up to the next call-trace keyword (the dependency chain), else the call
 * trace.
 */
function lockdepCircular(v: ReportView, start: number, skip: FrameSkipper): string | null {
  const at: { line: number; name: string }[] = [];
  const end = Math.min(v.lines.length, start + 40);
  for (let i = start; i < end && at.length < 2; i++) {
    const m = AT_FUNC_RE.exec(v.lines[i]!);
    if (m) at.push({ line: i, name: canonicalFrame(m[1]!) });
  }
  const kept = at.find((a) => !skip(a.name));
  if (kept) return kept.name;
  const held = at[1];
  if (held) {
    const stop = v.traceStart(held.line);
    const chain = v.framesAfter(held.line, (stop < 0 ? v.lines.length : stop) - held.line - 1);
    const f = firstKept(chain, skip);
    if (f) return f;
  }
  return traceOnly(v, skip) ?? at[0]?.name ?? null;
}

// ---------------------------------------------------------------------------------------------
// Rules.

export interface KernelRule {
  id: string;
  /** Literal text every header of this kind contains: a cheap test before the regex. */
  needle: string;
  class: FailureClass;
  /** Matches the header line (prefix stripped, `[ ... ]` banner brackets removed). */
  header: RegExp;
  /** Builds the title from the collected report. */
  build(v: ReportView, m: RegExpExecArray): BuiltTitle;
  /** Reports of this kind are expected to carry a call trace; without one they are corrupted. */
  needsTrace?: boolean;
  /** A panic: ranked after the report that caused it (see rankFailures). */
  panic?: boolean;
  /** When seen inside an open report of one of these rule ids, the line continues that report. */
  continues?: readonly string[];
  /** Printed periodically from elsewhere: opens its own report without ending open ones. */
  interleaves?: boolean;
}

function withFrame(prefix: string, frame: string | null): BuiltTitle {
  if (frame === null) return { title: `${prefix} in corrupted`, frame: null, corrupted: true };
  const f = syscallFrameName(frame);
  return { title: `${prefix} in ${f}`, frame: f, corrupted: false };
}

function fixed(title: string, corrupted = false): BuiltTitle {
  return { title, frame: null, corrupted };
}

/** Replaces volatile tokens (addresses, numbers) in free-text titles. */
export function sanitizeTitleText(s: string): string {
  return s
    .replace(/\b0x[0-9a-fA-F]+\b/g, "ADDR")
    .replace(/\b[0-9a-fA-F]{8,}\b/g, "ADDR")
    .replace(/\b\d+\b/g, "NUM")
    .replace(/\s+/g, " ")
    .trim();
}

const SKIP_DEFAULT = makeSkipper();
const SKIP_ODEBUG = makeSkipper([
  "debug_",
  "rcu",
  "hrtimer_",
  "timer_",
  "work_",
  "percpu_",
  "kmem_",
  "slab_",
  "kfree",
  "vunmap",
  "vfree",
  "__free_",
  "kobject_",
]);
const SKIP_USERCOPY = makeSkipper(["usercopy", "__check", "check_"]);
const SKIP_KOBJECT = makeSkipper(["kobject_"]);
const SKIP_PROC = makeSkipper(["proc_"]);
const SKIP_REFCOUNT = makeSkipper(["refcount", "kobject_"]);
const SKIP_LOCKING_BUG = makeSkipper(["lock_sock", "release_sock"]);
const SKIP_KMALLOC = makeSkipper([
  "kmalloc",
  "kcalloc",
  "kzalloc",
  "krealloc",
  "vmalloc",
  "vzalloc",
  "__vmalloc",
  "kvmalloc",
  "slab",
  "kmem",
]);
const SKIP_USB = [
  "usb_submit_urb",
  "usb_start_wait_urb",
  "usb_bulk_msg",
  "usb_interrupt_msg",
  "usb_control_msg",
];
const SKIP_USB_URB = makeSkipper(SKIP_USB);
/**
 * KMSAN: uninit values surface in generic encryption and netlink code; the frame is their user
 * (syzkaller's KMSAN skips).
 */
const KMSAN_SKIP_RE = /_encrypt$|^(?:crypto|cipher|drbg|rng)_|alloc_skb|netlink_ack|netlink_rcv_skb/;
const SKIP_KMSAN: FrameSkipper = (name) => SKIP_DEFAULT(name) || KMSAN_SKIP_RE.test(name);
const SKIP_RCU = makeSkipper(["rcu", "kmem", "slab", "kmalloc", "vmalloc", "kcalloc", "kzalloc"]);
const SKIP_INVALID_FREE = makeSkipper(["kmem_", "slab_", "kfree", "kvfree", "vunmap", "vfree"]);
/** Spinlock debug reports: skip any frame taking or releasing a lock (`__task_rq_lock`), as syzkaller. */
const SKIP_SPIN: FrameSkipper = (name) =>
  SKIP_DEFAULT(name) || name.includes("spin_") || name.includes("_lock") || name.includes("_unlock");
/** UBSAN's handlers (`handle_overflow`, `__ubsan_handle_add_overflow`) sit above the guilty frame. */
const SKIP_UBSAN: FrameSkipper = (name) =>
  SKIP_DEFAULT(name) ||
  name.includes("ubsan") ||
  name.includes("overflow") ||
  name.includes("dump_backtrace");
/** Workqueue functions take the locks of work items: deadlocks there belong to the work's owner. */
const SKIP_CIRCULAR = makeSkipper([
  "process_one_work",
  "flush_workqueue",
  "drain_workqueue",
  "destroy_workqueue",
]);
const SKIP_PREEMPT = makeSkipper([
  "preempt",
  "check_preemption_disabled",
  "debug_smp_processor_id",
  "dump_backtrace",
]);
const SKIP_SCHED = makeSkipper(["schedule", "__switch_to", "dump_backtrace"]);
const SKIP_NONSTATIC = makeSkipper(["stack", "lock", "IRQ", "dump_backtrace"]);
const LEAK_SKIP = [
  "kmemleak",
  "kmalloc",
  "kcalloc",
  "kzalloc",
  "vmalloc",
  "mmap",
  "kmem",
  "slab",
  "alloc",
  "create_object",
  "idr_get",
  "list_lru_init",
  "kasprintf",
  "kvasprintf",
  "pcpu_create",
  "strdup",
  "strndup",
  "memdup",
];
/** kmemleak stacks are all allocation wrappers: skip any frame that merely contains these words. */
const SKIP_LEAK: FrameSkipper = (name) => SKIP_DEFAULT(name) || LEAK_SKIP.some((w) => name.includes(w));
const SKIP_BAD_PAGE = makeSkipper([
  "bad_page",
  "free_",
  "alloc",
  "folio",
  "page",
  "filemap",
  "pagecache",
  "prep_new",
  "get_page_from_freelist",
]);
const SKIP_STALL = makeSkipper(["apic_timer_interrupt", "rcu", "irq_on_stack"]);
const SKIP_TRACE = makeSkipper(["dump_backtrace"]);

/** Frames from the faulting RIP/pc line on (or the first call trace when there is none). */
function ripFrames(v: ReportView, from: number, max?: number): string[] {
  const rip = v.find(isRipLine, from);
  const trace = v.traceStart(from);
  if (rip >= 0 && (trace < 0 || rip < trace)) {
    const name = ripFrameName(v.lines[rip]!);
    return [...(name ? [name] : []), ...v.framesAfter(rip, max)];
  }
  return trace >= 0 ? v.framesAfter(trace, max) : [];
}

const STALL_IRQ_RE = /apic_timer_interrupt|\(__irq_svc\)|el1h_64_irq|\(gic_handle_irq\)/;

/**
 * Frames of the code that was looping. Lockups print it from the RIP line; RCU stalls print the
 * detecting CPU's timer interrupt, below which is the interrupted (looping) context.
 */
function stallFrames(v: ReportView, skip: FrameSkipper, mode: "rip" | "irq"): string[] | null {
  let frames: string[];
  if (mode === "irq") {
    const irq = v.find((t) => STALL_IRQ_RE.test(t));
    if (irq < 0) return null;
    // The interrupted context's RIP follows the end of the interrupt stack (unless another
    // call trace starts first).
    const rip = v.find(isRipLine, irq);
    const nextTrace = v.traceStart(irq + 1);
    const near = rip >= 0 && rip <= irq + 8 && (nextTrace < 0 || nextTrace > rip);
    const name = near ? ripFrameName(v.lines[rip]!) : null;
    frames = near ? [...(name ? [name] : []), ...v.framesAfter(rip)] : v.framesAfter(irq);
  } else frames = ripFrames(v, 0);
  return frames.filter((f) => !skip(f));
}

function stallTitle(
  prefix: string,
  v: ReportView,
  skip: FrameSkipper,
  mode: "rip" | "irq" = "rip",
): BuiltTitle {
  const frames = stallFrames(v, skip, mode);
  return withFrame(prefix, frames === null ? null : (stallFrame(frames) ?? frames[0] ?? null));
}

/** `WARNING: CPU: 0 PID: 1 at lib/foo.c:12 func+0x..`, `WARNING: at lib/foo.c:12 func()`, `WARNING: lib/foo.c:12 at func+0x.., CPU#1: comm/1`. */
const WARNING_AT_RE =
  /^WARNING: (?:CPU: *\d+ PID: *-?\d+ at (\S+)(?: ([A-Za-z_][\w.]*))?|at (\S+)(?: ([A-Za-z_][\w.]*))?|(?:\[.*?\] )?([\w./-]+\.[a-z]+:\d+) at (?:([A-Za-z_][\w.]*)\+|\S))/;

function warningTitle(v: ReportView, m: RegExpExecArray): BuiltTitle {
  const file = m[1] ?? m[3] ?? m[5] ?? "";
  const func = m[2] ?? m[4] ?? m[6] ?? "";
  const frame = (skip: FrameSkipper) => ripThenTrace(v, skip);
  if (file.includes("lib/debugobjects.c")) return withFrame("WARNING: ODEBUG bug", frame(SKIP_ODEBUG));
  if (file.includes("mm/usercopy.c")) return withFrame("WARNING: bad usercopy", frame(SKIP_USERCOPY));
  if (file.includes("lib/kobject.c")) return withFrame("WARNING: kobject bug", frame(SKIP_KOBJECT));
  if (file.includes("fs/proc/generic.c") && func.startsWith("proc_register"))
    return withFrame("WARNING: proc registration bug", frame(SKIP_PROC));
  if (file.includes("lib/refcount.c")) return withFrame("WARNING: refcount bug", frame(SKIP_REFCOUNT));
  if (file.includes("kernel/locking/lockdep.c"))
    return withFrame("WARNING: locking bug", frame(SKIP_LOCKING_BUG));
  if (file.includes("mm/vmalloc.c") && (func.startsWith("__vmalloc_node") || v.has("zero-size vmalloc")))
    return withFrame("WARNING: zero-size vmalloc", frame(SKIP_KMALLOC));
  if (/^mm\/.*\.c/.test(file) && /^k?.?malloc/.test(func.replace(/^_+/, "")))
    return withFrame("WARNING: kmalloc bug", frame(SKIP_KMALLOC));
  if (func.startsWith("usb_submit_urb")) {
    const t = withFrame("WARNING", frame(SKIP_USB_URB));
    return { ...t, title: `${t.title}/usb_submit_urb` };
  }
  return withFrame("WARNING", frame(SKIP_TRACE));
}

function kasanTitle(v: ReportView, m: RegExpExecArray): BuiltTitle {
  const kind = m[1]!;
  const headerFunc = m[2] ?? null;
  if (/^(?:double-free|invalid-free)/.test(kind)) {
    const cands = [...(headerFunc ? [canonicalFrame(headerFunc)] : []), ...framesFromTrace(v)];
    return withFrame("KASAN: invalid-free", firstKept(cands, SKIP_INVALID_FREE));
  }
  const access = v.find((t) => /^(?:Read|Write) (?:of size|at addr)/.test(t));
  const op = access >= 0 ? v.lines[access]!.slice(0, v.lines[access]!.startsWith("Read") ? 4 : 5) : null;
  if (headerFunc === null) {
    // `BUG: KASAN: null-ptr-deref on address 0000` (old): no function in the header.
    if (op) return fixed(`KASAN: ${kind} ${op}`, true);
    return fixed(`KASAN: ${sanitizeTitleText(v.lines[0]!.replace(/^.*?BUG: KASAN: /, ""))}`, true);
  }
  if (op === null) {
    // Old-style report cut before the access line: keep the header text, as syzkaller does.
    return fixed(
      `KASAN: ${sanitizeTitleText(v.lines[0]!.replace(/^.*?BUG: KASAN: /, "").replace(/\+0x\S+/, ""))}`,
      true,
    );
  }
  const cands = [canonicalFrame(headerFunc), ...framesFromTrace(v)];
  return withFrame(`KASAN: ${kind} ${op}`, firstKept(cands, SKIP_DEFAULT));
}

/** Frames of the first call trace, or directly after the header when the report prints none (KMSAN). */
function framesFromTrace(v: ReportView): string[] {
  const t = v.traceStart(1);
  return v.framesAfter(Math.max(t, 0));
}

function kmsanTitle(v: ReportView, m: RegExpExecArray): BuiltTitle {
  const kind = m[1]!;
  const skip = kind === "kernel-usb-infoleak" ? makeSkipper(SKIP_USB) : SKIP_KMSAN;
  const t = v.traceStart(1);
  const frames = t >= 0 && t < 4 ? v.framesAfter(t) : v.framesAfter(0);
  return withFrame(`KMSAN: ${kind}`, firstKept(frames, skip));
}

function panicTitle(v: ReportView, m: RegExpExecArray): BuiltTitle {
  const msg = m[1]!.trim();
  let s = /^stack-protector: Kernel stack is corrupted in: ([A-Za-z_][\w.]*)\+0x/.exec(msg);
  if (s) return withFrame("kernel panic: stack is corrupted", canonicalFrame(s[1]!));
  s = /^stack-protector: /.exec(msg);
  if (s) return withFrame("kernel panic: stack is corrupted", traceOnly(v, makeSkipper(["stack_chk"])));
  if (msg.startsWith("corrupted stack end"))
    return stallTitle("kernel panic: corrupted stack end", v, makeSkipper(["schedule", "retint_kernel"]));
  // Newer kernels prefix these with the reporter (`Oops: Fatal exception`, `KASAN: panic_on_warn set`).
  if (msg.includes("Fatal exception")) return fixed("kernel panic: Fatal exception", true);
  if (msg.includes("panic_on_warn set")) return fixed("kernel panic: panic_on_warn set", true);
  if (msg.startsWith("hung_task: blocked tasks"))
    return fixed("kernel panic: hung_task: blocked tasks", true);
  if (msg.startsWith("Attempted to kill init!")) return fixed("kernel panic: Attempted to kill init!");
  if (msg.startsWith("Couldn't open N_TTY ldisc")) return fixed("kernel panic: Couldn't open N_TTY ldisc");
  if (msg.startsWith("VFS: Unable to mount root fs"))
    return fixed("kernel panic: VFS: Unable to mount root fs");
  return fixed(`kernel panic: ${sanitizeTitleText(msg.replace(/[ .]+$/, ""))}`);
}

function panicClass(msg: string): FailureClass {
  if (/deadlocked on memory|Out of memory|panic_on_oom/.test(msg)) return "oom";
  if (/machine check/i.test(msg)) return "memory_error";
  if (/^NMI|NMI:/.test(msg)) return "nmi";
  if (/hung_task|softlockup|hard LOCKUP|hardlockup/.test(msg)) return "hang";
  return "panic";
}

/** The kernel report rules, tried in order; the first whose header matches wins. */
export const KERNEL_RULES: readonly KernelRule[] = [
  // --- Sanitizers -------------------------------------------------------------------------------
  {
    id: "kasan",
    needle: "BUG: KASAN:",
    class: "memory_safety",
    header: /BUG: KASAN: ([a-z-]+)(?: in ([A-Za-z_][\w.]*))?/,
    build: kasanTitle,
  },
  {
    id: "kmsan",
    needle: "BUG: KMSAN:",
    class: "memory_safety",
    header: /BUG: KMSAN: ([a-z-]+) in /,
    build: kmsanTitle,
  },
  {
    id: "kcsan",
    needle: "BUG: KCSAN:",
    class: "memory_safety",
    header: /BUG: KCSAN: (.+)$/,
    // `data-race in a+0x1/0x2 / b+0x3/0x4`: the racing functions, without offsets.
    build: (_v, m) => {
      const rest = m[1]!
        .replace(/([A-Za-z_][\w]*)(?:\.[\w.]+)?\+0x[0-9a-f]+\/0x[0-9a-f]+/g, "$1")
        .replace(/\s+/g, " ")
        .trim();
      const first = / in ([A-Za-z_]\w*)/.exec(rest);
      return { title: `KCSAN: ${rest}`, frame: first ? first[1]! : null, corrupted: false };
    },
  },
  {
    id: "kfence",
    needle: "BUG: KFENCE:",
    class: "memory_safety",
    header: /BUG: KFENCE: ([a-z -]+?) in ([A-Za-z_][\w.]*)/,
    build: (v, m) =>
      withFrame(`KFENCE: ${m[1]!}`, firstKept([canonicalFrame(m[2]!), ...framesFromTrace(v)], SKIP_DEFAULT)),
  },
  {
    id: "ubsan",
    needle: "UBSAN:",
    class: "memory_safety",
    header: /^UBSAN: ([A-Za-z -]+?) in \S/,
    needsTrace: true,
    build: (v, m) =>
      withFrame(`UBSAN: ${m[1]!.toLowerCase().replace(/\s+/g, "-")}`, traceOnly(v, SKIP_UBSAN)),
  },
  // --- Page faults and traps ------------------------------------------------------------------
  {
    id: "paging-request",
    needle: "to handle",
    class: "oops",
    header:
      /^(?:BUG: (?:unable to handle kernel paging request|unable to handle page fault for address|Unable to handle kernel data access|Unable to handle kernel paging request)|Unable to handle kernel paging request at virtual address)/,
    needsTrace: true,
    build: (v) => withFrame("BUG: unable to handle kernel paging request", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "null-deref",
    needle: "NULL pointer dereference",
    class: "oops",
    header:
      /^(?:BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference|Kernel NULL pointer dereference)|Unable to handle kernel NULL pointer dereference)/,
    needsTrace: true,
    build: (v) =>
      withFrame("BUG: unable to handle kernel NULL pointer dereference", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    // The second half of the header is printed separately and sometimes lost.
    id: "unable-to-handle",
    needle: "to handle kernel",
    class: "oops",
    header: /^BUG: (?:unable|Unable) to handle kernel/,
    build: () => fixed("BUG: unable to handle kernel", true),
  },
  {
    id: "gpf",
    needle: "general protection fault",
    class: "oops",
    // Not anchored: the line is often glued to the preceding kasan hint. Userspace traps print
    // `general protection fault ip:` and do not match.
    header: /general protection fault(?::|,| for )/,
    needsTrace: true,
    build: (v) => withFrame("general protection fault", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "stack-segment",
    needle: "stack segment: ",
    class: "oops",
    header: /^(?:Oops: )?stack segment: /,
    build: (v) => withFrame("stack segment fault", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "divide-error",
    needle: "divide",
    class: "oops",
    header: /^(?:Oops: )?divide[ _]error: /,
    build: (v) => withFrame("divide error", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "int3",
    needle: "int3: ",
    class: "oops",
    header: /^(?:Oops: )?int3: /,
    build: (v) => withFrame("int3", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "double-fault",
    needle: "PANIC: double fault",
    class: "oops",
    header: /^PANIC: double fault/,
    build: (v) => withFrame("PANIC: double fault", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "invalid-opcode",
    needle: "invalid opcode: ",
    class: "oops",
    header: /^(?:Oops: )?invalid opcode: /,
    continues: ["kernel-bug", "bad-usercopy", "corrupted-list"],
    build: (v) => withFrame("invalid opcode", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    // x86 prints `Oops: 0000 [#1]` after the BUG line; on its own it adds nothing.
    id: "oops-line",
    needle: "Oops: ",
    class: "oops",
    header: /^Oops: [0-9a-f]{4}/,
    continues: ["*"],
    build: (v) => withFrame("Oops", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "internal-error",
    needle: "Internal error: ",
    class: "oops",
    header: /^Internal error: /,
    continues: [
      "paging-request",
      "null-deref",
      "unhandled-fault",
      "alignment-trap",
      "kernel-bug",
      "bad-usercopy",
      "corrupted-list",
    ],
    build: (v) => withFrame("Internal error", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "unhandled-fault",
    needle: "Unhandled fault: ",
    class: "oops",
    header: /^Unhandled fault: /,
    build: (v) => withFrame("Unhandled fault", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "alignment-trap",
    needle: "Alignment trap: ",
    class: "oops",
    header: /^Alignment trap: /,
    build: (v) => withFrame("Alignment trap", ripThenTrace(v, SKIP_DEFAULT)),
  },
  // --- BUG() and friends ---------------------------------------------------------------------
  {
    id: "bad-usercopy",
    needle: "mm/usercopy.c",
    class: "bug",
    header: /^kernel BUG at mm\/usercopy\.c/,
    build: (v) => withFrame("BUG: bad usercopy", ripThenTrace(v, SKIP_USERCOPY)),
  },
  {
    id: "corrupted-list",
    needle: "lib/list_debug.c",
    class: "memory_safety",
    header: /^kernel BUG at lib\/list_debug\.c/,
    build: (v) => withFrame("BUG: corrupted list", ripThenTrace(v, SKIP_DEFAULT)),
  },
  {
    id: "kernel-bug",
    needle: "BUG at ",
    class: "bug",
    header: /^(?:kernel|Kernel) BUG at /,
    build: (v) => withFrame("kernel BUG", ripThenTrace(v, SKIP_TRACE)),
  },
  {
    id: "soft-lockup",
    needle: "BUG: soft lockup",
    class: "lockup",
    header: /BUG: soft lockup/,
    build: (v) => stallTitle("BUG: soft lockup", v, SKIP_DEFAULT),
  },
  {
    id: "hard-lockup",
    needle: "hard LOCKUP",
    class: "lockup",
    header: /Watchdog detected hard LOCKUP on cpu/,
    build: (v) => stallTitle("BUG: hard lockup", v, SKIP_DEFAULT),
  },
  {
    id: "spinlock",
    needle: "BUG: spinlock",
    class: "locking",
    header: /^BUG: spinlock (lockup suspected|already unlocked|recursion|bad magic|wrong owner|wrong CPU)/,
    build: (v, m) => withFrame(`BUG: spinlock ${m[1]!}`, traceOnly(v, SKIP_SPIN)),
  },
  {
    id: "locks-held",
    needle: "still has locks held!",
    class: "locking",
    header: /^(BUG|WARNING): .*still has locks held!/,
    build: (v, m) => withFrame(`${m[1]!}: still has locks held`, lockdepAt(v, null)),
  },
  {
    id: "lock-held-user",
    needle: "lock held when returning",
    class: "locking",
    header: /^(BUG|WARNING): lock held when returning to user space/,
    build: (v, m) =>
      withFrame(
        `${m[1]!}: lock held when returning to user space`,
        lockdepAt(v, "leaving the kernel with locks"),
      ),
  },
  {
    id: "bad-unlock",
    needle: "bad unlock balance",
    class: "locking",
    header: /^(BUG|WARNING): bad unlock balance detected!/,
    build: (v, m) => withFrame(`${m[1]!}: bad unlock balance`, lockdepAt(v, "is trying to release lock")),
  },
  {
    id: "held-lock-freed",
    needle: "held lock freed!",
    class: "locking",
    header: /^(BUG|WARNING): held lock freed!/,
    build: (v, m) => withFrame(`${m[1]!}: held lock freed`, lockdepAt(v, null)),
  },
  {
    id: "nested-lock",
    needle: "ested lock was not taken",
    class: "locking",
    header: /^WARNING: [Nn]ested lock was not taken/,
    build: (v) => withFrame("WARNING: nested lock was not taken", lockdepAt(v, "is trying to lock")),
  },
  {
    id: "invalid-wait-context",
    needle: "Invalid wait context",
    class: "locking",
    header: /^BUG: Invalid wait context/,
    build: (v) => withFrame("WARNING: locking bug", traceOnly(v, SKIP_LOCKING_BUG)),
  },
  {
    id: "rss-counter",
    needle: "Bad rss-counter",
    class: "bug",
    header: /^BUG: Bad rss-counter state/,
    build: () => fixed("BUG: Bad rss-counter state"),
  },
  {
    id: "nr-ptes",
    needle: "on freeing mm",
    class: "bug",
    header: /^BUG: non-zero (nr_ptes|nr_pmds) on freeing mm/,
    build: (_v, m) => fixed(`BUG: non-zero ${m[1]!} on freeing mm`),
  },
  {
    id: "dentry-in-use",
    needle: "still in use (",
    class: "bug",
    header: /^BUG: Dentry .* still in use \(\d+\) \[unmount of ([^\]]+)\]/,
    build: (_v, m) => fixed(`BUG: Dentry still in use [unmount of ${m[1]!}]`),
  },
  {
    id: "bad-page-state",
    needle: "BUG: Bad page",
    class: "memory_safety",
    header: /^BUG: Bad page (state|map)/,
    build: (v, m) => {
      const alloc = v.find((t) => t.startsWith("page last allocated"));
      const frame =
        (alloc >= 0 ? firstKept(v.framesAfter(alloc), SKIP_BAD_PAGE) : null) ?? traceOnly(v, SKIP_BAD_PAGE);
      // A bad page map without a stack keeps the bare title (syzkaller's convention).
      return frame === null && m[1] === "map"
        ? fixed("BUG: Bad page map", true)
        : withFrame(`BUG: Bad page ${m[1]!}`, frame);
    },
  },
  {
    id: "workqueue-lockup",
    needle: "BUG: workqueue lockup",
    class: "lockup",
    header: /^BUG: workqueue lockup/,
    build: () => fixed("BUG: workqueue lockup"),
  },
  {
    id: "atomic-sleep",
    needle: "sleeping function called",
    class: "bug",
    header: /^BUG: sleeping function called from invalid context/,
    needsTrace: true,
    build: (v) => withFrame("BUG: sleeping function called from invalid context", traceOnly(v, SKIP_TRACE)),
  },
  {
    id: "preemptible",
    needle: "in preemptible",
    class: "locking",
    header: /^BUG: using (__this_cpu_[a-z_]+|smp_processor_id)\(\) in preemptible/,
    build: (v, m) => withFrame(`BUG: using ${m[1]!}() in preemptible code`, traceOnly(v, SKIP_PREEMPT)),
  },
  {
    id: "scheduling-while-atomic",
    needle: "scheduling while atomic",
    class: "bug",
    header: /^BUG: scheduling while atomic/,
    build: (v) => withFrame("BUG: scheduling while atomic", traceOnly(v, SKIP_SCHED)),
  },
  {
    id: "workqueue-leak",
    needle: "workqueue leaked",
    class: "locking",
    header: /^BUG: workqueue leaked lock or atomic/,
    build: (v) => {
      const i = v.find((t) => t.includes("last function: "));
      const m = i >= 0 ? /last function: ([A-Za-z_][\w.]*)/.exec(v.lines[i]!) : null;
      return withFrame("BUG: workqueue leaked lock or atomic", m ? canonicalFrame(m[1]!) : null);
    },
  },
  {
    id: "memory-leak",
    needle: "BUG: memory leak",
    class: "leak",
    header: /BUG: memory leak/,
    build: (v) => {
      const i = v.find((t) => /^\s*backtrace/.test(t));
      return withFrame("memory leak", i >= 0 ? firstKept(v.framesAfter(i), SKIP_LEAK) : null);
    },
  },
  {
    id: "stack-guard",
    needle: "stack guard page",
    class: "oops",
    header: /^BUG: (?:TASK |IRQ )?stack guard page was hit at/,
    // A runaway recursion: like a stall, the frame above the entry point it came from; a stack
    // with no entry point (cut short by the overflow) gives no frame.
    build: (v) => {
      // The recursion fills the whole report: read the trace to its end.
      const frames = ripFrames(v, 0, v.lines.length).filter((f) => !SKIP_DEFAULT(f));
      return withFrame("BUG: stack guard page was hit", stallFrame(frames));
    },
  },
  {
    id: "slub",
    needle: "BUG ",
    class: "memory_safety",
    header:
      /^BUG \S+ \([^)]*\): (Object already free|Poison overwritten|Redzone overwritten|Left Redzone overwritten|Right Redzone overwritten|Freepointer corrupt|Padding overwritten|Invalid object pointer|Wrong object count)/,
    build: (_v, m) => fixed(`BUG: ${m[1]!}`),
  },
  {
    id: "kasan-old-info",
    needle: "INFO: ",
    class: "memory_safety",
    header: /^INFO: (Freed|Allocated) in ([A-Za-z_][\w.]*)(.*)$/,
    build: (_v, m) => {
      const rest = sanitizeTitleText(m[3]!.replace(/^\+0x[0-9a-f]+\/0x[0-9a-f]+/, ""));
      return fixed(`INFO: ${m[1]!} in ${canonicalFrame(m[2]!)}${rest ? ` ${rest}` : ""}`, true);
    },
  },
  // --- Lockdep ----------------------------------------------------------------------------------
  {
    id: "circular-locking",
    needle: "circular locking",
    class: "deadlock",
    header: /^(?:WARNING|INFO): possible circular locking dependency detected/,
    build: (v, m) => {
      const acquiring = v.find((t) => t.includes("is trying to acquire lock"));
      if (acquiring < 0) return fixed(m[0]!.trim(), true);
      return withFrame("possible deadlock", lockdepCircular(v, acquiring, SKIP_CIRCULAR));
    },
  },
  {
    id: "recursive-locking",
    needle: "recursive locking",
    class: "deadlock",
    header: /^(?:WARNING|INFO): possible recursive locking detected/,
    build: (v, m) => lockdepTitle(v, m, "possible deadlock", "is trying to acquire lock"),
  },
  {
    id: "irq-lock-inversion",
    needle: "lock inversion",
    class: "deadlock",
    header: /^(?:WARNING|INFO): possible irq lock inversion dependency detected/,
    build: (v, m) => lockdepTitle(v, m, "possible deadlock", "just changed the state of lock"),
  },
  {
    id: "irq-lock-order",
    needle: "lock order detected",
    class: "deadlock",
    header: /^(?:WARNING|INFO): (?:SOFT|HARD)IRQ-safe -> (?:SOFT|HARD)IRQ-unsafe lock order detected/,
    // The stack that made the lock irq-safe (`... which became HARDIRQ-irq-safe at:`), as syzkaller.
    build: (v, m) => {
      const became = v.find((t) => t.includes("which became ") && t.endsWith(" at:"));
      const frame = became >= 0 ? firstKept(v.framesAfter(became), SKIP_DEFAULT) : null;
      return frame
        ? withFrame("possible deadlock", frame)
        : lockdepTitle(v, m, "possible deadlock", "is trying to acquire");
    },
  },
  {
    id: "inconsistent-lock",
    needle: "inconsistent lock state",
    class: "deadlock",
    header: /^(?:WARNING|INFO): inconsistent lock state/,
    build: (v, m) => lockdepTitle(v, m, "inconsistent lock state", "takes"),
  },
  {
    id: "suspicious-rcu",
    needle: "suspicious RCU usage",
    class: "locking",
    header: /^(WARNING|INFO): suspicious RCU usage/,
    // The report names the source line that broke the rule; cut before it (another report or an
    // interleaved stack took over), it keeps the bare header, corrupted (syzkaller's convention).
    build: (v, m) =>
      v.find((t) => SOURCE_LINE_RE.test(t), 1) < 0
        ? fixed(`${m[1]!}: suspicious RCU usage`, true)
        : withFrame(`${m[1]!}: suspicious RCU usage`, traceOnly(v, SKIP_RCU)),
  },
  {
    id: "non-static-key",
    needle: "non-static key",
    class: "locking",
    header: /^INFO: trying to register non-static key/,
    build: (v) => withFrame("INFO: trying to register non-static key", traceOnly(v, SKIP_NONSTATIC)),
  },
  // --- Hangs and stalls -------------------------------------------------------------------------
  {
    id: "hung-task",
    needle: " blocked ",
    class: "hang",
    header: /^INFO: task .* blocked (?:in I\/O wait )?for more than \d+ seconds/,
    build: (v) => {
      const t = v.traceStart(1);
      return withFrame(
        "INFO: task hung",
        t >= 0 ? hungTaskFrame(v.framesAfter(t).filter((f) => !SKIP_DEFAULT(f))) : null,
      );
    },
  },
  {
    id: "task-cant-die",
    needle: "can't die",
    class: "hang",
    header: /^INFO: task .* can't die for more than \d+ seconds/,
    build: (v) => {
      const t = v.traceStart(1);
      return withFrame(
        "INFO: task can't die",
        t >= 0 ? hungTaskFrame(v.framesAfter(t).filter((f) => !SKIP_DEFAULT(f))) : null,
      );
    },
  },
  {
    id: "rcu-stall",
    needle: "detected",
    class: "rcu_stall",
    header: /^(?:rcu: )?INFO: rcu_(?:preempt|sched|bh|tasks\w*) (?:self-)?detected(?: expedited)? stall/,
    build: (v) => stallTitle("INFO: rcu detected stall", v, SKIP_STALL, "irq"),
  },
  {
    id: "unregister-netdevice",
    needle: "unregister_netdevice",
    class: "hang",
    header: /^unregister_netdevice: waiting for \S+ to become free/,
    interleaves: true,
    build: () => fixed("unregister_netdevice: waiting for DEV to become free"),
  },
  // --- Warnings ---------------------------------------------------------------------------------
  {
    id: "stack-regs",
    needle: "kernel stack regs",
    class: "warning",
    header: /^WARNING: kernel stack regs at +(\S+) in \S+ has bad '([^']+)' value/,
    // With hashed pointers (`(ptrval)`) syzkaller's fallback pattern applies: one title for both.
    build: (_v, m) =>
      fixed(
        HEX_RE.test(m[1]!)
          ? `WARNING: kernel stack regs has bad '${m[2]!}' value`
          : "WARNING: kernel stack regs has bad value",
      ),
  },
  {
    id: "stack-frame-pointer",
    needle: "kernel stack frame pointer",
    class: "warning",
    header: /^WARNING: kernel stack frame pointer at +(\S+) in \S+ has bad value/,
    build: (_v, m) =>
      fixed(
        HEX_RE.test(m[1]!)
          ? "WARNING: kernel stack frame pointer has bad value"
          : "WARNING: kernel stack regs has bad value",
      ),
  },
  {
    id: "warning",
    needle: "WARNING: ",
    class: "warning",
    header: WARNING_AT_RE,
    build: warningTitle,
  },
  // --- Misc -------------------------------------------------------------------------------------
  {
    id: "busy-inodes",
    needle: "Busy inodes",
    class: "bug",
    header: /^VFS: Busy inodes after unmount/,
    build: () => fixed("VFS: Busy inodes after unmount (use-after-free)"),
  },
  {
    id: "panic",
    needle: "Kernel panic",
    class: "panic",
    header: /^Kernel panic - not syncing: ?(.*)$/,
    panic: true,
    build: panicTitle,
  },
  {
    // A header cut right after its kind: nothing else to go on.
    id: "truncated-header",
    needle: ":",
    class: "bug",
    header: /^(BUG|WARNING|INFO):\s*$/,
    build: (_v, m) => fixed(`${m[1]!}: corrupted`, true),
  },
  {
    id: "bug-generic",
    needle: "BUG: ",
    class: "bug",
    header: /^BUG: ([A-Za-z_][^[]*)$/,
    build: (_v, m) => fixed(`BUG: ${sanitizeTitleText(m[1]!)}`),
  },
];

/** Class for a matched rule; panics take the class of their cause when the message names it. */
export function ruleClass(rule: KernelRule, m: RegExpExecArray): FailureClass {
  return rule.panic ? panicClass(m[1] ?? "") : rule.class;
}

/** Strips `[ ... ]` banners used by older lockdep (`[ INFO: possible circular ... ]`). */
function unbanner(text: string): string {
  if (text.startsWith("[ ") && text.endsWith(" ]")) return text.slice(2, -2);
  return text.trimStart();
}

const MAX_HEADER = 512;

export interface HeaderHit {
  rule: KernelRule;
  match: RegExpExecArray;
}

/** Finds the kernel rule whose header matches a (prefix-stripped) console line. */
export function matchKernelHeader(text: string): HeaderHit | null {
  // Headers are short; the cap bounds regex work on adversarial lines.
  const t = unbanner(text.length > MAX_HEADER ? text.slice(0, MAX_HEADER) : text);
  for (const rule of KERNEL_RULES) {
    if (!t.includes(rule.needle)) continue;
    const m = rule.header.exec(t);
    if (m) return { rule, match: m };
  }
  return null;
}

/**
 * Messages that print a stack trace of their own without being a failure (fault injection,
 * allocation failure warnings). Inside a report they interleave with its stack, so the report is
 * only trusted up to them.
 */
const INTERLEAVED_STACK_MESSAGES = [
  "FAULT_INJECTION: forcing a failure",
  "vmalloc: allocation failure:",
  "FAULT_FLAG_ALLOW_RETRY missing",
];

/**
 * A reliable `should_fail` frame: the fault-injection stack has started interleaving with the
 * report's own (its header line may have been lost), as syzkaller's corrupted-line rule.
 */
const SHOULD_FAIL_FRAME_RE = /^\s*(?:\[<?(?:0x)?[0-9a-f]+>?\]\s*)?should_fail(?:slab)?(?:\.[\w.]+)?\+0x/;

function isInterleavedStack(text: string): boolean {
  return (
    INTERLEAVED_STACK_MESSAGES.some((m) => text.includes(m)) ||
    (text.includes("should_fail") && SHOULD_FAIL_FRAME_RE.test(text))
  );
}

/** Title for a collected report; marks reports that lack their stack as corrupted. */
export function buildTitle(hit: HeaderHit, lines: readonly string[]): BuiltTitle {
  const cut = lines.findIndex((t, i) => i > 0 && isInterleavedStack(t));
  const view = new ReportView(cut > 0 ? lines.slice(0, cut) : lines);
  const built = hit.rule.build(view, hit.match);
  let corrupted = built.corrupted;
  if (!corrupted && hit.rule.needsTrace && view.traceStart(1) < 0) corrupted = true;
  if (/\[ *\d+\.\d+\]/.test(built.title)) corrupted = true;
  return { ...built, corrupted };
}
