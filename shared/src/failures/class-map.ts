// Mapping from the syzkaller corpus TYPE values to our failure classes, used for the per-class
// agreement report of the corpus test and documented in docs/failure-signatures.md.
// A corpus TYPE can correspond to several of our classes because ours are finer (HANG covers
// hung tasks, RCU stalls and soft lockups) or split by severity (DoS covers oopses and panics).

import type { FailureClass } from "./types.js";

export const CORPUS_TYPE_CLASSES: Readonly<Record<string, readonly FailureClass[]>> = {
  HANG: ["hang", "rcu_stall", "lockup"],
  WARNING: ["warning", "locking"],
  DoS: ["oops", "panic", "bug", "crash"],
  LOCKDEP: ["deadlock", "locking"],
  BUG: ["bug"],
  ATOMIC_SLEEP: ["bug"],
  "NULL-POINTER-DEREFERENCE": ["oops"],
  MEMORY_SAFETY_BUG: ["oops", "memory_safety"],
  MEMORY_SAFETY_UBSAN: ["memory_safety"],
  UBSAN: ["memory_safety"],
  LEAK: ["leak"],
  REFCOUNT_WARNING: ["warning"],
  SYZ_FAILURE: ["crash"],
  "KASAN-READ": ["memory_safety"],
  "KASAN-WRITE": ["memory_safety"],
  "KASAN-USE-AFTER-FREE-READ": ["memory_safety"],
  "KASAN-USE-AFTER-FREE-WRITE": ["memory_safety"],
  "KASAN-INVALID-FREE": ["memory_safety"],
  "KASAN-NULL-POINTER-DEREFERENCE-READ": ["memory_safety"],
  "KMSAN-UNINIT-VALUE": ["memory_safety"],
  "KMSAN-INFO-LEAK": ["memory_safety"],
  "KFENCE-READ": ["memory_safety"],
  "KFENCE-WRITE": ["memory_safety"],
  "KFENCE-USE-AFTER-FREE-READ": ["memory_safety"],
  "KFENCE-INVALID-FREE": ["memory_safety"],
  "KFENCE-MEMORY-CORRUPTION": ["memory_safety"],
  "KCSAN-DATARACE": ["memory_safety"],
  "KCSAN-ASSERT": ["memory_safety"],
};

/** True when our class agrees with a corpus TYPE (unknown TYPEs never agree). */
export function classMatchesCorpusType(cls: FailureClass, type: string): boolean {
  return CORPUS_TYPE_CLASSES[type]?.includes(cls) ?? false;
}
