// Console parser: production signals, kernel reports, ordering, streaming equivalence and
// robustness on adversarial input. Samples are in console-samples.ts.
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  ConsoleScanner,
  MAX_EVIDENCE,
  MAX_EVIDENCE_CHARS,
  MAX_RESULTS,
  parseConsole,
  rankFailures,
} from "./console-parser.js";
import {
  SAMPLE_LOOKALIKES,
  SAMPLE_NOISE,
  SAMPLE_REPORTS,
  type SampleName,
  stampConsole,
} from "./console-samples.js";
import { oomKillVictim } from "./signals.js";
import type { ParsedFailure } from "./types.js";

function parseSample(name: SampleName, ctx = "T42"): ParsedFailure[] {
  return parseConsole(stampConsole(SAMPLE_REPORTS[name], 100, ctx));
}

function brief(f: ParsedFailure) {
  return { title: f.title, class: f.class, frame: f.frame, tier: f.tier };
}

/** mulberry32: deterministic random numbers for chunk splits and noise. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// --- production signals -----------------------------------------------------------------------

test("OOM kill: one failure named after the victim, from `invoked oom-killer` to `Killed process`", () => {
  const [f, ...rest] = parseSample("oomKill");
  assert.equal(rest.length, 0);
  assert.equal(brief(f!), { title: "OOM kill of postgres", class: "oom", frame: null, tier: 2 });
  assert.is(f!.line, 1);
  assert.ok(f!.evidence.some((l) => l.includes("Killed process 4321 (postgres)")));
});

test("OOM kill in a memory cgroup and the older `Kill process` wording", () => {
  const memcg = parseConsole(
    "Memory cgroup out of memory: Killed process 812 (java) total-vm:4404744kB, anon-rss:1048576kB, file-rss:0kB",
  );
  assert.equal(memcg.map(brief), [
    { title: "OOM kill of java (memory cgroup)", class: "oom", frame: null, tier: 2 },
  ]);
  const old = parseConsole(
    "Out of memory: Kill process 1234 (mysqld) score 950 or sacrifice child\nKilled process 1234 (mysqld) total-vm:1kB",
  );
  assert.equal(
    old.map((f) => f.title),
    ["OOM kill of mysqld"],
  );
});

test("an OOM kill's title gives its victim back, spaces and memory cgroup included", () => {
  const titles = parseConsole(
    [
      "Out of memory: Killed process 77 (Web Content) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
      "Memory cgroup out of memory: Killed process 812 (java) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
    ].join("\n"),
  ).map((f) => f.title);
  assert.equal(titles.map(oomKillVictim).sort(), ["Web Content", "java"]);
  assert.is(oomKillVictim("OOM: oom-killer invoked by kswapd0"), undefined);
  assert.is(oomKillVictim("kernel panic: sysrq triggered crash"), undefined);
});

test("OOM with nothing to kill: the deadlock panic is the failure, classed oom", () => {
  const out = parseSample("oomDeadlock");
  assert.equal(out.map(brief), [
    { title: "kernel panic: System is deadlocked on memory", class: "oom", frame: null, tier: 0 },
    { title: "OOM: no killable processes", class: "oom", frame: null, tier: 2 },
  ]);
});

test("block I/O errors: one failure per disk burst, partitions folded into the disk", () => {
  const out = parseSample("ioErrors");
  assert.equal(out.map(brief), [{ title: "I/O error on vda", class: "io_error", frame: null, tier: 2 }]);
  assert.is(out[0]!.evidence.length, 3);
  const two = parseConsole(
    "I/O error, dev sda, sector 8 op 0x0:(READ)\nI/O error, dev nvme0n1, sector 8 op 0x0:(READ)",
  );
  assert.equal(
    two.map((f) => f.title),
    ["I/O error on sda", "I/O error on nvme0n1"],
  );
});

test("EXT4 error, journal abort and read-only remount are three fs_error failures in console order", () => {
  const out = parseSample("ext4ErrorRemount");
  assert.equal(
    out.map((f) => [f.title, f.class, f.line]),
    [
      ["EXT4-fs error in ext4_find_entry", "fs_error", 1],
      ["JBD2: journal aborted", "fs_error", 2],
      ["EXT4-fs: filesystem remounted read-only", "fs_error", 3],
    ],
  );
});

test("XFS metadata I/O error and shutdown", () => {
  assert.equal(
    parseSample("xfsShutdown").map((f) => f.title),
    ["XFS: metadata I/O error in xfs_buf_ioend", "XFS: filesystem shut down"],
  );
});

test("machine check: the MCE ranks before the panic it triggered", () => {
  const out = parseSample("machineCheckPanic");
  assert.equal(out.map(brief), [
    { title: "machine check: Processor context corrupt", class: "memory_error", frame: null, tier: 0 },
    { title: "kernel panic: Fatal local machine check", class: "memory_error", frame: null, tier: 1 },
  ]);
  assert.is(out[0]!.evidence.length, 4);
  const corrected = parseConsole("mce: [Hardware Error]: Machine check events logged");
  assert.equal(corrected.map(brief), [
    { title: "machine check events logged", class: "memory_error", frame: null, tier: 2 },
  ]);
});

test("memory failure: SIGBUS victims by name, recovery actions by outcome", () => {
  assert.equal(
    parseSample("memoryFailure").map((f) => [f.title, f.class]),
    [
      ["Memory failure: SIGBUS to java", "memory_error"],
      ["Memory failure: recovery action for dirty LRU page: Recovered", "memory_error"],
    ],
  );
});

test("userspace segfault: process and faulting object, no pid or addresses", () => {
  assert.equal(parseSample("segfault").map(brief), [
    { title: "segfault in nginx (libc.so.6)", class: "crash", frame: null, tier: 2 },
  ]);
  const noObject = parseConsole("myapp[77]: segfault at 8 ip 000055d0c0ffee00 sp 00007ffc00000000 error 6");
  assert.equal(
    noObject.map((f) => f.title),
    ["segfault in myapp"],
  );
});

test("NMI for unknown reason", () => {
  assert.equal(parseSample("unknownNmi").map(brief), [
    { title: "NMI received for unknown reason", class: "nmi", frame: null, tier: 2 },
  ]);
});

// --- kernel reports -----------------------------------------------------------------------------

test("hung task in the Debian 6.1 format: first frame past scheduler and waiting code", () => {
  assert.equal(parseSample("hungTask").map(brief), [
    { title: "INFO: task hung in blk_mq_get_tag", class: "hang", frame: "blk_mq_get_tag", tier: 0 },
  ]);
});

test("soft lockup: the frame just above the file-operation entry point", () => {
  const [f] = parseSample("softLockup");
  assert.equal(brief(f!), {
    title: "BUG: soft lockup in ext4_buffered_write_iter",
    class: "lockup",
    frame: "ext4_buffered_write_iter",
    tier: 0,
  });
});

test("NULL dereference oops followed by panic: the oops first, the panic as its consequence", () => {
  const out = parseSample("nullDerefPanic");
  assert.equal(out.map(brief), [
    {
      title: "BUG: unable to handle kernel NULL pointer dereference in virtio_gpu_dequeue_ctrl_func",
      class: "oops",
      frame: "virtio_gpu_dequeue_ctrl_func",
      tier: 0,
    },
    { title: "kernel panic: Fatal exception", class: "panic", frame: null, tier: 1 },
  ]);
  assert.is(out[0]!.corrupted, false);
  assert.is(out[1]!.corrupted, false);
  // Without its oops, `Fatal exception` means the report was lost.
  const alone = parseConsole("Kernel panic - not syncing: Fatal exception");
  assert.equal(
    [alone[0]!.title, alone[0]!.corrupted, alone[0]!.tier],
    ["kernel panic: Fatal exception", true, 0],
  );
});

test("WARNING and general protection fault titles", () => {
  assert.equal(
    parseSample("warning").map((f) => [f.title, f.class, f.line]),
    [["WARNING in ext4_set_page_dirty", "warning", 2]],
  );
  assert.equal(
    parseSample("generalProtectionFault").map((f) => [f.title, f.class]),
    [["general protection fault in tcp_v4_destroy_sock", "oops"]],
  );
});

/** Title of the first failure of a synthetic report (stamped like a real console). */
function firstTitle(lines: string[]): string | undefined {
  return parseConsole(stampConsole(lines.join("\n"), 10, "T7"))[0]?.title;
}

