import { test } from "uvu";
import * as assert from "uvu/assert";
import { Backoff } from "./backoff.js";
import { OperatingPointTracker } from "./operating-point.js";

const MB = 1024 * 1024;

test("averages as fractions of capacity, slopes per hour, a sliding window", () => {
  const t = new OperatingPointTracker({ windowMs: 600_000, diskIoCapacityBytesPerS: 100 * MB });
  // 2 vCPUs; CPU rises from 0.5 to ~1.2 cores over 10 minutes; memory flat at half; 10 MB/s disk.
  for (let i = 0; i <= 60; i++) {
    t.observe("vm", i * 10_000, {
      cpuCores: 0.5 + (0.7 * i) / 60,
      vcpus: 2,
      memUsed: 128 * MB,
      memAvailable: 256 * MB,
      diskBytes: i * 10_000 * 10 * 1024 * 1.024,
    });
  }
  const op = t.get("vm")!;
  assert.ok(Math.abs(op.average_cpu_usage - 0.425) < 0.01, String(op.average_cpu_usage));
  assert.ok(Math.abs(op.average_memory_usage - 0.5) < 1e-9);
  assert.ok(Math.abs(op.average_disk_io - 0.1) < 0.01, String(op.average_disk_io));
  // 0.35 of capacity more over 600 s = 2.1 per hour
  assert.ok(Math.abs(op.cpu_slope_per_hour - 2.1) < 0.01, String(op.cpu_slope_per_hour));
  assert.ok(Math.abs(op.memory_slope_per_hour) < 1e-9);
  assert.is(op.samples, 61);
  assert.is(op.span_s, 600);
  // Beyond the window, old points fall out.
  t.observe("vm", 1_300_000, {
    cpuCores: 2,
    vcpus: 2,
    memUsed: 256 * MB,
    memAvailable: 256 * MB,
    diskBytes: 0,
  });
  assert.is(t.get("vm")?.samples, 1);
  assert.is(t.get("vm")?.average_cpu_usage, 1);
  assert.equal(Object.keys(OperatingPointTracker.extra(t.get("vm")!)).sort(), [
    "op_avg_cpu",
    "op_avg_disk_io",
    "op_avg_memory",
    "op_cpu_slope_per_h",
    "op_disk_io_slope_per_h",
    "op_memory_slope_per_h",
  ]);
  t.forget("vm");
  assert.is(t.get("vm"), undefined);
});

test("backoff grows with jitter, honours retry_after and resets", () => {
  const b = new Backoff({ minMs: 100, maxMs: 1000, random: () => 1 });
  assert.equal(
    [b.next(), b.next(), b.next(), b.next(), b.next(), b.next()],
    [100, 200, 400, 800, 1000, 1000],
  );
  b.reset();
  assert.is(b.next(), 100);
  assert.is(b.next(700), 700);
  const low = new Backoff({ minMs: 100, maxMs: 1000, random: () => 0 });
  assert.is(low.next(), 50, "equal jitter: at least half");
});

test.run();
