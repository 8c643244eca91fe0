// Console parser: finds every failure report in raw Linux console output.
//
// Rules (details in docs/failure-signatures.md):
// - Input is split on `\n`; lines longer than MAX_LINE chars are cut for matching (the rest of
//   the line is dropped), so per-line work is bounded. Bytes are decoded as UTF-8 with
//   replacement characters; binary noise is just text that matches nothing.
// - A line is only examined when it contains a trigger word (KERNEL_TRIGGER_WORDS and the signal
//   words) or a report is open. While nothing is open, one regex over the whole chunk jumps from
//   trigger to trigger and the lines in between are only counted.
// - A report starts at a header line recognised by kernel-reports.ts and collects the following
//   lines of the same printk caller context (`[ T123]` / `[ C1]`; CPU contexts too once
//   `Sending NMI from CPU` announces an all-CPU backtrace). It ends at `---[ end trace`/`---[ end
//   Kernel panic`, at the next header in the same context, after QUIET_LINES lines without a
//   stack frame, after STALE_LINES console lines without one of its own (its task fell silent
//   while others print), or after MAX_REPORT_LINES lines. Continuation headers (`Oops: 0000`, `invalid
//   opcode` after `kernel BUG`, arm's `Internal error` after `Unable to handle kernel ...`) stay in
//   the report they belong to. A panic that arrives before its cause printed any stack shares the
//   following lines with it (panic_on_warn prints the WARNING's stack after the panic line).
// - Operational signals (signals.ts) are tracked independently of kernel reports.
// - Ordering (rankFailures): kernel reports and uncorrected machine checks first, in console
//   order (as syzkaller: the first report wins, even a WARNING before an oops); then panics that
//   follow one of those (the oops beats the panic it triggered); then operational signals in
//   console order. The first element is the failure to act on.
// - ConsoleScanner.push() returns reports as they complete; parseConsole() is push(text) + end()
//   ranked, so streaming and whole-text parsing agree whatever the chunking.

import { StringDecoder } from "node:string_decoder";
import { splitConsoleLine } from "./console-line.js";
import { failureFingerprint } from "./fingerprint.js";
import {
  buildTitle,
  type HeaderHit,
  isTraceKeyword,
  matchKernelHeader,
  ruleClass,
} from "./kernel-reports.js";
import {
  SIGNAL_TRIGGER_SUBSTRINGS,
  SIGNAL_TRIGGER_WORDS,
  type SignalReport,
  SignalTracker,
} from "./signals.js";
import type { FailureClass, ParsedFailure } from "./types.js";

/** Characters of a line considered for matching. */
export const MAX_LINE = 4096;
/** Report lines kept for title extraction. */
export const MAX_REPORT_LINES = 800;
/** Consecutive lines without a stack frame that end a report. */
export const QUIET_LINES = 60;
/** Console lines (of any context) since a report's own last line that end it. */
export const STALE_LINES = 200;
/** Evidence lines kept per report, and characters per evidence line. */
export const MAX_EVIDENCE = 60;
export const MAX_EVIDENCE_CHARS = 400;
/** Reports open at once (interleaved contexts); the oldest is closed beyond this. */
const MAX_OPEN = 8;
/**
 * Failures kept per console. Beyond MAX_RESULTS only failures with a new fingerprint are kept,
 * up to MAX_DISTINCT; the rest are counted in `dropped`. Bounds memory on floods of reports.
 */
export const MAX_RESULTS = 10_000;
export const MAX_DISTINCT = 20_000;

/**
 * Literal words that every kernel report header (or report-shaping line) contains. They start
 * with a capital letter or a bracket: V8 scans an alternation of such words about four times
 * faster than one with lowercase-led words, which matters because most console lines are
 * skipped on this test alone. `[#` is the oops counter that die() prints in `general protection
 * fault: 0000 [#1]`, `divide error: 0000 [#1]`, `invalid opcode`, `stack segment`, `int3`.
 */
const KERNEL_TRIGGER_WORDS: readonly string[] = [
  "BUG",
  "WARNING:",
  "INFO:",
  "[#",
  "PANIC:",
  "Oops:",
  "Internal error",
  "Unhandled fault",
  "Alignment trap",
  "UBSAN:",
  "LOCKUP",
  "Kernel panic",
  "_netdevice: ",
  "Busy inodes",
  "Unable to handle",
  "Sending NMI",
];

