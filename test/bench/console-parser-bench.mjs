#!/usr/bin/env node
// Console parser throughput benchmark.
//
// Builds a synthetic serial console of --mb megabytes (default 100): boot/service noise lines
// with timestamps and caller contexts, with a failure report from console-samples.ts every
// --every lines (default 20000), then parses it twice: as one string with parseConsole(), and
// as 64 KiB Buffer chunks through ConsoleScanner (a live console). Prints MB/s, wall clock and
// CPU time (the machine is shared, so wall clock depends on what else runs).
// Plain .mjs on purpose: test/bench is not compiled by tsc, so it imports the built shared/dist
// (run `npx tsc -b shared` first).
//
// Usage: node test/bench/console-parser-bench.mjs [--mb 100] [--every 20000] [--seed 1]
import {
  SAMPLE_LOOKALIKES,
  SAMPLE_NOISE,
  SAMPLE_REPORTS,
} from "../../shared/dist/failures/console-samples.js";
import { ConsoleScanner, parseConsole } from "../../shared/dist/failures/index.js";

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i], process.argv[i + 1]);
const targetMb = Number(args.get("--mb") ?? 100);
const every = Number(args.get("--every") ?? 20_000);
let seed = Number(args.get("--seed") ?? 1);

/** Deterministic PRNG (mulberry32) so runs are comparable. */
function rand() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

// Noise: ordinary boot/service lines, and one in 500 a look-alike that must not be reported
// (`WARNING: The mand mount option...`, userspace traps, `INFO: lockdep is turned off`).
// Reports: the parser's test samples (hung task, soft lockup, oops + panic, WARNING, GPF, OOM,
// I/O, EXT4, XFS, machine check, memory failure, segfault, NMI).
const NOISE = SAMPLE_NOISE;
const REPORTS = Object.values(SAMPLE_REPORTS);

function build() {
  const parts = [];
  let size = 0;
  let t = 5;
  let n = 0;
  const target = targetMb * 1024 * 1024;
  while (size < target) {
    t += rand() * 0.01;
    const ts = `[${t.toFixed(6).padStart(12)}][${`T${1 + Math.floor(rand() * 4000)}`.padStart(6)}] `;
    let chunk;
    if (++n % every === 0) {
      const ctx = `[${t.toFixed(6).padStart(12)}][${`T${1 + Math.floor(rand() * 4000)}`.padStart(6)}] `;
      chunk = `${pick(REPORTS)
        .split("\n")
        .map((l) => ctx + l)
        .join("\n")}\n`;
    } else chunk = `${ts}${pick(n % 500 === 0 ? SAMPLE_LOOKALIKES : NOISE)}\n`;
    parts.push(chunk);
    size += chunk.length;
  }
  return parts.join("");
}

const text = build();
const mb = Buffer.byteLength(text) / (1024 * 1024);
const buf = Buffer.from(text);
console.log(
  `console: ${mb.toFixed(1)} MiB, ${text.split("\n").length - 1} lines, report every ${every} lines`,
);

/** Runs fn once; returns wall-clock and CPU-time (user+system) throughput in MB/s. */
function measure(fn) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const out = fn();
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  return {
    out,
    wall,
    line: `${(mb / wall).toFixed(0)} MB/s wall (${wall.toFixed(2)} s), ${(mb / cpuS).toFixed(0)} MB/s CPU time`,
  };
}

const whole = measure(() => parseConsole(text));
console.log(`parseConsole(string): ${whole.line}, ${whole.out.length} failures`);

const streamed = measure(() => {
  const scanner = new ConsoleScanner();
  let n = 0;
  for (let off = 0; off < buf.length; off += 65536) n += scanner.push(buf.subarray(off, off + 65536)).length;
  return n + scanner.end().length;
});
console.log(`ConsoleScanner(64 KiB Buffers): ${streamed.line}, ${streamed.out} failures`);
console.log(`first failure: ${whole.out[0]?.title ?? "none"}`);
console.log(
  `load average: ${(await import("node:os"))
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
