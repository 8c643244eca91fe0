// Small readers of /proc and the file system the shadow lab and the host guard need: a process's
// identity (pid + start time, so a recycled pid is never mistaken for a shadow), its CPU time,
// the host's memory and CPU counters, free disk space.
import { readFileSync, statfsSync } from "node:fs";

/** Fields of /proc/<pid>/stat after the command name (index 0 = field 3, the state). */
function statFields(pid: number, procRoot = "/proc"): string[] | undefined {
  try {
    const stat = readFileSync(`${procRoot}/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** The process's start time in clock ticks since boot (field 22), or undefined when it is gone. */
export function processStartTicks(pid: number, procRoot = "/proc"): number | undefined {
  const f = statFields(pid, procRoot);
  return f ? Number(f[19]) : undefined;
}

/** Alive and not a zombie. */
export function processAlive(pid: number, procRoot = "/proc"): boolean {
  const f = statFields(pid, procRoot);
  return f !== undefined && f[0] !== "Z" && f[0] !== "X";
}

/** The same process as recorded: alive with the recorded start time. */
export function sameProcess(pid: number, startTicks: number | undefined, procRoot = "/proc"): boolean {
  if (!processAlive(pid, procRoot)) return false;
  return startTicks === undefined || processStartTicks(pid, procRoot) === startTicks;
}

export function processCmdline(pid: number, procRoot = "/proc"): string[] {
  try {
    return readFileSync(`${procRoot}/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return [];
  }
}

/** User + system CPU time of the whole process (all threads), in seconds. */
export function processCpuSeconds(pid: number, procRoot = "/proc"): number | undefined {
  const f = statFields(pid, procRoot);
  if (!f) return undefined;
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

/** Resident and proportional memory of a process in bytes (smaps_rollup; RSS from statm otherwise). */
export function processMemory(
  pid: number,
  procRoot = "/proc",
): { rssBytes: number; pssBytes: number } | undefined {
  try {
    const text = readFileSync(`${procRoot}/${pid}/smaps_rollup`, "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
    return { rssBytes: kb("Rss"), pssBytes: kb("Pss") };
  } catch {
    try {
      const pages = readFileSync(`${procRoot}/${pid}/statm`, "utf8").split(" ");
      const rss = Number(pages[1]) * 4096;
      return { rssBytes: rss, pssBytes: rss };
    } catch {
      return undefined;
    }
  }
}

/** USER_HZ: 100 on every Linux architecture the agent runs on. */
export const CLOCK_TICKS = 100;

export interface MemInfo {
  totalBytes: number;
  availableBytes: number;
}

export function readMemInfo(procRoot = "/proc"): MemInfo {
  const text = readFileSync(`${procRoot}/meminfo`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { totalBytes: kb("MemTotal"), availableBytes: kb("MemAvailable") || kb("MemFree") };
}

/** Aggregate CPU counters (ticks) from /proc/stat: busy and total. */
export function readCpuTicks(procRoot = "/proc"): { busy: number; total: number } {
  const line = readFileSync(`${procRoot}/stat`, "utf8").split("\n")[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Free bytes for an unprivileged writer at `path`'s file system. */
export function freeDiskBytes(path: string): number {
  const s = statfsSync(path);
  return Number(s.bavail) * Number(s.bsize);
}
