// Precursor extraction on constructed consoles: hung-task warnings before a panic, I/O errors before
// a read-only remount, noise present in the control (and in the shadow's first seconds) removed;
// then through a ShadowObserver's finish() with the control's console file, and onto the wire.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consoleLinePattern, type ParsedFailure, parseConsole } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { failureToProto } from "./outcome.js";
import {
  type ConsoleView,
  consolePatterns,
  extractPrecursors,
  precursorSpecificity,
  runPatterns,
  startupPatterns,
} from "./precursors.js";
import { ShadowObserver } from "./shadow-observer.js";

const HUNG_THEN_PANIC = `[   95.000000] systemd[1]: Started Daily apt upgrade and clean activities.
[  200.000000] INFO: task svm-writer:123 blocked for more than 120 seconds.
[  200.000100]       Not tainted 6.1.0-56-amd64 #1 Debian 6.1.192-2
[  200.000200] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
[  200.000300] task:svm-writer      state:D stack:0     pid:123   ppid:1      flags:0x00000000
[  200.000400] Call Trace:
[  200.000500]  <TASK>
[  200.000600]  __schedule+0x34d/0x9e0
[  200.000700]  schedule+0x5a/0xd0
[  200.000800]  io_schedule+0x42/0x70
[  200.000900]  folio_wait_bit_common+0x10f/0x3e0
[  200.001000]  ext4_writepages+0x2d1/0xe70
[  200.001100]  do_writepages+0xd0/0x1d0
[  200.001200]  </TASK>
[  215.000000] clocksource: timekeeping watchdog on CPU0: Marking clocksource 'tsc' as unstable because the skew is too large:
[  230.000000] Kernel panic - not syncing: hung_task: blocked tasks
[  230.000100] CPU: 0 PID: 35 Comm: khungtaskd Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[  230.000200] Call Trace:
[  230.000300]  <TASK>
[  230.000400]  dump_stack_lvl+0x44/0x5c
[  230.000500]  panic+0x118/0x2f4
[  230.000600]  watchdog+0x2a5/0x2b0
[  230.000700]  </TASK>
`;

const IO_THEN_READONLY = `[   40.000000] virtio_net virtio1 enp0s2: renamed from eth0
[   50.000000] blk_update_request: I/O error, dev vda, sector 123456 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0
[   50.000100] Buffer I/O error on dev vda1, logical block 2345, lost async page write
[   50.000200] blk_update_request: I/O error, dev vda, sector 987654 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0
[   50.000300] EXT4-fs warning (device vda1): ext4_end_bio:343: I/O error 10 writing to inode 1234 starting block 5678)
[   50.100000] EXT4-fs error (device vda1): ext4_journal_check_start:83: comm svm-writer: Detected aborted journal
[   50.100100] EXT4-fs (vda1): Remounting filesystem read-only
`;

/** Every line arrived 10 s + 10 ms per line after the run start (no start-up lines). */
function view(text: string, offset = (n: number) => 10_000 + n * 10): ConsoleView {
  return { lines: text.split("\n"), lineOffsetMs: offset };
}

function target(f: ParsedFailure) {
  return { line: f.line, offsetMs: 0, evidence: f.evidence };
}

function byTitle(failures: ParsedFailure[], re: RegExp): ParsedFailure {
  const f = failures.find((x) => re.test(x.title));
  assert.ok(f, `no failure matching ${re} in ${failures.map((x) => x.title).join(" | ")}`);
  return f!;
}

