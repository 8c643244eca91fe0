// Turns a StressProfile into real actions on one shadow, and on that shadow only.
//
// Calibration first: for `calibration` ms after the shadow resumed, the guest's own demand is
// measured from the host (CPU time of its QEMU process, bytes and operations of its disks from
// query-blockstats, memory in use from the balloon's guest statistics or the guest channel).
// Then:
//   cpu_load > 1     the shadow's cgroup gets demand / cpu_load cores (cgroup v1 cfs quota or v2
//                    cpu.max), so the guest wants cpu_load times what it gets;
//   memory_load > 0  the balloon takes the guest down to used / memory_load of RAM, so what the
//                    guest uses is memory_load of what it has (never below shadow.min_balloon_mb);
//   io_load > 1      block_set_io_throttle gives each disk demand / io_load (bytes and operations
//                    per second), so the guest's I/O demand is io_load times its allowance;
//   net_latency_ms, net_loss_pct, bandwidth
//                    user mode: QEMU netdev filters through the agent (net-impairment.ts): delay
//                    on what the guest sends, loss both ways, rate both ways; netns mode: netem on
//                    the tap where the kernel has it (else the same filters), bandwidth by tbf.
// Faults, each at `at_s` after the shadow resumed, for `duration_s` (absent: until the run ends):
//   disk_io_error      a blkdebug node slid under each disk's overlay (blockdev-add +
//                      blockdev-reopen) failing guest writes at `rate` (see blkdebugRules), slid
//                      out again at the end;
//   memory_error       an uncorrected machine check in guest RAM (HMP mce, bank 9, status
//                      0xbd00000000000000), repeated every 1/rate s (at least 1 s) while it lasts
//                      and the guest still runs;
//   nmi                inject-nmi, repeated the same way;
//   net_latency_spike  + rate x 2000 ms of delay while it lasts;
//   process_kill       SIGKILL to ceil(rate x N) of the workload's N processes (guest channel),
//                      restarted at the end when a duration is given;
//   disk_fill          the data file system filled to rate x 100 % (guest channel), emptied at
//                      the end;
//   clock_jump         the guest clock jumps rate x 24 h forward (guest channel), back at the end.
import { type FaultSpec, ShadowvmError, type StressProfile } from "@shadowvm/shared";
import { GUEST_CHANNEL_NAME } from "../demo/demo-vm.js";
import { GuestChannel } from "../guest/guest-channel.js";
import type { ShadowCgroup } from "../host/cgroups.js";
import { processCpuSeconds } from "../host/proc.js";
import { NetImpairer, type NetImpairment } from "./net-impairment.js";
import { applyNetem, applyTbf } from "./netns.js";
import type { ShadowVm } from "./shadow-vm.js";

const MiB = 1024 * 1024;

export interface Demand {
  /** CPU cores the guest's QEMU used. */
  cpuCores: number;
  /** Disk bytes and operations per second (all captured disks together). */
  ioBytesPerSec: number;
  ioOpsPerSec: number;
  /** Guest memory in use and in total, bytes (undefined when the guest did not tell). */
  memUsedBytes: number | undefined;
  memTotalBytes: number | undefined;
  windowMs: number;
}

export interface StressEvent {
  kind: "stress" | "fault" | "note";
  what: string;
  detail: string;
  /** ms after the shadow resumed. */
  offsetMs: number;
}

export interface StressOptions {
  shadow: ShadowVm;
  cgroup: ShadowCgroup | undefined;
  profile: StressProfile;
  /** Bandwidth cap, kbit/s per direction. */
  bandwidthKbit?: number;
  /** When the shadow resumed (Date.now()). */
  startedAtMs: number;
  calibrationMs: number;
  minBalloonBytes: number;
  /** Guest process names process_kill chooses from, in order. */
  workloadProcesses: string[];
  /** netns mode: the kernel has netem. */
  netem: boolean;
  /** Guest RAM, bytes (for machine-check addresses and the balloon). */
  guestRamBytes: number;
  onEvent(e: StressEvent): void;
}

