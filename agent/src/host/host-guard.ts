// The host guard: production keeps its headroom while shadows run.
//
// - Budget for all shadows together: how many, how much memory, how much disk (their overlays)
//   and what share of the host's CPU. The CPU share and the memory budget are also enforced by
//   the kernel through the shadows' parent cgroup (host/cgroups.ts); the guard decides up front.
// - Admission control: a shadow is admitted only if it fits the budget AND the host keeps the
//   memory and disk production needs (`host_reserve_mb`, `min_free_disk_mb`) after it; a refusal
//   says which limit and by how much.
// - Watch: when the host runs short anyway (available memory or free disk below the emergency
//   floor), shadows are killed first, stressed ones before the control, newest first, one per
//   check until the host is above the floor again. Shadow QEMUs also get oom_score_adj 1000, so
//   the kernel's OOM killer picks them before anything of production.
import { EventEmitter } from "node:events";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { type MemInfo, processMemory, readMemInfo } from "./proc.js";

const MiB = 1024 * 1024;

export interface HostBudget {
  maxShadows: number;
  /** Share of the host's CPU time all shadows may use together (0..1]. */
  cpuShare: number;
  /** Memory all shadows may hold together. */
  memoryBudgetBytes: number;
  /** Available memory the host must keep after a shadow is admitted. */
  hostReserveBytes: number;
  /** Below this much available memory, shadows are killed. */
  emergencyAvailableBytes: number;
  /** Disk all shadows' overlays may use together. */
  diskBudgetBytes: number;
  /** Free disk the host must keep after a shadow is admitted. */
  minFreeDiskBytes: number;
  /** Below this much free disk, shadows are killed. */
  emergencyFreeDiskBytes: number;
  /** CPU capping must be possible (cgroup CPU controller) for a shadow to be admitted. */
  requireCpuCap: boolean;
}

export interface ShadowDemand {
  id: string;
  /** Memory the shadow is expected to hold: guest RAM + QEMU's own. */
  memoryBytes: number;
  /** Disk its overlays may grow to. */
  diskBytes: number;
  /** The control shadow is killed last. */
  control?: boolean;
}

export type Admission = { ok: true } | { ok: false; reason: string };

export interface HostProbe {
  meminfo(): MemInfo;
  /** Free bytes on the file system of the shadows' directory. */
  freeDiskBytes(): number;
  cpuCount(): number;
  /** Resident bytes of a process (undefined when gone). */
  residentBytes(pid: number): number | undefined;
}

export const realHostProbe = (shadowsDir: string, freeDisk: (dir: string) => number): HostProbe => ({
  meminfo: () => readMemInfo(),
  freeDiskBytes: () => freeDisk(shadowsDir),
  cpuCount: () => cpus().length,
  residentBytes: (pid) => processMemory(pid)?.rssBytes,
});

interface Admitted extends ShadowDemand {
  pid: number | undefined;
  seq: number;
}

const mb = (bytes: number) => `${Math.round(bytes / MiB)} MiB`;

/** Makes a process the OOM killer's first choice (shadows die before production). */
export function preferForOomKill(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, "1000");
  } catch {
    /* not permitted or gone: the memory cgroup limit still applies */
  }
}

export class HostGuard extends EventEmitter<{ kill: [{ id: string; reason: string }] }> {
  readonly budget: HostBudget;
  private readonly probe: HostProbe;
  private readonly cpuCapProblem: string | undefined;
  private readonly admitted = new Map<string, Admitted>();
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly killed = new Set<string>();

  /** `cpuCapProblem`: why CPU cannot be capped on this host (undefined = it can). */
  constructor(budget: HostBudget, probe: HostProbe, cpuCapProblem?: string) {
    super();
    this.budget = budget;
    this.probe = probe;
    this.cpuCapProblem = cpuCapProblem;
  }

  /** CPU all shadows may use together, in cores. */
  get cpuCores(): number {
    return Math.max(0.01, this.budget.cpuShare * this.probe.cpuCount());
  }

  /** Memory of admitted shadows not resident yet (they are still loading their memory). */
  private pendingBytes(): number {
    let sum = 0;
    for (const a of this.admitted.values()) {
      const rss = a.pid === undefined ? 0 : (this.probe.residentBytes(a.pid) ?? a.memoryBytes);
      sum += Math.max(0, a.memoryBytes - rss);
    }
    return sum;
  }