test("line patterns: the fingerprint normalisation, no prefix, noise lines are no pattern", () => {
  assert.equal(
    consoleLinePattern("[  200.000000] INFO: task svm-writer:123 blocked for more than 120 seconds."),
    {
      pattern: "INFO: task svm-writer:NUM blocked for more than NUM seconds.",
      kind: "text",
    },
  );
  // pids, addresses, CPU ids, decimals, units and clock times vary; the pattern does not
  const a = consoleLinePattern(
    "<4>[ 1.5][ T77] hrtimer: interrupt took 3466 ns on CPU#3 at 0xffffffff81000000, 4.25s",
  );
  const b = consoleLinePattern("[ 9.1] hrtimer: interrupt took 981 ns on CPU 0 at 0xffffffff82000000, 0.5s");
  assert.equal(a, b);
  assert.is(a?.pattern, "hrtimer: interrupt took NUM ns on CPU#N at ADDR, NUM");
  assert.equal(
    consoleLinePattern("[ 1.0] 12:01:33 up 4 days, load 0.5"),
    consoleLinePattern("[ 2.0] 23:59:01 up 7 days, load 1.25"),
  );
  for (const noise of [
    "",
    "[  200.000400] Call Trace:",
    "[  200.000500]  <TASK>",
    "[  200.000600]  __schedule+0x34d/0x9e0",
    "[  200.000600]  ? schedule+0x5a/0xd0",
    "[ 230.1] RIP: 0010:native_safe_halt+0xb/0x10",
    "[ 230.1] RAX: 0000000000000000 RBX: ffff888003c5a000 RCX: 0000000000000000",
    "[ 230.1] Code: 48 89 e5 41 57 <0f> 0b",
    "\u0000\u0001\u00ff 1234 5678",
  ]) {
    assert.is(consoleLinePattern(noise), null, JSON.stringify(noise));
  }
  assert.equal(consoleLinePattern("[ 1.0]  ext4_writepages+0x2d1/0xe70"), {
    pattern: "ext4_writepages+ADDR/ADDR",
    kind: "frame",
  });
  assert.ok(
    precursorSpecificity("ext4_writepages+ADDR/ADDR", "frame") <
      precursorSpecificity("INFO: task svm-writer:NUM blocked for more than NUM seconds.", "text"),
  );
});

test("hung-task warning, then a panic: the warning is the panic's precursor", () => {
  const failures = parseConsole(HUNG_THEN_PANIC);
  const panic = byTitle(failures, /panic/);
  const hung = byTitle(failures, /task hung/);
  const v = view(HUNG_THEN_PANIC);
  const pre = extractPrecursors(v, target(panic), new Set());
  assert.ok(pre.includes("INFO: task svm-writer:NUM blocked for more than NUM seconds."), pre.join("\n"));
  assert.ok(pre.length <= 5);
  // The most specific first; generic frames and trace markers never; nothing from the panic itself.
  assert.not.ok(pre.some((p) => p.startsWith("__schedule") || p === "Call Trace:" || p.includes("<TASK>")));
  assert.not.ok(pre.some((p) => p.includes("Kernel panic")));
  // 95 s is more than 60 s before the panic (printk time): outside the window.
  assert.not.ok(
    pre.some((p) => p.includes("apt upgrade")),
    pre.join("\n"),
  );
  // A narrower window by lines: only the clocksource line and the frames just before the panic.
  const near = extractPrecursors(v, target(panic), new Set(), { windowLines: 3 });
  assert.equal(near, [
    "clocksource: timekeeping watchdog on CPU#N: Marking clocksource 'tsc' as unstable because the skew is too large:",
    "do_writepages+ADDR/ADDR",
  ]);
  // The hung task's own report lines are not its precursors; what came before it is too old.
  assert.equal(extractPrecursors(v, target(hung), new Set()), []);
  // max
  assert.is(extractPrecursors(v, target(panic), new Set(), { max: 2 }).length, 2);
});

test("I/O errors, then the read-only remount: the I/O errors are its precursors", () => {
  const failures = parseConsole(IO_THEN_READONLY);
  const ro = byTitle(failures, /read-only/);
  const io = byTitle(failures, /I\/O error on vda/);
  const pre = extractPrecursors(view(IO_THEN_READONLY), target(ro), new Set());
  assert.ok(
    pre.includes(
      "blk_update_request: I/O error, dev vda, sector NUM op ADDR:(WRITE) flags ADDR phys_seg NUM prio class NUM",
    ),
    pre.join("\n"),
  );
  assert.ok(
    pre.some((p) => p.startsWith("Buffer I/O error on dev vda1")),
    pre.join("\n"),
  );
  assert.ok(pre.some((p) => p.startsWith("EXT4-fs error (device vda1): ext4_journal_check_start:NUM")));
  // deduplicated: the two blk_update_request lines are one pattern
  assert.is(new Set(pre).size, pre.length);
  // The I/O error's own burst is not its precursor; the rename before it is.
  assert.equal(extractPrecursors(view(IO_THEN_READONLY), target(io), new Set()), [
    "virtio_net virtio1 enp0s2: renamed from eth0",
  ]);
});

