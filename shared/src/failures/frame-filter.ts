// Stack frames: parsing trace lines and choosing the "guilty" frame.
//
// Rules:
// - A frame line is `[<pc>] [<pc>] name+0xoff/0xsize ...` with optional pcs (x86, arm64, riscv,
//   powerpc `[c000...] [c000...]`), or ARM's `[<pc>] (name) from [<pc>] (caller+0x..)`.
//   Frames marked unreliable (`? name+0x..` on x86, `(unreliable)` on powerpc) are ignored.
//   Inlined frames printed by a symbolizer (`name file.c:12 [inline]`) carry no offset and are
//   not frames for title purposes.
// - Names lose compiler suffixes (`.isra.0`, `.constprop.3`, `.part.1`, `.cold`), so the same
//   function gives the same frame across builds.
// - The guilty frame is the first frame that is not a generic helper. Skip patterns match at the
//   start of the name or after an `_` (so `down` skips `__down_write` but not `teardown`).
// - Stalls and lockups loop somewhere below an entry point, so stallFrame() walks down to the
//   first "anchor" (syscall entry, workqueue, softirq, timer, vfs/socket dispatch, page fault)
//   and reports the frame just above it; syscall wrappers become `sys_<name>` / `<name>`.
// - Hung tasks sleep in generic waiting code, so hungTaskFrame() buckets rtnl_lock and the
//   synchronize_rcu family, then skips scheduler/locking/waiting frames.
// All regexes here are linear (no nested quantifiers) and run on lines capped at a few KB.

export interface Frame {
  name: string;
  questionable: boolean;
  /** ARM prints `(callee) from [<pc>] (caller+0x..)`: the caller is the next frame down. */
  caller?: string;
}

const FRAME_RE =
  /^\s*(?:\[<?(?:0x)?[0-9a-f]+>?\]\s*){0,2}(\?\s+)?([A-Za-z_][A-Za-z0-9_.]*)\+0x[0-9a-f]+(?:\/0x[0-9a-f]+)?/;
