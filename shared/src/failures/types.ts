// Types shared by the console parser modules.
//
// A ParsedFailure is one failure report found in a VM's serial console: a kernel crash report
// (oops, BUG, WARNING, hang, stall, lockdep, sanitizer report, panic) or an operational signal
// that matters on production kernels (OOM kill, block I/O error, filesystem error, machine check,
// userspace segfault, unknown NMI). See docs/failure-signatures.md for the title conventions.

/** Our own failure classes. The corpus TYPE -> class mapping lives in class-map.ts. */
export type FailureClass =
  | "panic"
  | "oops"
  | "bug"
  | "warning"
  | "hang"
  | "deadlock"
  | "locking"
  | "lockup"
  | "rcu_stall"
  | "oom"
  | "io_error"
  | "fs_error"
  | "memory_error"
  | "memory_safety"
  | "leak"
  | "crash"
  | "nmi";

export const FAILURE_CLASSES: readonly FailureClass[] = [
  "panic",
  "oops",
  "bug",
  "warning",
  "hang",
  "deadlock",
  "locking",
  "lockup",
  "rcu_stall",
  "oom",
  "io_error",
  "fs_error",
  "memory_error",
  "memory_safety",
  "leak",
  "crash",
  "nmi",
];

export interface ParsedFailure {
  /** One-line title, e.g. `INFO: task hung in rtnl_lock` (syzkaller's convention for kernel reports). */
  title: string;
  /** The guilty stack frame named in the title, or null when the title names none. */
  frame: string | null;
  class: FailureClass;
  /** The report is truncated or interleaved with other output. */
  corrupted: boolean;
  /** 1-based console line number where the report starts. */
  line: number;
  /** The report's console lines as printed (bounded count and length). */
  evidence: string[];
  /** Stable hex hash of the normalized title + class. */
  fingerprint: string;
  /** Id of the rule that recognised the report (e.g. `kasan`, `oom-kill`); for debugging and docs. */
  kind: string;
  /**
   * Ordering tier (see rankFailures): 0 = kernel report or uncorrected machine check,
   * 1 = panic caused by an earlier tier-0 failure, 2 = operational signal.
   */
  tier: 0 | 1 | 2;
}