  /** Decides whether one more shadow fits; on yes it is counted until release(). */
  admit(d: ShadowDemand): Admission {
    const b = this.budget;
    const refuse = (reason: string): Admission => ({
      ok: false,
      reason: `shadow ${d.id} refused: ${reason}`,
    });
    if (b.requireCpuCap && this.cpuCapProblem) {
      return refuse(
        `its CPU use cannot be capped on this host (${this.cpuCapProblem}); shadow.require_cpu_cap is on`,
      );
    }
    if (this.admitted.size >= b.maxShadows) {
      return refuse(`${this.admitted.size} shadows already run; shadow.max_shadows is ${b.maxShadows}`);
    }
    const used = [...this.admitted.values()].reduce((s, a) => s + a.memoryBytes, 0);
    if (used + d.memoryBytes > b.memoryBudgetBytes) {
      return refuse(
        `it needs ~${mb(d.memoryBytes)} of memory and shadows already hold ${mb(used)} of their ${mb(b.memoryBudgetBytes)} budget (shadow.memory_budget_mb)`,
      );
    }
    const mem = this.probe.meminfo();
    const after = mem.availableBytes - this.pendingBytes() - d.memoryBytes;
    if (after < b.hostReserveBytes) {
      return refuse(
        `the host has ${mb(mem.availableBytes)} of memory available; admitting it (~${mb(d.memoryBytes)}) would leave ${mb(after)}, below the ${mb(b.hostReserveBytes)} kept for production (shadow.host_reserve_mb)`,
      );
    }
    const diskUsed = [...this.admitted.values()].reduce((s, a) => s + a.diskBytes, 0);
    if (diskUsed + d.diskBytes > b.diskBudgetBytes) {
      return refuse(
        `its overlays may grow to ${mb(d.diskBytes)} and shadows already reserved ${mb(diskUsed)} of their ${mb(b.diskBudgetBytes)} disk budget (shadow.disk_budget_mb)`,
      );
    }
    const free = this.probe.freeDiskBytes();
    if (free - diskUsed - d.diskBytes < b.minFreeDiskBytes) {
      return refuse(
        `the shadows' file system has ${mb(free)} free; with ${mb(diskUsed + d.diskBytes)} reserved for overlays it would fall below the ${mb(b.minFreeDiskBytes)} kept free (shadow.min_free_disk_mb)`,
      );
    }
    this.admitted.set(d.id, { ...d, pid: undefined, seq: this.seq++ });
    return { ok: true };
  }

  /** The admitted shadow's QEMU is running as `pid` (its memory counts as resident from now on). */
  setPid(id: string, pid: number): void {
    const a = this.admitted.get(id);
    if (a) a.pid = pid;
    preferForOomKill(pid);
  }

  release(id: string): void {
    this.admitted.delete(id);
    this.killed.delete(id);
  }

  get count(): number {
    return this.admitted.size;
  }

  /** One check: if the host is short, names the shadow to kill and why (and emits "kill"). */
  check(): { id: string; reason: string } | undefined {
    const b = this.budget;
    let reason: string | undefined;
    const mem = this.probe.meminfo();
    if (mem.availableBytes < b.emergencyAvailableBytes) {
      reason = `host memory short: ${mb(mem.availableBytes)} available, below the ${mb(b.emergencyAvailableBytes)} floor (shadow.emergency_available_mb)`;
    } else {
      const free = this.probe.freeDiskBytes();
      if (free < b.emergencyFreeDiskBytes) {
        reason = `host disk short: ${mb(free)} free for shadows, below the ${mb(b.emergencyFreeDiskBytes)} floor (shadow.emergency_free_disk_mb)`;
      }
    }
    if (!reason) return undefined;
    const victims = [...this.admitted.values()]
      .filter((a) => !this.killed.has(a.id))
      .sort((x, y) => Number(!!x.control) - Number(!!y.control) || y.seq - x.seq);
    const victim = victims[0];
    if (!victim) return undefined;
    this.killed.add(victim.id);
    const verdict = { id: victim.id, reason };
    this.emit("kill", verdict);
    return verdict;
  }

  /** Checks every `intervalMs` until stopWatch(). */
  startWatch(intervalMs: number): void {
    if (this.timer) return;
    const tick = () => {
      try {
        this.check();
      } catch {
        /* a failed read is retried next tick */
      }
      this.timer = setTimeout(tick, intervalMs);
      this.timer.unref();
    };
    this.timer = setTimeout(tick, intervalMs);
    this.timer.unref();
  }

  stopWatch(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