test("noise: lines also in the control's console or in the shadow's first seconds are dropped", () => {
  const failures = parseConsole(HUNG_THEN_PANIC);
  const panic = byTitle(failures, /panic/);
  const control = `[   3.0] clocksource: timekeeping watchdog on CPU1: Marking clocksource 'tsc' as unstable because the skew is too large:\n[ 4.0] systemd[1]: Started Daily apt upgrade and clean activities.\n`;
  const noise = consolePatterns(control.split("\n"));
  const v = view(HUNG_THEN_PANIC);
  const with_ = extractPrecursors(v, target(panic), new Set(), { windowLines: 3 });
  assert.is(with_.length, 2);
  assert.equal(extractPrecursors(v, target(panic), noise, { windowLines: 3 }), ["do_writepages+ADDR/ADDR"]);
  const all = extractPrecursors(v, target(panic), noise);
  assert.not.ok(
    all.some((p) => p.startsWith("clocksource")),
    all.join("\n"),
  );
  assert.ok(all.some((p) => p.startsWith("INFO: task svm-writer")));

  // Start-up: lines 1-3 arrived within the first 2 s; their patterns are noise wherever they recur,
  // and they are never precursors themselves.
  const text = `[ 1.0] rtc_cmos 00:00: setting system clock to 2024-05-01T10:00:00 UTC (1714557600)\n[ 1.1] random: crng init done\n[ 1.2] virtio_balloon virtio3: free page reporting enabled\n[ 20.0] random: crng init done\n[ 21.0] svm-writer[77]: write stalled for 5000 ms\n[ 22.0] Kernel panic - not syncing: Fatal exception\n`;
  const sv = view(text, (n) => (n <= 3 ? 500 : 30_000 + n));
  const startup = startupPatterns(sv, 2000);
  assert.ok(startup.has("random: crng init done"));
  const p = parseConsole(text).find((f) => f.class === "panic")!;
  assert.equal(extractPrecursors(sv, target(p), startup), ["svm-writer[NUM]: write stalled for NUM ms"]);

  // What the run showed after start-up (for counting precursors seen without their failure): not
  // the start-up lines, nor their patterns when they recur later.
  assert.equal(
    [...runPatterns(sv, 2000)],
    ["svm-writer[NUM]: write stalled for NUM ms", "Kernel panic - not syncing: Fatal exception"],
  );
  assert.is(runPatterns(sv, 2000, 1).size, 1, "bounded");
});

test("failures without a console line: the lines that arrived before their time", () => {
  const text =
    "[ 10.0] virtio_balloon virtio3: balloon inflating to 40 MiB\n[ 11.0] svm-state[12]: allocation failed, retrying\n[ 12.0] later line\n";
  const v = view(text, (n) => n * 1000);
  const pre = extractPrecursors(v, { offsetMs: 2500, evidence: ["GUEST_PANICKED {...}"] }, new Set(), {
    startupNoiseMs: 0,
  });
  assert.equal(pre, [
    "virtio_balloon virtio3: balloon inflating to NUM MiB",
    "svm-state[NUM]: allocation failed, retrying",
  ]);
});

test("ShadowObserver.finish(): precursors on the failures, control noise from its console file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-precursors-"));
  try {
    const consoleLog = join(dir, "console.log");
    const controlLog = join(dir, "control.log");
    writeFileSync(consoleLog, IO_THEN_READONLY);
    writeFileSync(controlLog, "[ 40.5] virtio_net virtio1 enp0s2: renamed from eth0\n");
    const obs = new ShadowObserver({
      consoleLog,
      startedAtMs: Date.now() - 60_000,
      consolePollMs: 50,
    }).start();
    const result = await obs.finish({ noiseConsoleLog: controlLog });
    const ro = result.failures.find((f) => /read-only/.test(f.title))!;
    assert.ok(
      ro.precursors?.some((p) => p.startsWith("blk_update_request: I/O error")),
      JSON.stringify(ro),
    );
    const io = result.failures.find((f) => /I\/O error on vda/.test(f.title))!;
    assert.equal(io.precursors, [], "the rename is in the control's console");
    const wire = failureToProto(ro, "run-1");
    assert.equal(wire.precursors, ro.precursors);
    // off
    const off = new ShadowObserver({
      consoleLog,
      startedAtMs: Date.now() - 60_000,
      precursors: false,
    }).start();
    const offResult = await off.finish();
    assert.is(offResult.failures[0]!.precursors, undefined);
    assert.is(offResult.consolePatterns, undefined);
    // Every run, failing or not, says which patterns its console showed after start-up.
    assert.ok(result.consolePatterns?.some((p) => p.startsWith("blk_update_request: I/O error")));
    const quietLog = join(dir, "quiet.log");
    writeFileSync(quietLog, "[ 30.0] svm-writer[12]: write stalled for 5000 ms\n[ 31.0] all good\n");
    const quiet = await new ShadowObserver({
      consoleLog: quietLog,
      startedAtMs: Date.now() - 60_000,
    })
      .start()
      .finish();
    assert.is(quiet.failures.length, 0);
    assert.equal(quiet.consolePatterns, ["svm-writer[NUM]: write stalled for NUM ms", "all good"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