const ARM_FRAME_RE =
  /^\s*\[<[0-9a-f]+>\]\s+\(([A-Za-z_][A-Za-z0-9_.]*)(?:\+0x[0-9a-f]+\/0x[0-9a-f]+)?\)(?: from \[<[0-9a-f]+>\] \(([A-Za-z_][A-Za-z0-9_.]*)\+0x)?/;

/** Drops compiler-generated suffixes: `foo.isra.0` -> `foo`. */
export function canonicalFrame(name: string): string {
  const dot = name.indexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

/** Parses one stack-trace line (prefix already stripped). */
export function parseFrameLine(text: string): Frame | null {
  if (text.indexOf("+0x") < 0 && text.indexOf(") from [<") < 0) return null;
  const m = FRAME_RE.exec(text);
  if (m) {
    return {
      name: canonicalFrame(m[2]!),
      questionable: m[1] !== undefined || text.endsWith("(unreliable)"),
    };
  }
  const a = ARM_FRAME_RE.exec(text);
  if (a) {
    const frame: Frame = { name: canonicalFrame(a[1]!), questionable: false };
    if (a[2]) frame.caller = canonicalFrame(a[2]);
    return frame;
  }
  return null;
}

const RIP_LINE_RE = /^(?:RIP|EIP|IP|NIP|pc|PC is at|epc|ERA)\b/;
const RIP_NAME_RE = /(?:^|[\s:\]])([A-Za-z_][A-Za-z0-9_.]*)\+0x[0-9a-f]+/;

/** True for the line that names the faulting instruction: `RIP: 0010:foo+0x1/0x2`, `pc : foo+..`. */
export function isRipLine(text: string): boolean {
  return RIP_LINE_RE.test(text);
}

/** Function named by a RIP/PC line, or null (user-mode `RIP: 0033:0x4a1b`, `PC is at 0x0`). */
export function ripFrameName(text: string): string | null {
  if (!RIP_LINE_RE.test(text)) return null;
  const rest = text.slice(text.indexOf(text.startsWith("PC is at") ? "at" : " ") + 1);
  const m = RIP_NAME_RE.exec(rest);
  return m ? canonicalFrame(m[1]!) : null;
}

/**
 * Generic helpers that never explain a failure, by category. Used for every report kind;
 * report kinds add their own (e.g. `refcount` for refcount warnings).
 */
export const GENERIC_SKIP: Record<string, readonly string[]> = {
  sanitizer: [
    "kasan",
    "kmsan",
    "kcsan",
    "kfence",
    "ubsan",
    "asan",
    "hwasan",
    "msan",
    "sanitizer",
    "check_memory_region",
    "read_word_at_a_time",
    "kcov",
    "write_comp_data",
    "instrument_",
    "should_fail",
  ],
  reporting: [
    "dump_stack",
    "dump_backtrace",
    "show_stack",
    "show_regs",
    "print_",
    "^get_taint$",
    "report_bug",
    "fixup_bug",
    "handle_bug",
    "do_error_trap",
    "do_trap",
    "trap$",
    "exc_",
    "asm_exc_",
    "invalid_op",
    "do_invalid_op",
    "__warn",
    "warn_slowpath",
    "warn_alloc",
    "warn_bogus",
    "panic",
    "^die$",
    "^__die",
    "bug_handler",
    "printk",
    "vprintk",
    "va_format",
    "dev_printk",
    "dev_info",
    "dev_notice",
    "dev_warn",
    "dev_err",
    "dev_alert",
    "dev_crit",
    "dev_emerg",
    "program_check",
    "debug_object",
    "timer_is_static_object",
    "work_is_static_object",
    "nmi_cpu_backtrace",
    "nmi_trigger_cpumask_backtrace",
    "arch_trigger_cpumask_backtrace",
    "unwind_backtrace",
    "fortify_panic",
    "__fortify_report",
  ],
  locking: [
    "lockdep",
    "lock_acquire",
    "lock_release",
    "lock_class",
    "reacquire_held_locks",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "raw_read_lock",
    "raw_read_trylock",
    "raw_read_unlock",
    "raw_write_lock",
    "raw_write_trylock",
    "raw_write_unlock",
    "queued_spin_lock",
    "queued_read_lock",
    "queued_write_lock",
    "do_raw_spin",
    "down$",
    "down_read",
    "down_write",
    "down_killable",
    "down_interruptible",
    "down_trylock",
    "up_read",
    "up_write",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "mutex_remove_waiter",
    "osq_lock",
    "osq_unlock",
    "rwsem_down",
    "rt_mutex",
    "__wake_up",
    "mutex_",
    "lock_timer_base",
    "mark_lock",
    "mark_usage",
    "mark_held_locks",
    "hlock_class",
    "find_held_lock",
    "check_irq_usage",
    "check_noncircular",
    "check_prev_add",
    "check_prevs_add",
    "validate_chain",
    "perf_trace",
    "atomic_dec_and",
    "kill_fasync",
    "refcount_add",
    "refcount_sub",
    "refcount_inc",
    "refcount_dec",
    "refcount_set",
    "refcount_read",
    "raw_spin_rq",
    "read_lock",
    "read_trylock",
    "read_unlock",
    "write_lock",
    "write_trylock",
    "write_unlock",
    "owner_on_cpu",
    "imbalance_bug",
    "bh_enable",
    "bh_disable",
    "^kref_",
    "^lock_page",
  ],
  memory: [
    "memcpy",
    "memcmp",
    "memset",
    "memchr",
    "memmove",
    "strcmp",
    "strncmp",
    "strcpy",
    "strlcpy",
    "strncpy",
    "strscpy",
    "strlen",
    "strnstr",
    "strnlen",
    "strchr",
    "strstr",
    "copy_to_user",
    "copy_from_user",
    "copy_to_iter",
    "copy_from_iter",
    "copy_page_to_iter",
    "copy_page_from_iter",
    "memdup",
    "put_user",
    "get_user",
    "might_fault",
    "might_sleep",
    "list_add",
    "list_del",
    "list_replace",
    "list_move",
    "list_splice",
    "indirect_thunk_",
    "string",
    "pointer",
    "snprintf",
    "scnprintf",
    "sprintf",
    "kasprintf",
    "kvasprintf",
    "hex_dump",
    "^kfree$",
    "kfree_skb",
    "^complete$",
    "wait_for_completion",
    "strdup",
    "strndup",
    "copy_folio_to_iter",
    "^copyin$",
    "^copyout$",
    "check_object",
    "nocheck",
    "__phys_addr",
    // MMIO accessors (and UML's logic_iomem) stand for the driver that calls them.
    "readb$",
    "readw$",
    "readl$",
    "readq$",
    "writeb$",
    "writew$",
    "writel$",
    "writeq$",
    "logic_in",
    "logic_out",
  ],
  // Library code (lib/, include/): data structures, checksums, bit and atomic ops, formatting.
  library: [
    "rb_erase",
    "rb_insert",
    "rb_next",
    "rb_prev",
    "rb_first",
    "rb_last",
    "rb_replace",
    "__rb_",
    "rhashtable",
    "xas_",
    "xa_",
    "idr_",
    "ida_",
    "klist_",
    "crc",
    "bitmap_",
    "find_next_bit",
    "test_and_set_bit",
    "test_and_clear_bit",
    "set_bit",
    "clear_bit",
    "atomic_",
    "seqprop",
    "seqcount",
    "read_once",
    "vsnprintf",
    "vscnprintf",
    "format_decode",
    "ref_tracker",
    "percpu_ref",
    "assertfail",
    "stack_trace_",
    "arch_stack_walk",
    "walk_stack",
    "trace_hardirqs",
    "lockdep_hardirqs",
    "local_bh_enable",
    "__raw_read",
    "__raw_write",
    // crypto library primitives
    "aes",
    "crypto_",
    "xts_",
    "sha1",
    "sha256",
    "sha512",
    "chacha",
    "poly1305",
    "blake2s",
    "extract_user_to_sg",
    "extract_iter_to_sg",
  ],
  // Allocators: a fault inside them is a corrupted object handed in by the caller.
  allocator: [
    "kmalloc",
    "kvmalloc",
    "krealloc",
    "kvfree",
    "vfree",
    "alloc_frozen_pages",
    "free_pages",
    "free_large_kmalloc",
    "check_heap_object",
    "vzalloc",
    "__vmalloc",
    "might_resched",
    "kzalloc",
    "kcalloc",
    "kmem_cache",
    "allocate_slab",
    "slab_",
    "alloc_page",
    "folio_alloc",
    "filemap_alloc_folio",
    "__filemap_get_folio",
    "find_or_create_page",
    "do_read_cache_folio",
    "read_cache_page",
    "pagecache_get_page",
    "grab_cache_page_write_begin",
    "find_lock_entries",
    "truncate_inode_pages_range",
  ],
  // Helpers that WARN/BUG when the caller breaks their contract.
  contract: [
    "drop_nlink",
    "inc_nlink",
    "clear_nlink",
    "set_nlink",
    "mark_buffer_dirty",
    "folio_unlock",
    "unlock_page",
    "iput",
    "dput",
    "fast_dput",
    "skb_put",
    "skb_push",
    "skb_pull",
    "skb_over_panic",
    "skb_under_panic",
  ],
  // Arch fault-handling entry code between the faulting frame and the code that faulted.
  faultEntry: [
    "do_DataAbort",
    "do_PrefetchAbort",
    "__do_kernel_fault",
    "do_bad_area",
    "do_mem_abort",
    "do_translation_fault",
    "do_page_fault",
    "el1_",
    "el1h_",
    "do_tag_check_fault",
    "asm_",
    "sysvec_",
  ],
  teardown: [
    "del_timer",
    "timer_delete",
    "flush_work",
    "cancel_work_timer",
    "cancel_work_sync",
    "try_to_grab_pending",
    "flush_workqueue",
    "drain_workqueue",
    "destroy_workqueue",
    "finish_wait",
    "kthread_stop",
    "kobject_",
    "queue_work",
    "insert_work",
    "queue_delayed_work",
    "add_uevent_var",
    "get_device_parent",
    "device_add",
    "device_del",
    "device_unregister",
    "device_destroy",
    "device_release",
    "devres_release_all",
    "hwrng_unregister",
    "i2c_del_adapter",
    "unregister_client",
    "device_for_each_child",
    "rollback_registered",
    "unregister_netdev",
    "sysfs_remove",
    "device_remove_file",
    "tty_unregister_device",
    "dummy_urb_enqueue",
    "usb_kill_urb",
    "usb_kill_anchored_urbs",
    "usb_control_msg",
    "usb_hcd_submit_urb",
    "usb_submit_urb",
    "cleanup_srcu_struct",
    "^put_device$",
    "^ihold$",
    "__mod_timer",
    "sk_stop_timer_sync",
  ],
};

/** `foo` matches at the start or after `_`; `^foo` only at the start; a trailing `$` anchors the end. */
function skipRegex(patterns: readonly string[]): RegExp {
  const esc = (p: string) => p.replace(/[.*+?{}()|[\]\\]/g, "\\$&");
  const word = patterns.filter((p) => !p.startsWith("^")).map(esc);
  const start = patterns.filter((p) => p.startsWith("^")).map((p) => esc(p.slice(1)));
  const parts: string[] = [];
  if (word.length > 0) parts.push(`(?:^|_)(?:${word.join("|")})`);
  if (start.length > 0) parts.push(`^(?:${start.join("|")})`);
  return new RegExp(parts.join("|"));
}

const GENERIC_SKIP_RE = skipRegex(Object.values(GENERIC_SKIP).flat());

export type FrameSkipper = (name: string) => boolean;

/** A predicate for frames to skip: the generic helpers plus `extra` (same matching rules). */
export function makeSkipper(extra: readonly string[] = []): FrameSkipper {
  if (extra.length === 0) return (name) => GENERIC_SKIP_RE.test(name);
  const extraRe = skipRegex(extra);
  return (name) => GENERIC_SKIP_RE.test(name) || extraRe.test(name);
}

/** Entry points below which a stalled CPU's loop lives (see stallFrame). */
const STALL_ANCHOR_RE = new RegExp(
  [
    // syscall entry
    "^(?:do_syscall_|do_fast_syscall_|__do_fast_syscall_|do_int80_syscall|entry_SYSCALL|entry_SYSENTER|entry_INT80|ret_fast_syscall|invoke_syscall|el0_svc|system_call|sysenter_dispatch|tracesys)",
    // kernel threads, workqueues, softirqs and timers
    "^(?:process_one_work|worker_thread|kthread$|ret_from_fork|smpboot_thread_fn|run_ksoftirqd|__do_softirq|do_softirq|handle_softirqs|call_timer_fn|__run_hrtimer|__run_timers|run_timer_softirq|expire_timers|tasklet_action|cpu_startup_entry|start_secondary)",
    "netif_receive_skb",
    // file, mmap and socket dispatch that identifies the driver/protocol just above it
    "vfs_write|vfs_read|vfs_iter_read|vfs_iter_write|do_iter_read|do_iter_write|vfs_ioctl|ksys_ioctl|compat_ioctl|compat_sys_ioctl|blkdev_driver_ioctl|blkdev_ioctl|do_iter_readv_writev|mmap_region|do_mmap|do_dentry_open|vfs_open",
    "^(?:call_read_iter|call_write_iter|call_mmap)",
    "^(?:sock_sendmsg|sock_recvmsg|sock_release|__sock_release|__sys_setsockopt|kernel_setsockopt|sock_common_setsockopt|__sys_listen|kernel_listen|sk_common_release|sock_mmap|__sys_accept|kernel_accept|sock_do_ioctl|sock_ioctl|compat_sock_ioctl|nfnetlink_rcv_msg|rtnetlink_rcv_msg)",
    "^(?:compat_)?(?:SYSC|SyS|__sys|___sys|__do_sys|__se_sys|__x64_sys)_(?:socketpair|connect|ioctl)",
    // return-to-user work (page faults are not anchors: a stall in a fault is usually the
    // syscall's copy to/from user memory, so the walk continues down to the syscall)
    "^(?:__fput|task_work_run|exit_to_usermode|exit_to_user_mode|__do_fault|new_sync_read|new_sync_write)",
    "smp_call_function",
  ].join("|"),
);

/**
 * Syscall wrappers as the corpus names them: `__x64_sys_foo` -> `sys_foo`; the inner wrappers
 * `__se_sys_foo` / `__do_sys_foo` and old `SyS_foo` / `compat_SyS_foo` -> `foo`.
 */
export function syscallFrameName(name: string): string {
  const arch = /^__(?:x64|ia32|arm64|riscv|s390x|powerpc)_(?:compat_)?sys_/.exec(name);
  if (arch) return `sys_${name.slice(arch[0].length)}`;
  const old = /^(?:(?:compat_)?(?:SYSC|SyS)_|__(?:se|do)_(?:compat_)?sys_)/.exec(name);
  if (old) return name.slice(old[0].length);
  return name;
}

/** Frame for stalls/lockups: the callee of the first anchor frame, or null. */
export function stallFrame(frames: readonly string[]): string | null {
  let prev = frames[0];
  for (const frame of frames) {
    if (STALL_ANCHOR_RE.test(frame)) {
      // smp_call_function* is itself the useful bucket (the IPI target varies).
      if (frame.includes("smp_call_function")) return "smp_call_function";
      return prev === undefined ? null : syscallFrameName(prev);
    }
    prev = frame;
  }
  return null;
}

const HUNG_BUCKETS: ReadonlyArray<[string, string]> = [
  ["rtnl_lock", "rtnl_lock"],
  ["synchronize_rcu", "synchronize_rcu"],
  ["synchronize_srcu", "synchronize_rcu"],
  ["synchronize_net", "synchronize_rcu"],
  ["synchronize_sched", "synchronize_rcu"],
];
const HUNG_SKIP = [
  "sched",
  "_lock",
  "_slowlock",
  "down",
  "rwsem",
  "completion",
  "kthread",
  "wait",
  "synchronize",
  "context_switch",
  "__switch_to",
  "cancel_delayed_work",
  "rcu_barrier",
];

/** Scheduler, locking and waiting frames (where a blocked task sleeps, whatever it waits for). */
export function isWaitingFrame(frame: string): boolean {
  return HUNG_SKIP.some((s) => frame.includes(s));
}

/** Frame for hung tasks: well-known blocking buckets first, then the first non-waiting frame. */
export function hungTaskFrame(frames: readonly string[]): string | null {
  for (const frame of frames) {
    for (const [needle, bucket] of HUNG_BUCKETS) if (frame.includes(needle)) return bucket;
  }
  for (const frame of frames) {
    if (!isWaitingFrame(frame)) return frame;
  }
  return null;
}
