// The production operating point of each VM: averages over a sliding window (what the explorer's
// baseline generator reads as ProductionVmData, fractions of capacity) and their trends (least-
// squares slopes, per hour), updated from every telemetry sample.
//   average_cpu_usage     cores in use / vCPUs
//   average_memory_usage  memory used / memory available to the guest
//   average_disk_io       disk bytes per second / the configured disk capacity (bytes per second)
import type { ProductionVmData } from "../explorer/baseline.js";

export interface OperatingPoint extends ProductionVmData {
  cpu_slope_per_hour: number;
  memory_slope_per_hour: number;
  disk_io_slope_per_hour: number;
  /** Points in the window and the time they span. */
  samples: number;
  span_s: number;
}

interface Point {
  t: number;
  cpu: number;
  mem: number;
  io: number | undefined;
}

export interface OperatingPointOptions {
  windowMs: number;
  diskIoCapacityBytesPerS: number;
}

const clamp01 = (v: number) => (Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0);

function mean(values: number[]): number {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0;
}

/** Least-squares slope of v over t (ms), in units per hour; 0 with fewer than 2 points. */
function slopePerHour(ts: number[], vs: number[]): number {
  const n = ts.length;
  if (n < 2) return 0;
  const tm = mean(ts);
  const vm = mean(vs);
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (ts[i]! - tm) * (vs[i]! - vm);
    den += (ts[i]! - tm) ** 2;
  }
  return den > 0 ? (num / den) * 3_600_000 : 0;
}

export class OperatingPointTracker {
  private readonly points = new Map<string, Point[]>();
  private readonly lastDisk = new Map<string, { t: number; bytes: number }>();

  constructor(private readonly options: OperatingPointOptions) {}

  /** Adds one VM sample (cores used, vCPUs, memory used and available, cumulative disk bytes). */
  observe(
    uuid: string,
    t: number,
    v: { cpuCores: number; vcpus: number; memUsed: number; memAvailable: number; diskBytes: number },
  ): void {
    const last = this.lastDisk.get(uuid);
    let io: number | undefined;
    if (last && t > last.t && v.diskBytes >= last.bytes) {
      io = clamp01((v.diskBytes - last.bytes) / ((t - last.t) / 1000) / this.options.diskIoCapacityBytesPerS);
    }
    this.lastDisk.set(uuid, { t, bytes: v.diskBytes });
    let list = this.points.get(uuid);
    if (!list) {
      list = [];
      this.points.set(uuid, list);
    }
    list.push({
      t,
      cpu: clamp01(v.vcpus > 0 ? v.cpuCores / v.vcpus : 0),
      mem: clamp01(v.memAvailable > 0 ? v.memUsed / v.memAvailable : 0),
      io,
    });
    const horizon = t - this.options.windowMs;
    while (list.length > 0 && list[0]!.t < horizon) list.shift();
  }

  get(uuid: string): OperatingPoint | undefined {
    const list = this.points.get(uuid);
    if (!list?.length) return undefined;
    const ts = list.map((p) => p.t);
    const withIo = list.filter((p) => p.io !== undefined);
    return {
      average_cpu_usage: mean(list.map((p) => p.cpu)),
      average_memory_usage: mean(list.map((p) => p.mem)),
      average_disk_io: mean(withIo.map((p) => p.io!)),
      cpu_slope_per_hour: slopePerHour(
        ts,
        list.map((p) => p.cpu),
      ),
      memory_slope_per_hour: slopePerHour(
        ts,
        list.map((p) => p.mem),
      ),
      disk_io_slope_per_hour: slopePerHour(
        withIo.map((p) => p.t),
        withIo.map((p) => p.io!),
      ),
      samples: list.length,
      span_s: (list.at(-1)!.t - list[0]!.t) / 1000,
    };
  }

  forget(uuid: string): void {
    this.points.delete(uuid);
    this.lastDisk.delete(uuid);
  }

  /** The operating point as Sample.extra entries (sent with every VM sample). */
  static extra(op: OperatingPoint): Record<string, number> {
    return {
      op_avg_cpu: op.average_cpu_usage,
      op_avg_memory: op.average_memory_usage,
      op_avg_disk_io: op.average_disk_io,
      op_cpu_slope_per_h: op.cpu_slope_per_hour,
      op_memory_slope_per_h: op.memory_slope_per_hour,
      op_disk_io_slope_per_h: op.disk_io_slope_per_hour,
    };
  }
}