/** One regex for literal words, factored by first character (`B(?:UG|TRFS)|W...`). */
function triggerRegex(words: readonly string[], flags = ""): RegExp {
  const esc = (w: string) => w.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  const groups = new Map<string, string[]>();
  for (const w of words) {
    const rest = groups.get(w[0]!) ?? [];
    rest.push(esc(w.slice(1)));
    groups.set(w[0]!, rest);
  }
  const source = [...groups]
    .map(([c, rest]) => `${esc(c)}${rest.length === 1 ? rest[0] : `(?:${rest.join("|")})`}`)
    .join("|");
  return new RegExp(source, flags);
}

const KERNEL_TRIGGER_RE = triggerRegex(KERNEL_TRIGGER_WORDS);
const SIGNAL_TRIGGER_RE = triggerRegex(SIGNAL_TRIGGER_WORDS);
/** All regex words, global: finds the next candidate line in a chunk while idle (see push). */
const TRIGGER_SCAN = triggerRegex([...KERNEL_TRIGGER_WORDS, ...SIGNAL_TRIGGER_WORDS], "g");

function hasSignalWord(raw: string): boolean {
  if (SIGNAL_TRIGGER_RE.test(raw)) return true;
  for (const w of SIGNAL_TRIGGER_SUBSTRINGS) if (raw.includes(w)) return true;
  return false;
}

interface OpenReport {
  hit: HeaderHit;
  cls: FailureClass;
  ctx: string;
  line: number;
  /** Console line number of the report's latest line (see STALE_LINES). */
  lastLine: number;
  lines: string[];
  evidence: string[];
  sinceFrame: number;
  /** A call-trace keyword line has been seen (the report's own stack has started). */
  traceSeen: boolean;
  nmi: boolean;
  /** Panic with an earlier non-panic kernel report: ranked after it. */
  consequence: boolean;
}

function clip(raw: string): string {
  const s = raw.charCodeAt(raw.length - 1) === 13 ? raw.slice(0, -1) : raw;
  return s.length > MAX_EVIDENCE_CHARS ? `${s.slice(0, MAX_EVIDENCE_CHARS)}…` : s;
}

function isFrameish(text: string): boolean {
  return text.includes("+0x") || text.includes(") from [<");
}

function isEndMarker(text: string): boolean {
  return text.startsWith("---[ end trace") || text.startsWith("---[ end Kernel panic");
}

/** Streaming parser for a live console. */
export class ConsoleScanner {
  private decoder = new StringDecoder("utf8");
  private partial = "";
  private lineNo = 0;
  private open: OpenReport[] = [];
  private signals = new SignalTracker();
  private signalOut: SignalReport[] = [];
  private kernelReportsSeen = 0;
  private out: ParsedFailure[] = [];
  private all: ParsedFailure[] = [];
  private fingerprints = new Set<string>();
  private ended = false;
  /** Failures not kept because of MAX_RESULTS / MAX_DISTINCT. */
  dropped = 0;

  /** Feeds console output; returns the reports completed by it (not ranked). */
  push(chunk: string | Uint8Array): ParsedFailure[] {
    if (this.ended) throw new Error("ConsoleScanner: push() after end()");
    let s: string;
    if (typeof chunk === "string") {
      s = this.decoder.end() + chunk;
    } else {
      s = this.decoder.write(chunk);
    }
    let pos = 0;
    // Next occurrence of each SIGNAL_TRIGGER_SUBSTRINGS word in this chunk (indexOf is cached).
    const substringAt = SIGNAL_TRIGGER_SUBSTRINGS.map(() => -1);
    for (;;) {
      if (this.partial.length === 0 && this.open.length === 0 && !this.signals.busy) {
        // Idle fast path: nothing is open, so lines without a trigger word only need counting.
        // Jump to the line holding the next trigger (or to the trailing partial line).
        TRIGGER_SCAN.lastIndex = pos;
        const m = TRIGGER_SCAN.exec(s);
        let stop = m ? m.index : s.length;
        for (let i = 0; i < substringAt.length; i++) {
          if (substringAt[i]! < pos) {
            const at = s.indexOf(SIGNAL_TRIGGER_SUBSTRINGS[i]!, pos);
            substringAt[i] = at < 0 ? Number.MAX_SAFE_INTEGER : at;
          }
          stop = Math.min(stop, substringAt[i]!);
        }
        for (let nl = s.indexOf("\n", pos); nl >= 0 && nl < stop; nl = s.indexOf("\n", pos)) {
          this.lineNo++;
          pos = nl + 1;
        }
      }
      const nl = s.indexOf("\n", pos);
      if (nl < 0) {
        this.addPartial(s, pos, s.length);
        break;
      }
      let line: string;
      if (this.partial.length > 0) {
        this.addPartial(s, pos, nl);
        line = this.partial;
        this.partial = "";
      } else {
        line = s.slice(pos, Math.min(nl, pos + MAX_LINE));
      }
      this.onLine(line);
      pos = nl + 1;
    }
    return this.drain();
  }

