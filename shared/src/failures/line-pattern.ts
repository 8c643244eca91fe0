// Console line patterns: one console line turned into a pattern that is the same on every shadow,
// VM and host for "the same message", with the normalisation the fingerprints use
// (normalizeFailureTitle: addresses -> ADDR, standalone numbers -> NUM, CPU ids -> CPU#N) after the
// console prefix is stripped (splitConsoleLine: `[  12.345678][ T123]`, syslog levels). A few
// things fingerprint titles never contain are masked first: wall-clock times (TIME), UUIDs (UUID),
// IPv4 addresses (IP), decimals and numbers with a unit (`4.2s`, `512kB`, `37%` -> NUM).
//
// Used for precursors: lines that preceded a failure in a shadow (agent/src/detection/precursors.ts)
// are stored as patterns and matched, pattern for pattern, against production consoles. Lines that
// carry nothing recognisable are no pattern (null): blank lines, register dumps and code bytes,
// call-trace markers, stack frames of generic helpers (scheduler, locking, allocation, printk...).
import { splitConsoleLine } from "./console-line.js";
import { normalizeFailureTitle } from "./fingerprint.js";
import { isWaitingFrame, makeSkipper, parseFrameLine } from "./frame-filter.js";

/** Characters of a line considered, and of a pattern kept. */
export const MAX_PATTERN_LINE = 4096;
export const MAX_PATTERN_CHARS = 300;

export interface LinePattern {
  pattern: string;
  /** `frame`: a stack frame line (`ext4_writepages+ADDR/ADDR`); `text`: any other message. */
  kind: "text" | "frame";
}

const PLACEHOLDERS = new Set(["NUM", "ADDR", "CPU", "TIME", "UUID", "IP"]);

/** Register dumps, code bytes, trace/section markers: console lines that identify nothing. */
const NOISE_RE =
  /^(?:R[A-Z0-9]{1,3}:|E[A-Z]{2}:|[CDE]S:|[FG]S:|CR[0-9]:|DR[0-9]:|Code:|Stack:|Call Trace:|Call trace:|<\/?(?:TASK|IRQ|NMI|EOI|SOFTIRQ)>|---\[ end|Hardware name:|Modules linked in:|Workqueue:|CPU: NUM PID: NUM|Tainted:)/;

const skipGeneric = makeSkipper();
/** Entry and thread frames at the bottom of nearly every trace. */
const ENTRY_FRAME_RE =
  /^(?:entry_SYSCALL|entry_SYSENTER|do_syscall_|do_fast_syscall|ret_from_fork|kthread$|worker_thread|process_one_work|smpboot_thread_fn|cpu_startup_entry|start_secondary|secondary_startup|do_idle|default_idle|asm_|common_interrupt|irq_exit)/;

// biome-ignore lint/suspicious/noControlCharactersInRegex: binary console noise is masked on purpose
const CONTROL_RE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\ufffd]+/g;
const ISO_TIME_RE = /\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?/g;
const CLOCK_RE = /\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b/g;
const UUID_RE = /\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b/g;
const IPV4_RE = /\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/g;
const UNIT_RE = /(?<![\w.])\d+(?:\.\d+)?(?:[kKMGT]i?B|[kKMGT]|[mun]?s|msecs?|secs?|jiffies|%|x)(?![\w])/g;
const DECIMAL_RE = /(?<![\w.])\d+\.\d+(?![\w])/g;

/** Words of a pattern that carry information (placeholders and short tokens excluded). */
export function patternWords(pattern: string): string[] {
  return pattern.split(/[^A-Za-z_]+/).filter((w) => w.length >= 3 && !PLACEHOLDERS.has(w));
}

/** The pattern of one raw console line, or null when the line identifies nothing. */
export function consoleLinePattern(raw: string): LinePattern | null {
  const cut = raw.length > MAX_PATTERN_LINE ? raw.slice(0, MAX_PATTERN_LINE) : raw;
  const text = splitConsoleLine(cut).text.replace(CONTROL_RE, " ").trim();
  if (text.length === 0) return null;
  const frame = parseFrameLine(text);
  if (
    frame &&
    (frame.questionable ||
      skipGeneric(frame.name) ||
      isWaitingFrame(frame.name) ||
      ENTRY_FRAME_RE.test(frame.name))
  )
    return null;
  const masked = text
    .replace(ISO_TIME_RE, "TIME")
    .replace(CLOCK_RE, "TIME")
    .replace(UUID_RE, "UUID")
    .replace(IPV4_RE, "IP")
    .replace(UNIT_RE, "NUM")
    .replace(DECIMAL_RE, "NUM");
  let pattern = normalizeFailureTitle(masked);
  if (NOISE_RE.test(pattern)) return null;
  if (patternWords(pattern).length === 0) return null;
  if (pattern.length > MAX_PATTERN_CHARS) pattern = pattern.slice(0, MAX_PATTERN_CHARS);
  return { pattern, kind: frame ? "frame" : "text" };
}

const STAMP_RE = /^(?:<\d{1,3}>)?\[\s*(\d{1,10})\.(\d{1,9})\]/;

/** The kernel's printk time of a console line (`[  12.345678] ...`) in ms, or null. */
export function consoleLineTimeMs(raw: string): number | null {
  const m = STAMP_RE.exec(raw);
  if (!m) return null;
  return Number(m[1]) * 1000 + Number(`0.${m[2]}`) * 1000;
}
