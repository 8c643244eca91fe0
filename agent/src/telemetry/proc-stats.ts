// Small readers of Linux's /proc and /sys counters, shared by the host and VM telemetry. Each
// returns undefined (not an error) when the file is missing: "no data" is not a failure.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

let clockTicks: number | undefined;
let pageSize: number | undefined;

/** USER_HZ (ticks per second of /proc/<pid>/stat times); 100 on every common Linux. */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export function memoryPageSize(): number {
  if (pageSize === undefined) {
    try {
      pageSize = Number(execFileSync("getconf", ["PAGESIZE"], { encoding: "utf8" }).trim()) || 4096;
    } catch {
      pageSize = 4096;
    }
  }
  return pageSize;
}

export interface ProcessCpu {
  /** utime + stime, in clock ticks. */
  ticks: number;
  /** Start time after boot, in clock ticks (identifies the process across pid reuse). */
  startTicks: number;
  /** Resident set size in bytes. */
  rssBytes: number;
}

/** CPU time and RSS of a process from /proc/<pid>/stat and statm. */
export function readProcessCpu(pid: number): ProcessCpu | undefined {
  const stat = read(`/proc/${pid}/stat`);
  const statm = read(`/proc/${pid}/statm`);
  if (!stat || !statm) return undefined;
  // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime = field 14, stime = 15, starttime = 22.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const start = Number(fields[19]);
  const rssPages = Number(statm.split(" ")[1]);
  if (![utime, stime, start, rssPages].every(Number.isFinite)) return undefined;
  return { ticks: utime + stime, startTicks: start, rssBytes: rssPages * memoryPageSize() };
}

/** Seconds since boot. */
export function uptimeSeconds(): number | undefined {
  const text = read("/proc/uptime");
  const v = text ? Number(text.split(" ")[0]) : Number.NaN;
  return Number.isFinite(v) ? v : undefined;
}

export interface CpuTimes {
  busy: number;
  total: number;
  steal: number;
}

/** Aggregate CPU times from the first line of /proc/stat (in ticks). */
export function readHostCpu(): CpuTimes | undefined {
  const text = read("/proc/stat");
  const line = text?.split("\n", 1)[0];
  if (!line?.startsWith("cpu ")) return undefined;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is inside user.
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  return { busy: total - idle - iowait, total, steal };
}

export interface DiskCounters {
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
}

/** Sum over whole physical disks (/sys/block/<dev>/device exists: no partitions, loop or dm). */
export function readHostDisks(): DiskCounters | undefined {
  const text = read("/proc/diskstats");
  if (!text) return undefined;
  let disks: Set<string>;
  try {
    disks = new Set(readdirSync("/sys/block").filter((d) => existsSync(`/sys/block/${d}/device`)));
  } catch {
    return undefined;
  }
  const sum: DiskCounters = { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 };
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 14 || !disks.has(f[2]!)) continue;
    // reads completed (4), sectors read (6), writes completed (8), sectors written (10); 512-byte sectors
    sum.readOps += Number(f[3]);
    sum.readBytes += Number(f[5]) * 512;
    sum.writeOps += Number(f[7]);
    sum.writeBytes += Number(f[9]) * 512;
  }
  return sum;
}

export interface NetCounters {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  rxDrops: number;
  txDrops: number;
}

/** Sum over every interface but loopback, from /proc/net/dev. */
export function readHostNet(): NetCounters | undefined {
  const text = read("/proc/net/dev");
  if (!text) return undefined;
  const sum: NetCounters = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, rxDrops: 0, txDrops: 0 };
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon < 0 || line.slice(0, colon).trim() === "lo") continue;
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    sum.rxBytes += f[0] ?? 0;
    sum.rxPackets += f[1] ?? 0;
    sum.rxDrops += f[3] ?? 0;
    sum.txBytes += f[8] ?? 0;
    sum.txPackets += f[9] ?? 0;
    sum.txDrops += f[11] ?? 0;
  }
  return sum;
}

/** One interface's counters from /sys/class/net/<name>/statistics. */
export function readInterface(name: string): NetCounters | undefined {
  if (!/^[\w.@:-]+$/.test(name)) return undefined;
  const dir = `/sys/class/net/${name}/statistics`;
  const n = (f: string) => Number(read(`${dir}/${f}`)?.trim());
  const c: NetCounters = {
    rxBytes: n("rx_bytes"),
    txBytes: n("tx_bytes"),
    rxPackets: n("rx_packets"),
    txPackets: n("tx_packets"),
    rxDrops: n("rx_dropped"),
    txDrops: n("tx_dropped"),
  };
  return Object.values(c).every(Number.isFinite) ? c : undefined;
}