test("circular locking: acquired lock's `at:`, then the held lock's `at:`, then the chain", () => {
  const report = (acquire: string, held: string, chain: string[] = []) => [
    "WARNING: possible circular locking dependency detected",
    "syz-executor/7 is trying to acquire lock:",
    ` (event_mutex){+.+.}, at: [<000000009b3a8cd5>] ${acquire}+0x58/0xab0`,
    "",
    "but task is already holding lock:",
    ` (&ctx->mutex){+.+.}, at: [<00000000935cf968>]   ${held}+0x25b/0x890`,
    "",
    "the existing dependency chain (in reverse order) is:",
    "-> #1 (&ctx->mutex){+.+.}:",
    ...chain,
    "stack backtrace:",
    "Call Trace:",
    " dump_stack+0x194/0x257",
    " lock_acquire+0x1d5/0x580",
    " trace_caller+0x10/0x20",
  ];
  assert.is(firstTitle(report("foo_lock_user", "bar_init")), "possible deadlock in foo_lock_user");
  // A helper taking the lock (perf_trace_*, workqueue flushing): the lock already held names it.
  assert.is(
    firstTitle(report("perf_trace_init", "perf_event_init_task")),
    "possible deadlock in perf_event_init_task",
  );
  assert.is(firstTitle(report("flush_workqueue", "wg_set_device")), "possible deadlock in wg_set_device");
  // Both are helpers: the first kept frame of the dependency chain, not the call trace.
  assert.is(
    firstTitle(
      report("flush_workqueue", "process_one_work", ["  lock_acquire+0x1/0x2", "  chain_user+0x3/0x4"]),
    ),
    "possible deadlock in chain_user",
  );
});