  /** Ends the console: completes open reports and returns them. */
  end(): ParsedFailure[] {
    if (this.ended) return [];
    const rest = this.decoder.end();
    if (rest.length > 0) this.addPartial(rest, 0, rest.length);
    if (this.partial.length > 0) {
      const line = this.partial;
      this.partial = "";
      this.onLine(line);
    }
    this.ended = true;
    for (const r of this.open) this.finish(r);
    this.open = [];
    this.signals.flush(this.signalOut);
    return this.drain();
  }

  /** Everything found so far, ranked (see rankFailures). */
  results(): ParsedFailure[] {
    return rankFailures(this.all);
  }

  private addPartial(s: string, from: number, to: number): void {
    const room = MAX_LINE - this.partial.length;
    if (room <= 0 || from >= to) return;
    this.partial += s.slice(from, Math.min(to, from + room));
  }

  private drain(): ParsedFailure[] {
    for (const sig of this.signalOut) this.emit(signalFailure(sig));
    this.signalOut = [];
    const done = this.out;
    this.out = [];
    return done;
  }

  private emit(f: ParsedFailure): void {
    const known = this.fingerprints.has(f.fingerprint);
    if (this.all.length >= MAX_DISTINCT || (this.all.length >= MAX_RESULTS && known)) {
      this.dropped++;
      return;
    }
    this.fingerprints.add(f.fingerprint);
    this.out.push(f);
    this.all.push(f);
  }

  private onLine(raw: string): void {
    const lineNo = ++this.lineNo;
    // A report whose context fell silent (other tasks keep printing) is complete.
    for (let i = this.open.length - 1; i >= 0; i--) {
      const r = this.open[i]!;
      if (lineNo - r.lastLine > STALE_LINES) this.close(r);
    }
    const kernelWord = KERNEL_TRIGGER_RE.test(raw);
    const signalWord = hasSignalWord(raw);
    if (!kernelWord && !signalWord && this.open.length === 0) {
      if (this.signals.busy) this.signals.onLine(lineNo, null, raw, this.signalOut);
      return;
    }
    const { text, ctx } = splitConsoleLine(raw);
    this.signals.onLine(lineNo, signalWord ? text : null, raw, this.signalOut);
    const hit = kernelWord ? matchKernelHeader(text) : null;
    if (hit) {
      if (this.onHeader(hit, text, ctx, raw, lineNo)) return;
    } else if (kernelWord && text.includes("Sending NMI from CPU")) {
      for (const r of this.open) if (r.ctx === ctx) r.nmi = true;
    }
    this.feed(text, ctx, raw);
  }

