// Host telemetry: CPU from /proc/stat (as cores in use since the previous sample), memory from
// systeminformation (its "available" accounts for reclaimable caches the way the kernel does),
// disk and network counters from /proc/diskstats and /proc/net/dev. systeminformation's own
// currentLoad/disksIO/networkStats spawn shell pipelines on every call, which alone would exceed
// the agent's CPU budget at a 10 s interval, so those counters are read directly; only its memory
// module is loaded (the whole package adds ~8 MB of resident memory).
import { createRequire } from "node:module";
import { cpus } from "node:os";
import type { shadowvm } from "@shadowvm/shared";
import type { Systeminformation } from "systeminformation";
import { type CpuTimes, readHostCpu, readHostDisks, readHostNet } from "./proc-stats.js";

type MemModule = { mem(): Promise<Systeminformation.MemData> };
let memModule: MemModule | undefined;
function siMemory(): MemModule {
  memModule ??= createRequire(import.meta.url)("systeminformation/lib/memory.js") as MemModule;
  return memModule;
}

export class HostMetrics {
  private prevCpu: CpuTimes | undefined;
  private readonly ncpu = cpus().length || 1;

  /** One SAMPLE_SCOPE_HOST sample. Missing sources leave their fields at 0. */
  async sample(now = Date.now()): Promise<shadowvm.v1.ISample> {
    const cpu = readHostCpu();
    let cpuUsage = 0;
    let stealPct: number | undefined;
    if (cpu) {
      const prev = this.prevCpu ?? { busy: 0, total: 0, steal: 0 };
      const dTotal = cpu.total - prev.total;
      if (dTotal > 0) {
        cpuUsage = ((cpu.busy - prev.busy) / dTotal) * this.ncpu;
        stealPct = ((cpu.steal - prev.steal) / dTotal) * 100;
      }
      this.prevCpu = cpu;
    }
    const mem = await siMemory().mem();
    const disk = readHostDisks();
    const net = readHostNet();
    const sample: shadowvm.v1.ISample = {
      scope: 1,
      ts_ms: now,
      cpu_usage: Math.max(0, cpuUsage),
      memory_used_bytes: Math.max(0, mem.total - mem.available),
      memory_available_bytes: mem.available,
      disk_read_bytes: disk?.readBytes ?? 0,
      disk_write_bytes: disk?.writeBytes ?? 0,
      disk_read_ops: disk?.readOps ?? 0,
      disk_write_ops: disk?.writeOps ?? 0,
      net_rx_bytes: net?.rxBytes ?? 0,
      net_tx_bytes: net?.txBytes ?? 0,
      net_rx_packets: net?.rxPackets ?? 0,
      net_tx_packets: net?.txPackets ?? 0,
      net_rx_drops: net?.rxDrops ?? 0,
      net_tx_drops: net?.txDrops ?? 0,
    };
    if (stealPct !== undefined) sample.extra = { steal_pct: stealPct };
    return sample;
  }
}
