// Fingerprints: the same failure seen at other addresses, pids, timestamps, CPUs and task names
// has the same fingerprint; different failures have different ones.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { parseConsole } from "./console-parser.js";
import { SAMPLE_REPORTS, type SampleName, stampConsole } from "./console-samples.js";
import { failureFingerprint as fingerprint, normalizeFailureTitle as normalizeTitle } from "./fingerprint.js";

/** Rewrites everything that varies between two occurrences of one failure. */
function mutate(body: string, seed: number): string {
  let n = seed;
  const next = () => (n = (n * 1103515245 + 12345) >>> 0);
  return (
    body
      // addresses, register values and offsets inside functions
      .replace(
        /\b(0x)?[0-9a-f]{8,16}\b/g,
        (m, p: string | undefined) =>
          `${p ?? ""}${(next() % 0xffffffff).toString(16).padStart(m.length - (p?.length ?? 0), "0")}`,
      )
      .replace(
        /\+0x[0-9a-f]+\/0x[0-9a-f]+/g,
        () => `+0x${(next() % 4096).toString(16)}/0x${(4096 + (next() % 4096)).toString(16)}`,
      )
      // pids, CPUs, durations, sectors, blocks
      .replace(
        /\b(PID: |pid:|CPU#|CPU |CPU: |cpu |for |sector |block |process |Killed process |\[)(\d+)/g,
        (_m, k: string) => `${k}${next() % 30000}`,
      )
      // task names with per-CPU worker numbers
      .replace(/kworker\/\d+:\d+/g, () => `kworker/${next() % 8}:${next() % 16}`)
  );
}

const NAMES = Object.keys(SAMPLE_REPORTS) as SampleName[];

function prints(name: SampleName, body: string = SAMPLE_REPORTS[name], start = 100, ctx = "T42") {
  return parseConsole(stampConsole(body, start, ctx)).map((f) => `${f.title}|${f.fingerprint}`);
}

test("same failure at other addresses, pids, timestamps, CPUs and contexts: same titles and fingerprints", () => {
  for (const name of NAMES) {
    const base = prints(name);
    assert.ok(base.length > 0, name);
    for (let seed = 1; seed <= 5; seed++) {
      const mutated = mutate(SAMPLE_REPORTS[name], seed);
      assert.equal(prints(name, mutated, 1000 * seed + 0.5, `T${seed * 977}`), base, `${name} seed ${seed}`);
    }
  }
});

test("the mutation really changes the volatile parts", () => {
  const a = SAMPLE_REPORTS.nullDerefPanic;
  const b = mutate(a, 3);
  assert.is.not(a, b);
  assert.not.ok(b.includes("virtio_gpu_dequeue_ctrl_func+0x71/0x250"));
  assert.not.ok(b.includes("PID: 987 "));
});

test("different failures get different fingerprints", () => {
  const all = NAMES.flatMap((name) => parseConsole(stampConsole(SAMPLE_REPORTS[name], 1, "T1")));
  const byPrint = new Map<string, string>();
  for (const f of all) {
    const seen = byPrint.get(f.fingerprint);
    assert.ok(seen === undefined || seen === f.title, `${seen} and ${f.title} share a fingerprint`);
    byPrint.set(f.fingerprint, f.title);
  }
  assert.ok(byPrint.size >= 20);
});

test("OOM kills: the victim's name matters, its pid does not", () => {
  const kill = (pid: number, comm: string) =>
    parseConsole(`Out of memory: Killed process ${pid} (${comm}) total-vm:${pid * 7}kB, anon-rss:1kB`)[0]!;
  assert.is(kill(100, "postgres").fingerprint, kill(31337, "postgres").fingerprint);
  assert.is.not(kill(100, "postgres").fingerprint, kill(100, "java").fingerprint);
});

test("I/O errors: the disk matters, sectors and partitions do not", () => {
  const io = (dev: string, sector: number) =>
    parseConsole(`I/O error, dev ${dev}, sector ${sector} op 0x1:(WRITE)`)[0]!;
  assert.is(io("vda", 8).fingerprint, io("vda", 99_999).fingerprint);
  assert.is(
    io("vda", 8).fingerprint,
    parseConsole("Buffer I/O error on dev vda3, logical block 7")[0]!.fingerprint,
  );
  assert.is.not(io("vda", 8).fingerprint, io("vdb", 8).fingerprint);
});

test("class is part of the fingerprint; normalizeTitle masks addresses, numbers and CPUs", () => {
  assert.is.not(fingerprint("same title", "hang"), fingerprint("same title", "oops"));
  assert.is(
    fingerprint("kernel panic: bad at 0xffff8880 CPU#3", "panic"),
    fingerprint("kernel panic: bad at 0x1 CPU#0", "panic"),
  );
  assert.is(normalizeTitle("panic at 0xdeadbeef on cpu 3 after 42  s"), "panic at ADDR on CPU#N after NUM s");
  // Digits inside identifiers and file names stay.
  assert.is(normalizeTitle("WARNING in ext4_fill_super"), "WARNING in ext4_fill_super");
  assert.is(normalizeTitle("segfault in python3 (libc-2.31.so)"), "segfault in python3 (libc-2.31.so)");
  assert.match(fingerprint("x", "bug"), /^[0-9a-f]{16}$/);
});

test.run();