  /** Returns true when the header line was consumed (new report opened or ignored). */
  private onHeader(hit: HeaderHit, text: string, ctx: string, raw: string, lineNo: number): boolean {
    const continues = hit.rule.continues;
    const stream = this.open.filter((r) => sameStream(r, ctx));
    if (continues) {
      const owner = stream.find((r) => continues.includes("*") || continues.includes(r.hit.rule.id));
      if (owner) return false; // an ordinary line of the open report
      if (continues.includes("*")) return true; // nothing to continue: ignore
    }
    for (const r of hit.rule.interleaves ? [] : stream) {
      // A report whose stack has not started yet keeps receiving lines: with panic_on_warn the
      // panic line precedes the WARNING's stack, and with caller contexts a second report in
      // the same task is often the consequence of the first (syzkaller does the same).
      if (!r.traceSeen && !r.hit.rule.panic && (hit.rule.panic || isCallerCtx(r.ctx))) {
        r.lines.push(text);
        r.lastLine = lineNo;
        if (r.evidence.length < MAX_EVIDENCE) r.evidence.push(clip(raw));
        continue;
      }
      this.close(r);
    }
    if (this.open.length >= MAX_OPEN) this.close(this.open[0]!);
    const consequence =
      hit.rule.panic === true && (this.kernelReportsSeen > 0 || this.signals.causesSeen > 0);
    if (!hit.rule.panic) this.kernelReportsSeen++;
    this.open.push({
      hit,
      cls: ruleClass(hit.rule, hit.match),
      ctx,
      line: lineNo,
      lastLine: lineNo,
      lines: [text],
      evidence: [clip(raw)],
      sinceFrame: 0,
      traceSeen: false,
      nmi: false,
      consequence,
    });
    return true;
  }

  /** Adds a non-header line to the open reports of its context. */
  private feed(text: string, ctx: string, raw: string): void {
    if (this.open.length === 0) return;
    const frameish = isFrameish(text);
    const end = isEndMarker(text);
    for (let i = 0; i < this.open.length; i++) {
      const r = this.open[i]!;
      if (r.ctx !== ctx && !(r.nmi && ctx.startsWith("C"))) continue;
      r.lastLine = this.lineNo;
      if (r.lines.length < MAX_REPORT_LINES) r.lines.push(text);
      if (r.evidence.length < MAX_EVIDENCE) r.evidence.push(clip(raw));
      if (frameish) r.sinceFrame = 0;
      else {
        r.sinceFrame++;
        if (!r.traceSeen && isTraceKeyword(text)) r.traceSeen = true;
      }
      if (end || r.sinceFrame >= QUIET_LINES || r.lines.length >= MAX_REPORT_LINES) {
        this.close(r);
        i--;
      }
    }
  }

  private close(r: OpenReport): void {
    const idx = this.open.indexOf(r);
    if (idx >= 0) this.open.splice(idx, 1);
    this.finish(r);
  }

  private finish(r: OpenReport): void {
    const built = buildTitle(r.hit, r.lines);
    this.emit({
      title: built.title,
      frame: built.frame,
      class: r.cls,
      // `Fatal exception` alone means the oops was lost; after its oops it is complete.
      corrupted: built.corrupted && !r.consequence,
      line: r.line,
      evidence: r.evidence,
      fingerprint: failureFingerprint(built.title, r.cls),
      kind: r.hit.rule.id,
      tier: r.consequence ? 1 : 0,
    });
  }
}

function isCallerCtx(ctx: string): boolean {
  return ctx.startsWith("T") || ctx.startsWith("C");
}

function sameStream(r: OpenReport, ctx: string): boolean {
  return r.ctx === ctx || r.ctx === "console" || r.ctx === "";
}

function signalFailure(s: SignalReport): ParsedFailure {
  return {
    title: s.title,
    frame: null,
    class: s.class,
    corrupted: false,
    line: s.line,
    evidence: s.evidence.map(clip),
    fingerprint: failureFingerprint(s.title, s.class),
    kind: s.kind,
    tier: s.tier,
  };
}

/**
 * Most important first: kernel reports and uncorrected machine checks (tier 0) in console order,
 * then panics caused by an earlier one of those (tier 1), then operational signals (tier 2) in
 * console order. syzkaller also takes the first report in console order, so an earlier WARNING
 * ranks before a later oops (the corpus has three such logs, all titled by the WARNING).
 */
export function rankFailures(failures: readonly ParsedFailure[]): ParsedFailure[] {
  return [...failures].sort(
    (a, b) => a.tier - b.tier || a.line - b.line || (a.title < b.title ? -1 : a.title > b.title ? 1 : 0),
  );
}

/** Parses a whole console log; the first element is the most important failure. */
export function parseConsole(text: string | Uint8Array): ParsedFailure[] {
  const scanner = new ConsoleScanner();
  scanner.push(text);
  scanner.end();
  return scanner.results();
}