/** A blkdebug rule set failing `rate` of guest writes (see the comment in the body). */
export function blkdebugRules(
  rate: number,
  states = 20,
): {
  "set-state": Record<string, unknown>[];
  "inject-error": Record<string, unknown>[];
} {
  // blkdebug has no probability. Its state machine gives one: states 1..N advance on every
  // guest data write (event write_aio); in k of the N states that event arms an error rule that
  // fails the following writes, in the others it arms a rule on a sector no disk has (harmless),
  // which replaces the armed one. k = round(rate x N), spread evenly. A harmless rule is also armed
  // on every flush_to_os (each flush starts with one), so a flush (the guest's, or QEMU's own when
  // the layer is slid out again) never inherits an armed error and metadata reaches the disk.
  const k = rate <= 0 ? 0 : Math.max(1, Math.min(states, Math.round(rate * states)));
  const failing = new Set<number>();
  for (let i = 0; i < k; i++) failing.add(1 + Math.floor((i * states) / k));
  const never = 2 ** 40; // sector 2^40 = 512 TiB in: on no disk
  const setState: Record<string, unknown>[] = [];
  const inject: Record<string, unknown>[] = [];
  for (let s = 1; s <= states; s++) {
    setState.push({ event: "write_aio", state: s, new_state: (s % states) + 1 });
    inject.push({ event: "flush_to_os", state: s, iotype: "write", errno: 5, sector: never });
    inject.push(
      failing.has(s)
        ? { event: "write_aio", state: s, iotype: "write", errno: 5 }
        : { event: "write_aio", state: s, iotype: "write", errno: 5, sector: never },
    );
  }
  return { "set-state": setState, "inject-error": inject };
}

/** The machine check the design proved on the demo guest: uncorrected, bank 9, at `address`. */
export function mceCommand(address: number): string {
  return `mce 0 9 0xbd00000000000000 0x86 0x${address.toString(16)} 0x8c`;
}

/** A page-aligned guest-physical address in the middle of guest RAM (below the 3 GiB PCI hole). */
export function mceAddress(guestRamBytes: number, n = 0): number {
  const low = Math.min(guestRamBytes, 3 * 1024 * MiB);
  const base = Math.floor(low / 2 / 4096) * 4096;
  return base + n * 4096;
}

/** How often a periodic fault repeats: every 1/rate seconds, at least 1 s; 0 = once. */
export function repeatIntervalMs(rate: number): number {
  return rate > 0 ? Math.max(1000, Math.round(1000 / rate)) : 0;
}

interface ActiveFault {
  spec: FaultSpec;
  ended?: boolean;
  timers: NodeJS.Timeout[];
  end?: () => Promise<void>;
}