test("irq-safe -> irq-unsafe lock order: the stack where the lock became irq-safe", () => {
  const lines = [
    "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
    "syz-executor/7 [HC0[0]:SC0[0]:HE0:SE1] is trying to acquire:",
    "ffff888026df22b8 (&new->fa_lock){.+.+}-{2:2}, at: acquirer_func+0x14b/0x460",
    "and this task is already holding:",
    "ffff888022a48498 (&ctx->completion_lock){-...}-{2:2}, at: holder_func+0x4d/0x3a0",
    "which would create a new lock dependency:",
    "but this new dependency connects a HARDIRQ-irq-safe lock:",
    "... which became HARDIRQ-irq-safe at:",
    "  lock_acquire+0x29d/0x740",
    "  _raw_spin_lock_irqsave+0x39/0x50",
    "  timer_callback_fn+0x6f/0x3d0",
    "  __hrtimer_run_queues+0x693/0xea0",
    "... which became HARDIRQ-irq-unsafe at:",
    "  lock_acquire+0x29d/0x740",
    "  unsafe_user+0x14b/0x460",
    "stack backtrace:",
    "Call Trace:",
    " dump_stack+0x1/0x2",
    " acquirer_func+0x14b/0x460",
  ];
  assert.is(firstTitle(lines), "possible deadlock in timer_callback_fn");
});

