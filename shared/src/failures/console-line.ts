// Console line prefixes.
//
// Kernel console lines look like `[  123.456789][ T1234] text` (CONFIG_PRINTK_CALLER adds the
// `[ T1234]` task or `[ C1]` CPU "context"), optionally behind a syslog level `<6>`, a
// `** N printk messages dropped **` marker or a login prompt that the kernel wrote over
// (`syzkaller login: [ 36.8][ T3615] ...`). We strip the prefix and keep the context, because
// lines of one report share it and interleaved reports from other tasks do not.
// Hand-written scanner: no regex, O(prefix length), never backtracks.

export interface ConsoleLine {
  /** The line without its prefix (and without a trailing `\r`). */
  text: string;
  /** `T123` / `C1` caller context, `console` (timestamp, no caller) or `` (no timestamp). */
  ctx: string;
}

const DROPPED_PREFIX = "** ";
const DROPPED_MARK = " printk messages dropped ** ";
const LOGIN_MARK = "login: ";

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Parses `[ 123.456]` at `pos`; returns the index after `]` or -1. */
function timestampEnd(s: string, pos: number): number {
  if (s.charCodeAt(pos) !== 91 /* [ */) return -1;
  let i = pos + 1;
  while (s.charCodeAt(i) === 32) i++;
  const d0 = i;
  while (isDigit(s.charCodeAt(i))) i++;
  if (i === d0 || s.charCodeAt(i) !== 46 /* . */) return -1;
  i++;
  const d1 = i;
  while (isDigit(s.charCodeAt(i))) i++;
  if (i === d1 || s.charCodeAt(i) !== 93 /* ] */) return -1;
  return i + 1;
}

/** Parses `[ T123]` / `[C1]` at `pos`; returns [end, ctx] or null. */
function callerEnd(s: string, pos: number): [number, string] | null {
  if (s.charCodeAt(pos) !== 91) return null;
  let i = pos + 1;
  while (s.charCodeAt(i) === 32) i++;
  const kind = s.charCodeAt(i);
  if (kind !== 84 /* T */ && kind !== 67 /* C */) return null;
  i++;
  const d0 = i;
  while (isDigit(s.charCodeAt(i))) i++;
  if (i === d0 || s.charCodeAt(i) !== 93) return null;
  return [i + 1, s.slice(d0 - 1, i)];
}

function afterTimestamp(s: string, start: number): ConsoleLine | null {
  let i = timestampEnd(s, start);
  if (i < 0) return null;
  let ctx = "console";
  const caller = callerEnd(s, i);
  if (caller) {
    i = caller[0];
    ctx = caller[1];
  }
  if (s.charCodeAt(i) === 32) i++;
  return { text: s.slice(i), ctx };
}

export function splitConsoleLine(raw: string): ConsoleLine {
  const line = raw.charCodeAt(raw.length - 1) === 13 ? raw.slice(0, -1) : raw;
  let start = 0;
  if (line.startsWith(DROPPED_PREFIX)) {
    const m = line.indexOf(DROPPED_MARK, 3);
    if (m > 0 && m < 40) start = m + DROPPED_MARK.length;
  }
  // Syslog level, e.g. `<6>[  12.3] ...`.
  if (line.charCodeAt(start) === 60 /* < */) {
    let i = start + 1;
    while (isDigit(line.charCodeAt(i))) i++;
    if (i > start + 1 && line.charCodeAt(i) === 62 /* > */) start = i + 1;
  }
  const direct = afterTimestamp(line, start);
  if (direct) return direct;
  // A login prompt printed in the middle of a kernel line.
  const login = line.indexOf(LOGIN_MARK);
  if (login >= 0 && login < 200) {
    const after = afterTimestamp(line, login + LOGIN_MARK.length);
    if (after) return after;
  }
  return { text: start > 0 ? line.slice(start) : line, ctx: "" };
}