export class ShadowStress {
  private readonly o: StressOptions;
  private channel: Promise<GuestChannel> | undefined;
  private impairer: NetImpairer | undefined;
  private baseImpairment: NetImpairment = { delayMs: 0, lossPct: 0 };
  private spikeMs = 0;
  private readonly faults: ActiveFault[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private balloonPolling: string | undefined;

  constructor(options: StressOptions) {
    this.o = options;
  }

  private offset(): number {
    return Date.now() - this.o.startedAtMs;
  }

  private event(kind: StressEvent["kind"], what: string, detail: string): void {
    this.o.onEvent({ kind, what, detail, offsetMs: this.offset() });
  }

  private guest(): Promise<GuestChannel> {
    const socket = this.o.shadow.guestChannels[GUEST_CHANNEL_NAME];
    if (!socket) {
      return Promise.reject(
        new ShadowvmError("shadow-lab", "unsupported", `shadow ${this.o.shadow.id} has no guest channel`),
      );
    }
    this.channel ??= GuestChannel.connect(socket, { connectTimeoutMs: 30_000, commandTimeoutMs: 30_000 });
    return this.channel;
  }

  private async balloonPath(): Promise<string | undefined> {
    if (this.balloonPolling) return this.balloonPolling;
    const qmp = this.o.shadow.qmp;
    const list = await qmp.execute<{ name: string; type: string }[]>("qom-list", {
      path: "/machine/peripheral",
    });
    let path = list.find((p) => /virtio-balloon/.test(p.type))?.name;
    if (path) path = `/machine/peripheral/${path}`;
    else {
      const anon = await qmp.execute<{ name: string; type: string }[]>("qom-list", {
        path: "/machine/peripheral-anon",
      });
      const a = anon.find((p) => /virtio-balloon/.test(p.type))?.name;
      if (a) path = `/machine/peripheral-anon/${a}`;
    }
    this.balloonPolling = path;
    return path;
  }

  private async ioCounters(): Promise<{ bytes: number; ops: number }> {
    const stats =
      await this.o.shadow.qmp.execute<
        { device?: string; qdev?: string; "node-name"?: string; stats: Record<string, number> }[]
      >("query-blockstats");
    const nodes = new Set(this.o.shadow.disks.map((d) => d.node));
    const devices = new Set(this.o.shadow.disks.map((d) => d.device).filter(Boolean));
    let bytes = 0;
    let ops = 0;
    for (const s of stats) {
      const qdev = s.qdev?.split("/")[3] ?? s.qdev;
      if (!(nodes.has(s["node-name"] ?? "") || devices.has(qdev ?? "") || devices.has(s.qdev ?? "")))
        continue;
      bytes += (s.stats["rd_bytes"] ?? 0) + (s.stats["wr_bytes"] ?? 0);
      ops += (s.stats["rd_operations"] ?? 0) + (s.stats["wr_operations"] ?? 0);
    }
    return { bytes, ops };
  }

  private async guestMemory(): Promise<{ used: number; total: number } | undefined> {
    const path = await this.balloonPath().catch(() => undefined);
    if (path) {
      try {
        const g = await this.o.shadow.qmp.execute<{ stats: Record<string, number>; "last-update": number }>(
          "qom-get",
          { path, property: "guest-stats" },
        );
        const total = g.stats["stat-total-memory"] ?? -1;
        const avail = g.stats["stat-available-memory"] ?? -1;
        if (g["last-update"] > 0 && total > 0 && avail >= 0) return { used: total - avail, total };
      } catch {
        /* fall back to the guest channel */
      }
    }
    if (this.o.shadow.guestChannels[GUEST_CHANNEL_NAME]) {
      try {
        const status = await (await this.guest()).status({ timeoutMs: 15_000 });
        const avail = Number(status.health?.mem_available_kb) * 1024;
        if (Number.isFinite(avail))
          return { used: Math.max(0, this.o.guestRamBytes - avail), total: this.o.guestRamBytes };
      } catch {
        /* unknown */
      }
    }
    return undefined;
  }

  /** Measures the guest's demand over the calibration window. */
  async calibrate(): Promise<Demand> {
    const pid = this.o.shadow.pid;
    const needMemory = this.o.profile.memory_load > 0;
    if (needMemory) {
      const path = await this.balloonPath().catch(() => undefined);
      if (path) {
        await this.o.shadow.qmp
          .execute("qom-set", { path, property: "guest-stats-polling-interval", value: 1 })
          .catch(() => undefined);
      }
    }
    const t0 = performance.now();
    const cpu0 = processCpuSeconds(pid) ?? 0;
    const io0 = await this.ioCounters();
    await new Promise((r) => setTimeout(r, this.o.calibrationMs));
    const windowMs = performance.now() - t0;
    const cpu1 = processCpuSeconds(pid) ?? cpu0;
    const io1 = await this.ioCounters();
    const mem = needMemory ? await this.guestMemory() : undefined;
    return {
      cpuCores: Math.max(0, (cpu1 - cpu0) / (windowMs / 1000)),
      ioBytesPerSec: Math.max(0, ((io1.bytes - io0.bytes) * 1000) / windowMs),
      ioOpsPerSec: Math.max(0, ((io1.ops - io0.ops) * 1000) / windowMs),
      memUsedBytes: mem?.used,
      memTotalBytes: mem?.total,
      windowMs,
    };
  }

  /** Applies the profile's CPU, memory and I/O contention for the measured demand. */
  async apply(demand: Demand): Promise<void> {
    const p = this.o.profile;
    const shadow = this.o.shadow;
    if (p.cpu_load > 1) {
      if (!this.o.cgroup)
        throw new ShadowvmError(
          "shadow-lab",
          "unsupported",
          "CPU contention needs a cgroup with the CPU controller",
        );
      // Demand below 2 % of a core is measurement noise on an idle guest; starve from there.
      const cores = Math.max(0.02, demand.cpuCores) / p.cpu_load;
      const effective = this.o.cgroup.setCpuLimit(cores);
      this.event(
        "stress",
        "cpu",
        `guest demand ${(demand.cpuCores * 100).toFixed(1)} % of a core; capped at ${((effective ?? cores) * 100).toFixed(2)} % (cpu_load ${p.cpu_load})`,
      );
    }
    if (p.memory_load > 0) {
      const total = demand.memTotalBytes ?? this.o.guestRamBytes;
      const used = demand.memUsedBytes;
      if (used === undefined) {
        throw new ShadowvmError(
          "shadow-lab",
          "calibration_failed",
          "memory pressure needs the guest's memory use; neither the balloon statistics nor the guest channel answered",
        );
      }
      // The balloon's target is the VM's RAM after inflation; the guest sees its own total (RAM
      // minus what the kernel reserved) shrink by as much as the balloon takes.
      const visible = Math.round(used / p.memory_load);
      const take = Math.max(0, total - visible);
      const actual = await shadow.qmp
        .execute<{ actual: number }>("query-balloon")
        .then((b) => b.actual)
        .catch(() => this.o.guestRamBytes);
      const target = Math.max(this.o.minBalloonBytes, Math.min(this.o.guestRamBytes, actual - take));
      await shadow.qmp.execute("balloon", { value: target });
      this.event(
        "stress",
        "memory",
        `guest uses ${Math.round(used / MiB)} of ${Math.round(total / MiB)} MiB; the balloon takes ${Math.round((actual - target) / MiB)} MiB more, leaving it ${Math.round((total - (actual - target)) / MiB)} MiB (memory_load ${p.memory_load}; VM RAM target ${Math.round(target / MiB)} MiB)`,
      );
    }
    if (p.io_load > 1) {
      const bps = Math.max(4096, Math.round(demand.ioBytesPerSec / p.io_load));
      const iops = Math.max(1, Math.round(demand.ioOpsPerSec / p.io_load));
      // Throttling is set on the guest device's block backend, named by its qdev path.
      const blocks =
        await shadow.qmp.execute<{ qdev?: string; inserted?: { "node-name"?: string } }[]>("query-block");
      for (const d of shadow.disks) {
        const qdev = blocks.find((b) => b.inserted?.["node-name"] === d.node)?.qdev;
        if (!qdev) continue;
        await shadow.qmp.execute("block_set_io_throttle", {
          id: qdev,
          bps,
          bps_rd: 0,
          bps_wr: 0,
          iops,
          iops_rd: 0,
          iops_wr: 0,
        });
      }
      this.event(
        "stress",
        "io",
        `guest I/O demand ${Math.round(demand.ioBytesPerSec / 1024)} KiB/s, ${demand.ioOpsPerSec.toFixed(1)} ops/s; allowance ${Math.round(bps / 1024)} KiB/s, ${iops} ops/s (io_load ${p.io_load})`,
      );
    }
  }

  /** Network impairment: needs no calibration, so it starts right away (before any fault). */
  async applyNetwork(): Promise<void> {
    const p = this.o.profile;
    const shadow = this.o.shadow;
    this.baseImpairment = {
      delayMs: p.net_latency_ms,
      lossPct: p.net_loss_pct,
      ...(this.o.bandwidthKbit !== undefined && shadow.network === "user"
        ? { rateKbit: this.o.bandwidthKbit }
        : {}),
    };
    const wantsFilter =
      p.net_latency_ms > 0 ||
      p.net_loss_pct > 0 ||
      p.faults.some((f) => f.kind === "net_latency_spike") ||
      (this.o.bandwidthKbit !== undefined && shadow.network === "user");
    const spikes = p.faults.some((f) => f.kind === "net_latency_spike");
    if (
      shadow.network === "netns" &&
      shadow.netns &&
      (p.net_latency_ms > 0 || p.net_loss_pct > 0) &&
      this.o.netem &&
      !spikes
    ) {
      for (const tap of shadow.netns.taps) {
        await applyNetem(shadow.netns.name, tap, {
          delayMs: p.net_latency_ms,
          lossPct: p.net_loss_pct,
          ...(this.o.bandwidthKbit ? { rateKbit: this.o.bandwidthKbit } : {}),
        });
      }
      this.event(
        "stress",
        "net",
        `netem on ${shadow.netns.taps.join(", ")}: delay ${p.net_latency_ms} ms, loss ${p.net_loss_pct} %`,
      );
    } else if (wantsFilter) {
      this.impairer = await NetImpairer.attach(shadow.qmp, shadow.workDir, shadow.netdevs, {
        ...this.baseImpairment,
        delayMs: this.baseImpairment.delayMs + this.spikeMs,
      });
      this.event(
        "stress",
        "net",
        `netdev filters on ${shadow.netdevs.join(", ")}: delay ${p.net_latency_ms} ms, loss ${p.net_loss_pct} %${this.baseImpairment.rateKbit ? `, ${this.baseImpairment.rateKbit} kbit/s` : ""}`,
      );
    }
    if (
      this.o.bandwidthKbit !== undefined &&
      shadow.network === "netns" &&
      shadow.netns &&
      !(this.o.netem && !spikes && (p.net_latency_ms > 0 || p.net_loss_pct > 0))
    ) {
      for (const tap of shadow.netns.taps) await applyTbf(shadow.netns.name, tap, this.o.bandwidthKbit);
      this.event(
        "stress",
        "net",
        `tbf on ${shadow.netns.taps.join(", ")}: ${this.o.bandwidthKbit} kbit/s towards the guest`,
      );
    }
  }

  /** Schedules every fault of the profile relative to the shadow's resume. */
  scheduleFaults(): void {
    for (const spec of this.o.profile.faults) {
      const fault: ActiveFault = { spec, timers: [] };
      this.faults.push(fault);
      const startIn = Math.max(0, spec.at_s * 1000 - this.offset());
      fault.timers.push(
        setTimeout(() => {
          void this.startFault(fault);
        }, startIn),
      );
    }
  }

  private async startFault(fault: ActiveFault): Promise<void> {
    if (this.stopped) return;
    const { spec } = fault;
    try {
      await this.beginFault(fault);
    } catch (err) {
      this.event("note", spec.kind, `fault ${spec.kind} could not be applied: ${(err as Error).message}`);
      return;
    }
    if (spec.duration_s !== undefined) {
      fault.timers.push(
        setTimeout(() => {
          void this.endFault(fault);
        }, spec.duration_s * 1000),
      );
    }
  }

  private async endFault(fault: ActiveFault): Promise<void> {
    fault.ended = true;
    for (const t of fault.timers) clearTimeout(t);
    fault.timers = [];
    const end = fault.end;
    fault.end = undefined;
    if (!end || this.stopped) return;
    try {
      await end();
      this.event("fault", fault.spec.kind, "ended");
    } catch (err) {
      this.event(
        "note",
        fault.spec.kind,
        `fault ${fault.spec.kind} could not be ended: ${(err as Error).message}`,
      );
    }
  }

  private repeat(fault: ActiveFault, fn: () => Promise<void>): void {
    const every = repeatIntervalMs(fault.spec.rate);
    if (!every) return;
    const tick = () => {
      if (this.stopped || fault.ended) return;
      // Only into a running guest: a panicked or paused one has had its answer already.
      this.o.shadow.qmp
        .execute<{ running: boolean }>("query-status")
        .then((st) => (st.running ? fn() : undefined))
        .catch(() => undefined);
      fault.timers.push(setTimeout(tick, every));
    };
    fault.timers.push(setTimeout(tick, every));
  }

  private async beginFault(fault: ActiveFault): Promise<void> {
    const { spec } = fault;
    const shadow = this.o.shadow;
    const qmp = shadow.qmp;
    switch (spec.kind) {
      case "disk_io_error": {
        const layered: typeof shadow.disks = [];
        for (const d of shadow.disks) {
          const dbg = `${d.node}-svm-dbg`;
          await qmp.execute("blockdev-add", {
            driver: "blkdebug",
            "node-name": dbg,
            image: d.fileNode,
            ...blkdebugRules(spec.rate),
          });
          await qmp.execute("blockdev-reopen", {
            options: [{ driver: "qcow2", "node-name": d.node, file: dbg, backing: d.backingNode }],
          });
          layered.push(d);
        }
        this.event(
          "fault",
          spec.kind,
          `blkdebug under ${layered.map((d) => d.node).join(", ")}: ${Math.round(spec.rate * 100)} % of guest writes fail (EIO)`,
        );
        fault.end = async () => {
          for (const d of layered) {
            let lastErr: unknown;
            for (let i = 0; i < 10; i++) {
              try {
                await qmp.execute("blockdev-reopen", {
                  options: [
                    { driver: "qcow2", "node-name": d.node, file: d.fileNode, backing: d.backingNode },
                  ],
                });
                lastErr = undefined;
                break;
              } catch (err) {
                lastErr = err;
                await new Promise((r) => setTimeout(r, 500));
              }
            }
            if (lastErr) throw lastErr;
            await qmp.execute("blockdev-del", { "node-name": `${d.node}-svm-dbg` });
          }
        };
        return;
      }
      case "memory_error": {
        let n = 0;
        const inject = async () => {
          await qmp.hmp(mceCommand(mceAddress(this.o.guestRamBytes, n++)));
        };
        await inject();
        this.event(
          "fault",
          spec.kind,
          `uncorrected machine check at guest address 0x${mceAddress(this.o.guestRamBytes).toString(16)}`,
        );
        this.repeat(fault, inject);
        fault.end = async () => undefined;
        return;
      }
      case "nmi": {
        await qmp.execute("inject-nmi");
        this.event("fault", spec.kind, "NMI injected");
        this.repeat(fault, () => qmp.execute("inject-nmi").then(() => undefined));
        fault.end = async () => undefined;
        return;
      }
      case "net_latency_spike": {
        const extra = Math.round(spec.rate * 2000);
        this.spikeMs += extra;
        this.impairer?.set({ ...this.baseImpairment, delayMs: this.baseImpairment.delayMs + this.spikeMs });
        this.event("fault", spec.kind, `+${extra} ms delay on what the guest sends`);
        fault.end = async () => {
          this.spikeMs -= extra;
          this.impairer?.set({ ...this.baseImpairment, delayMs: this.baseImpairment.delayMs + this.spikeMs });
        };
        return;
      }
      case "process_kill": {
        const names = this.o.workloadProcesses;
        const count = Math.max(1, Math.ceil(spec.rate * names.length));
        const chosen = names.slice(0, count);
        const channel = await this.guest();
        const killed: string[] = [];
        for (const name of chosen) {
          const r = await channel.kill(name, "KILL");
          if (r.ok) killed.push(name);
        }
        this.event("fault", spec.kind, `killed ${killed.join(", ") || "nothing (no such processes)"}`);
        fault.end = async () => {
          for (const name of killed) await channel.start(name);
        };
        return;
      }
      case "disk_fill": {
        const pct = Math.max(1, Math.min(100, Math.round(spec.rate * 100)));
        const channel = await this.guest();
        const r = await channel.fill(pct, { timeoutMs: 120_000 });
        this.event(
          "fault",
          spec.kind,
          `data file system filled to ${pct} % (${r.used_kb ?? "?"} of ${r.total_kb ?? "?"} KiB used${r.write_failed ? ", ENOSPC" : ""})`,
        );
        fault.end = async () => {
          await channel.fill(0, { timeoutMs: 120_000 });
        };
        return;
      }
      case "clock_jump": {
        const seconds = Math.max(1, Math.round(spec.rate * 86_400));
        const channel = await this.guest();
        await channel.clock(seconds, { check: true });
        this.event("fault", spec.kind, `guest clock jumped ${seconds} s forward`);
        fault.end = async () => {
          await channel.clock(-seconds, { check: true });
        };
        return;
      }
    }
  }

  /** Cancels pending faults and closes what the stress opened (the shadow is about to go). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const f of this.faults) for (const t of f.timers) clearTimeout(t);
    for (const t of this.timers) clearTimeout(t);
    await this.impairer?.close().catch(() => undefined);
    const channel = this.channel;
    this.channel = undefined;
    if (channel) await channel.then((c) => c.close()).catch(() => undefined);
  }
}