test("report-kind skips: spinlock debug skips lock takers, UBSAN its handlers, KMSAN crypto glue", () => {
  assert.is(
    firstTitle([
      "BUG: spinlock recursion on CPU#0, syz-executor/7",
      " lock: 0xffff88003ec1a2c0, .magic: dead4ead, .owner: syz-executor/7, .owner_cpu: 0",
      "Call Trace:",
      " dump_stack+0x2ee/0x3f5",
      " do_raw_spin_lock+0x3f4/0x5d0",
      " __task_rq_lock+0xf5/0x330",
      " wake_up_new_task+0x592/0x1000",
      " _do_fork+0x1a2/0x3b0",
    ]),
    "BUG: spinlock recursion in wake_up_new_task",
  );
  assert.is(
    firstTitle([
      "UBSAN: Undefined behaviour in net/ipv4/route.c:495:2",
      "signed integer overflow:",
      "Call Trace:",
      " dump_stack+0x45/0x6c",
      " ubsan_epilogue+0xd/0x40",
      " handle_overflow+0xbd/0xe0",
      " __ubsan_handle_add_overflow+0xe/0x10",
      " ip_idents_reserve+0x9a/0xd0",
    ]),
    "UBSAN: undefined-behaviour in ip_idents_reserve",
  );
  assert.is(
    firstTitle([
      "BUG: KMSAN: uninit-value in aes_encrypt+0x1239/0x1960",
      " aes_encrypt+0x1239/0x1960",
      " aesti_encrypt+0x7d/0xf0",
      " cipher_crypt_one+0x120/0x2e0",
      " crypto_cipher_encrypt_one+0x33/0x40",
      " drbg_seed+0xb1e/0xe20",
      " rng_setkey+0x52/0x70",
      " alg_setkey+0x265/0x3b0",
      "",
      "Uninit was created at:",
      " kmalloc+0x1/0x2",
    ]),
    "KMSAN: uninit-value in alg_setkey",
  );
});

test("stack guard page: the frame above the entry point the recursion came from, else corrupted", () => {
  const recursion = Array.from({ length: 300 }, (_, i) => ` recurse_${i % 3}+0x1/0x2`);
  const report = (tail: string[]) => [
    "BUG: stack guard page was hit at ffffc900190cfff8 (stack is ffffc900190d0000..ffffc900190d7fff)",
    "kernel stack overflow (double-fault): 0000 [#1] PREEMPT SMP KASAN",
    "RIP: 0010:netdev_next_lower_dev_rcu+0x8/0xb0",
    "Call Trace:",
    ...recursion,
    ...tail,
  ];
  assert.is(
    firstTitle(
      report([" rtnl_newlink+0x64/0xa0", " rtnetlink_rcv_msg+0x44e/0xb70", " netlink_rcv_skb+0x1/0x2"]),
    ),
    "BUG: stack guard page was hit in rtnl_newlink",
  );
  // Cut before any entry point: no frame identifies the recursion.
  assert.is(firstTitle(report([])), "BUG: stack guard page was hit in corrupted");
});

test("a should_fail frame cuts the report: the fault-injection stack is not the report's", () => {
  const f = parseConsole(
    stampConsole(
      [
        "WARNING: CPU: 0 PID: 7 at lib/debugobjects.c:485 debug_print_object+0x16a/0x210",
        "Call Trace:",
        " dump_stack+0x1b9/0x294",
        " should_fail.cold.4+0xa/0x1a",
        " should_failslab+0x9/0x14",
        " kmem_cache_alloc+0x1/0x2",
        " alloc_user+0x14d/0x780",
      ].join("\n"),
      10,
      "T7",
    ),
  )[0]!;
  assert.equal([f.title, f.corrupted], ["WARNING: ODEBUG bug in corrupted", true]);
});

test("suspicious RCU usage cut before its source line keeps the bare header", () => {
  const head = ["=============================", "WARNING: suspicious RCU usage", "4.15.0+ #222 Not tainted"];
  assert.is(
    firstTitle([
      ...head,
      "FAULT_INJECTION: forcing a failure.",
      "-----------------------------",
      "./include/linux/rcupdate.h:302 Illegal context switch in RCU read-side critical section!",
    ]),
    "WARNING: suspicious RCU usage",
  );
  assert.is(
    firstTitle([
      ...head,
      "-----------------------------",
      "net/ipv6/route.c:1550 suspicious rcu_dereference_protected() usage!",
      "Call Trace:",
      " dump_stack+0x1b9/0x294",
      " rcu_read_lock_held+0x1/0x2",
      " rt6_remove_exception_rt+0x1/0x2",
    ]),
    "WARNING: suspicious RCU usage in rt6_remove_exception_rt",
  );
});

test("kernel stack regs/frame pointer warnings with hashed pointers share one title", () => {
  assert.is(
    firstTitle([
      "WARNING: kernel stack regs at ffff8801c5a07e58 in syz:4493 has bad 'bp' value 0000000000000001",
    ]),
    "WARNING: kernel stack regs has bad 'bp' value",
  );
  assert.is(
    firstTitle([
      "WARNING: kernel stack regs at         (ptrval) in syz:4493 has bad 'bp' value         (ptrval)",
    ]),
    "WARNING: kernel stack regs has bad value",
  );
  assert.is(
    firstTitle([
      "WARNING: kernel stack frame pointer at         (ptrval) in syz:4492 has bad value         (ptrval)",
    ]),
    "WARNING: kernel stack regs has bad value",
  );
});

