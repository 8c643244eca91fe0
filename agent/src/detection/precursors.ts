// Precursors: the console lines that came before a failure in a shadow, as patterns that can be
// looked for on the production VM's own console (docs/detection.md, "Precursors").
//
// For one failure of a shadow run:
// 1. the window: the console lines before the failure's first evidence line (console failures:
//    the report's first line; other sources: the lines that arrived before the failure's time),
//    at most `windowLines` lines and `windowMs` back (kernel printk times when both lines carry
//    one, else arrival times);
// 2. dropped: the failure's own evidence lines (an OOM report's `invoked oom-killer` line is the
//    failure, not its precursor; lines of *another*, earlier report stay: a hung-task warning
//    before a panic, I/O errors before a read-only remount), lines that identify nothing
//    (consoleLinePattern: blank, registers, code bytes, generic stack frames), and noise: patterns
//    that also appear in the control shadow's console or in the shadow's own first
//    `startupNoiseMs` (boot and restore messages);
// 3. every line becomes its pattern (shared consoleLinePattern: the fingerprint normalisation, so
//    no addresses, pids, timestamps, numbers or CPU ids), deduplicated (the occurrence closest to
//    the failure counts);
// 4. the `max` most specific are kept: specificity = distinct informative words + length / 100
//    (capped at 2), halved for stack-frame lines (they repeat in every trace of that path); ties go
//    to the line closer to the failure.
import { consoleLinePattern, consoleLineTimeMs, patternWords } from "@shadowvm/shared";

export interface PrecursorOptions {
  /** How far back from the failure, ms. Default 60 000. */
  windowMs?: number;
  /** How many console lines back from the failure. Default 40. */
  windowLines?: number;
  /** Patterns kept per failure. Default 5. */
  max?: number;
  /** Lines that arrived this soon after the run start are start-up (boot/restore) noise. Default 2000 ms. */
  startupNoiseMs?: number;
}

export const DEFAULT_PRECURSOR_OPTIONS: Required<PrecursorOptions> = {
  windowMs: 60_000,
  windowLines: 40,
  max: 5,
  startupNoiseMs: 2000,
};

/** A console as the observer saw it: its lines (1-based: line n is lines[n - 1]) and their arrival. */
export interface ConsoleView {
  lines: readonly string[];
  /** ms after the run start at which line n arrived. */
  lineOffsetMs(line: number): number;
}

/** What identifies the failure in the console. */
export interface PrecursorTarget {
  /** 1-based first line of a console failure's report. */
  line?: number;
  /** ms after the run start (used when `line` is absent). */
  offsetMs: number;
  /** The failure's own evidence lines (as the parser keeps them: clipped, no trailing \r). */
  evidence: readonly string[];
}

/** The patterns of every line of a console (for a control shadow's console: its noise). */
export function consolePatterns(lines: Iterable<string>, limit = 100_000): Set<string> {
  const out = new Set<string>();
  for (const raw of lines) {
    const p = consoleLinePattern(raw);
    if (p) out.add(p.pattern);
    if (out.size >= limit) break;
  }
  return out;
}

/** Patterns of the lines that arrived within `startupNoiseMs` of the run start. */
export function startupPatterns(view: ConsoleView, startupNoiseMs: number): Set<string> {
  const out = new Set<string>();
  for (let n = 1; n <= view.lines.length; n++) {
    if (view.lineOffsetMs(n) >= startupNoiseMs) break;
    const p = consoleLinePattern(view.lines[n - 1]!);
    if (p) out.add(p.pattern);
  }
  return out;
}

/**
 * The patterns of the lines that arrived after the start-up window and are not start-up patterns:
 * every pattern this run could have had as a precursor. A run that went its full time without a
 * failure counts, for each of that failure's precursors among these, as a run the line did not
 * warn of it (SignatureDb.recordCleanRun).
 */
export function runPatterns(view: ConsoleView, startupNoiseMs: number, limit = 100_000): Set<string> {
  const startup = startupPatterns(view, startupNoiseMs);
  const out = new Set<string>();
  for (let n = 1; n <= view.lines.length && out.size < limit; n++) {
    if (view.lineOffsetMs(n) < startupNoiseMs) continue;
    const p = consoleLinePattern(view.lines[n - 1]!);
    if (p && !startup.has(p.pattern)) out.add(p.pattern);
  }
  return out;
}

/** Specificity of a pattern (see the header). */
export function precursorSpecificity(pattern: string, kind: "text" | "frame"): number {
  const words = new Set(patternWords(pattern).map((w) => w.toLowerCase()));
  const score = words.size + Math.min(pattern.length, 200) / 100;
  return kind === "frame" ? score / 2 : score;
}

const stripCr = (s: string) => (s.charCodeAt(s.length - 1) === 13 ? s.slice(0, -1) : s);

function sameEvidence(raw: string, evidence: ReadonlySet<string>, clipped: readonly string[]): boolean {
  const line = stripCr(raw);
  if (evidence.has(line)) return true;
  // The parser clips long evidence lines at 400 characters and appends an ellipsis.
  if (line.length > 400) for (const e of clipped) if (line.startsWith(e.slice(0, -1))) return true;
  return false;
}

/**
 * The precursor patterns of one failure, most specific first (see the header). `noise` holds the
 * patterns to drop (control console, start-up lines: see consolePatterns / startupPatterns).
 */
export function extractPrecursors(
  view: ConsoleView,
  target: PrecursorTarget,
  noise: ReadonlySet<string>,
  options: PrecursorOptions = {},
): string[] {
  const o = { ...DEFAULT_PRECURSOR_OPTIONS, ...options };
  if (o.max <= 0 || view.lines.length === 0) return [];
  let end: number; // last candidate line (1-based)
  if (target.line !== undefined) end = Math.min(target.line - 1, view.lines.length);
  else {
    end = 0;
    // Lines arrive in order, so their offsets do not decrease: the last one not after the failure.
    let lo = 1;
    let hi = view.lines.length;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (view.lineOffsetMs(mid) <= target.offsetMs) {
        end = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
  }
  if (end < 1) return [];
  const anchorRaw = target.line !== undefined ? view.lines[target.line - 1] : undefined;
  const anchorStamp = anchorRaw !== undefined ? consoleLineTimeMs(anchorRaw) : null;
  const anchorOffset = target.line !== undefined ? view.lineOffsetMs(target.line) : target.offsetMs;
  const evidence = new Set(target.evidence.map(stripCr));
  const clipped = target.evidence.filter((e) => e.endsWith("…"));
  const seen = new Map<string, { kind: "text" | "frame"; distance: number }>();
  const first = Math.max(1, end - o.windowLines + 1);
  for (let n = end; n >= first; n--) {
    const raw = view.lines[n - 1]!;
    const arrived = view.lineOffsetMs(n);
    const stamp = anchorStamp !== null ? consoleLineTimeMs(raw) : null;
    const age = stamp !== null && anchorStamp !== null ? anchorStamp - stamp : anchorOffset - arrived;
    if (age > o.windowMs) break;
    if (arrived < o.startupNoiseMs) break; // this line and all before it: start-up
    if (sameEvidence(raw, evidence, clipped)) continue;
    const p = consoleLinePattern(raw);
    if (!p || noise.has(p.pattern) || seen.has(p.pattern)) continue;
    seen.set(p.pattern, { kind: p.kind, distance: end - n });
  }
  return [...seen]
    .map(([pattern, c]) => ({ pattern, distance: c.distance, score: precursorSpecificity(pattern, c.kind) }))
    .sort((a, b) => b.score - a.score || a.distance - b.distance)
    .slice(0, o.max)
    .map((c) => c.pattern);
}