test("look-alike lines in ordinary console output are not failures", () => {
  const lines = [...SAMPLE_NOISE, ...SAMPLE_LOOKALIKES].join("\n");
  assert.equal(parseConsole(stampConsole(lines, 5, "T1")), []);
  assert.equal(parseConsole(lines), []);
  assert.equal(parseConsole(""), []);
});

// --- ordering --------------------------------------------------------------------------------------

test("ranking: kernel reports in console order, then caused panics, then operational signals", () => {
  const log = [
    stampConsole(SAMPLE_REPORTS.ioErrors, 10, "T9"),
    stampConsole(SAMPLE_REPORTS.warning, 20, "T10"),
    stampConsole(SAMPLE_REPORTS.nullDerefPanic, 30, "T11"),
    stampConsole(SAMPLE_REPORTS.segfault, 40, "T12"),
  ].join("\n");
  assert.equal(
    parseConsole(log).map((f) => f.title),
    [
      "WARNING in ext4_set_page_dirty",
      "BUG: unable to handle kernel NULL pointer dereference in virtio_gpu_dequeue_ctrl_func",
      "kernel panic: Fatal exception",
      "I/O error on vda",
      "segfault in nginx (libc.so.6)",
    ],
  );
});

test("interleaved reports from two tasks are separated by printk caller context", () => {
  const a = stampConsole(SAMPLE_REPORTS.hungTask, 50, "T100").split("\n");
  const b = stampConsole(SAMPLE_REPORTS.warning, 50, "T200").split("\n");
  const mixed: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== undefined) mixed.push(a[i]!);
    if (b[i] !== undefined) mixed.push(b[i]!);
  }
  assert.equal(
    parseConsole(mixed.join("\n")).map((f) => f.title),
    ["INFO: task hung in blk_mq_get_tag", "WARNING in ext4_set_page_dirty"],
  );
});

// --- streaming --------------------------------------------------------------------------------------

function compositeLog(): string {
  const rnd = rng(7);
  const parts: string[] = [];
  let t = 1;
  const names = Object.keys(SAMPLE_REPORTS) as SampleName[];
  for (const name of names) {
    for (let i = 0; i < 40; i++) {
      t += 0.5;
      const pool = i % 10 === 0 ? SAMPLE_LOOKALIKES : SAMPLE_NOISE;
      parts.push(stampConsole(pool[Math.floor(rnd() * pool.length)]!, t, `T${i + 3}`));
    }
    t += 1;
    parts.push(stampConsole(SAMPLE_REPORTS[name], t, `T${1000 + parts.length}`));
  }
  // Non-ASCII process names exercise UTF-8 sequences split across Buffer chunks.
  parts.push("[  999.000000][ T777] Out of memory: Killed process 777 (naïve-ünïcode) total-vm:1kB");
  return `${parts.join("\r\n")}\n`;
}

test("streaming: random string and Buffer chunkings give exactly the whole-text result", () => {
  const log = compositeLog();
  const expected = JSON.stringify(parseConsole(log));
  assert.ok(parseConsole(log).length >= 20);
  const bytes = Buffer.from(log);
  const rnd = rng(42);
  for (let round = 0; round < 60; round++) {
    const asBuffer = round % 2 === 1;
    const src = asBuffer ? bytes : log;
    const scanner = new ConsoleScanner();
    const got: ParsedFailure[] = [];
    for (let pos = 0; pos < src.length; ) {
      const len = 1 + Math.floor(rnd() * (round < 10 ? 7 : 3000));
      got.push(...scanner.push(src.slice(pos, pos + len)));
      pos += len;
    }
    got.push(...scanner.end());
    assert.is(
      JSON.stringify(rankFailures(got)),
      expected,
      `round ${round} (${asBuffer ? "Buffer" : "string"})`,
    );
  }
});

test("streaming: a live console gets the oops as soon as its end marker arrives", () => {
  const lines = stampConsole(SAMPLE_REPORTS.nullDerefPanic, 7, "T5").split("\n");
  const endTrace = lines.findIndex((l) => l.includes("---[ end trace"));
  const scanner = new ConsoleScanner();
  assert.equal(scanner.push(`${lines.slice(0, endTrace).join("\n")}\n`), []);
  const now = scanner.push(`${lines[endTrace]}\n`);
  assert.equal(
    now.map((f) => f.kind),
    ["null-deref"],
  );
  const rest = [...scanner.push(`${lines.slice(endTrace + 1).join("\n")}\n`), ...scanner.end()];
  assert.equal(
    rest.map((f) => f.kind),
    ["panic"],
  );
  assert.throws(() => scanner.push("more"));
});

test("streaming: a report completes once its task falls silent while others keep printing", () => {
  const scanner = new ConsoleScanner();
  assert.equal(scanner.push(`${stampConsole(SAMPLE_REPORTS.hungTask, 3, "T12")}\n`), []);
  const others = Array.from(
    { length: 250 },
    (_, i) => `[   9.${String(i).padStart(6, "0")}][  T99] ${SAMPLE_NOISE[i % 5]}`,
  );
  const done = scanner.push(`${others.join("\n")}\n`);
  assert.equal(
    done.map((f) => f.title),
    ["INFO: task hung in blk_mq_get_tag"],
  );
  assert.equal(scanner.end(), []);
});

// --- robustness ------------------------------------------------------------------------------------

function timed(label: string, input: string | Uint8Array, maxMs: number): ParsedFailure[] {
  const t0 = performance.now();
  const out = parseConsole(input);
  const ms = performance.now() - t0;
  assert.ok(ms < maxMs, `${label}: ${ms.toFixed(0)} ms (limit ${maxMs} ms)`);
  return out;
}

test("adversarial: a 1 MB line, 1 MB without newlines, random binary and header floods finish quickly", () => {
  const mb = 1024 * 1024;
  const rnd = rng(3);
  // Trigger words all over one huge line: only the first MAX_LINE chars are looked at.
  const words = "BUG: WARNING: at a.c:1 f+0x1/0x2 general protection fault: Kernel panic - not syncing: ";
  timed("1 MB line of trigger words", `${words.repeat(Math.ceil(mb / words.length))}\nend\n`, 2000);
  timed("1 MB without newline", "x".repeat(mb), 2000);
  timed("regex bait", `WARNING: ${"a.".repeat(mb / 2)}\nINFO: task ${"a ".repeat(mb / 2)}\n`, 2000);
  const binary = new Uint8Array(mb);
  for (let i = 0; i < binary.length; i++) binary[i] = Math.floor(rnd() * 256);
  timed("1 MB random bytes", binary, 2000);
  const flood = timed("header flood", "BUG: unable to handle kernel\n".repeat(40_000), 5000);
  assert.ok(flood.length > 0 && flood.length <= MAX_RESULTS);
  const noise = Array.from({ length: 60_000 }, (_, i) => {
    const pool = i % 50 === 0 ? SAMPLE_LOOKALIKES : SAMPLE_NOISE;
    return `[${(i / 100).toFixed(6)}] ${pool[i % pool.length]}`;
  });
  assert.equal(timed("5 MB of noise", noise.join("\n"), 3000), []);
});

test("evidence is bounded in lines and characters; line numbers are 1-based", () => {
  const body = [
    "BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "RIP: 0010:my_func+0x1/0x2",
    "Call Trace:",
    ...Array.from({ length: 5000 }, (_, i) => ` frame_${i}+0x1/0x2 ${"y".repeat(2000)}`),
  ];
  const [f] = parseConsole(`first line\nsecond line\n${body.join("\n")}`);
  assert.is(f!.line, 3);
  assert.is(f!.title, "BUG: unable to handle kernel NULL pointer dereference in my_func");
  assert.ok(f!.evidence.length <= MAX_EVIDENCE);
  assert.ok(f!.evidence.every((l) => l.length <= MAX_EVIDENCE_CHARS + 1));
});

test.run();
