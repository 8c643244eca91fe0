// Per-VM telemetry of a running QEMU:
//   CPU      utime+stime of the QEMU process (/proc/<pid>/stat) since the previous sample, in
//            cores; the first sample averages since the process started
//   memory   used = the QEMU process's resident memory (the host's view of what the guest
//            occupies); available = guest RAM left to the guest after the balloon
//            (query-balloon `actual`, or query-memory-size-summary when there is no balloon);
//            balloon = RAM the balloon took back; guestMemoryUsed = the guest's own view
//            (virtio-balloon guest statistics: total - available), which the operating point
//            uses when the guest reports it: RSS counts QEMU's own memory and pages the guest
//            touched once and freed, so on a small VM it sits near 100 % whatever the guest does
//   block    query-blockstats summed over the VM's devices (cumulative bytes and operations)
//   network  /sys/class/net/<tap>/statistics of each NIC with a host interface, seen from the
//            guest: the tap's tx is the guest's rx and vice versa
// A QMP socket serves one client at a time, so each sample opens a connection, runs its three
// queries and closes it again within milliseconds.
import type { shadowvm } from "@shadowvm/shared";
import { QmpClient, QmpError } from "../hypervisor/qemu/qmp-client.js";
import { clockTicksPerSecond, readInterface, readProcessCpu, uptimeSeconds } from "./proc-stats.js";

export interface VmTarget {
  uuid: string;
  name: string;
  /** QMP socket path. */
  address: string;
  pid: number | undefined;
  vcpus: number;
  memoryMb: number;
  /** Host-side tap interfaces of the VM's NICs. */
  hostInterfaces: string[];
}

interface BlockStats {
  device?: string;
  qdev?: string;
  stats: { rd_bytes: number; wr_bytes: number; rd_operations: number; wr_operations: number };
}

export interface VmSampleResult {
  sample: shadowvm.v1.ISample;
  /** The process behind the pid is not the one inventoried (exited or pid reused): refresh. */
  stale: boolean;
  /** Memory in use as the guest sees it (balloon guest statistics), when the guest reports it. */
  guestMemoryUsed?: number;
  /** The VM has a balloon whose guest statistics are not reported yet (polling just enabled). */
  guestMemoryPending?: boolean;
}

/** Guest statistics period set on balloons that have none (seconds; libvirt's `<stats period>`). */
const BALLOON_STATS_PERIOD_S = 2;

export interface VmMetricsOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

export class VmMetrics {
  private readonly prev = new Map<string, { ticks: number; startTicks: number; at: number }>();
  /** Per VM: the balloon's QOM path with guest statistics enabled, or null (none / not usable). */
  private readonly balloonStats = new Map<string, string | null>();
  /** Per VM: samples taken while its guest statistics were pending (a guest that never reports
   * them falls back to RSS after a few). */
  private readonly pendingSamples = new Map<string, number>();

  constructor(private readonly options: VmMetricsOptions) {}

  forget(uuid: string): void {
    this.prev.delete(uuid);
    this.balloonStats.delete(uuid);
    this.pendingSamples.delete(uuid);
  }

  /** The balloon's guest statistics (enabling their polling the first time), or pending/none. */
  private async guestMemory(qmp: QmpClient, uuid: string): Promise<{ used?: number; pending: boolean }> {
    let path = this.balloonStats.get(uuid);
    if (path === undefined) {
      path = null;
      for (const parent of ["/machine/peripheral", "/machine/peripheral-anon"]) {
        const list = await qmp
          .execute<{ name: string; type: string }[]>("qom-list", { path: parent })
          .catch(() => []);
        const dev = list.find((p) => /virtio-balloon/.test(p.type));
        if (dev) {
          path = `${parent}/${dev.name}`;
          break;
        }
      }
      if (path) {
        const period = await qmp
          .execute<number>("qom-get", { path, property: "guest-stats-polling-interval" })
          .catch(() => undefined);
        if (period === undefined) path = null;
        else if (period === 0) {
          await qmp
            .execute("qom-set", {
              path,
              property: "guest-stats-polling-interval",
              value: BALLOON_STATS_PERIOD_S,
            })
            .catch(() => undefined);
          // What the guest reported before (once, when its driver started) is stale.
          this.balloonStats.set(uuid, path);
          return { pending: true };
        }
      }
      this.balloonStats.set(uuid, path);
    }
    if (!path) return { pending: false };
    const g = await qmp
      .execute<{ stats: Record<string, number>; "last-update": number }>("qom-get", {
        path,
        property: "guest-stats",
      })
      .catch(() => undefined);
    const total = g?.stats["stat-total-memory"] ?? -1;
    const avail = g?.stats["stat-available-memory"] ?? -1;
    if (g && g["last-update"] > 0 && total > 0 && avail >= 0) {
      this.pendingSamples.delete(uuid);
      return { used: total - avail, pending: false };
    }
    const pending = (this.pendingSamples.get(uuid) ?? 0) + 1;
    this.pendingSamples.set(uuid, pending);
    if (pending > 5) {
      this.balloonStats.set(uuid, null);
      return { pending: false };
    }
    return { pending: true };
  }

  /** Samples one VM. Throws (QmpError) when its QMP socket cannot be read. */
  async sample(vm: VmTarget, now = Date.now()): Promise<VmSampleResult> {
    const qmp = await QmpClient.connect(vm.address, {
      connectTimeoutMs: this.options.connectTimeoutMs,
      commandTimeoutMs: this.options.commandTimeoutMs,
    });
    let balloon: { actual: number } | undefined;
    let summary: { "base-memory": number; "plugged-memory"?: number };
    let blocks: BlockStats[];
    let guest: { used?: number; pending: boolean } = { pending: false };
    try {
      [balloon, summary, blocks] = await Promise.all([
        qmp.execute<{ actual: number }>("query-balloon").catch((err) => {
          // No balloon device: not an error, the guest simply keeps all its RAM.
          if (
            err instanceof QmpError &&
            (err.errorClass === "DeviceNotActive" || err.errorClass === "GenericError")
          )
            return undefined;
          throw err;
        }),
        qmp.execute<{ "base-memory": number; "plugged-memory"?: number }>("query-memory-size-summary"),
        qmp.execute<BlockStats[]>("query-blockstats"),
      ]);
      if (balloon) guest = await this.guestMemory(qmp, vm.uuid);
    } finally {
      qmp.close();
    }
    const guestRam = summary["base-memory"] + (summary["plugged-memory"] ?? 0);
    const available = balloon?.actual ?? guestRam;
    const sample: shadowvm.v1.ISample = {
      scope: 2,
      vm_uuid: vm.uuid,
      ts_ms: now,
      memory_available_bytes: available,
      memory_balloon_bytes: Math.max(0, guestRam - available),
    };
    for (const b of blocks) {
      if (!b.device && !b.qdev) continue; // only the devices' top nodes; their children repeat them
      sample.disk_read_bytes = (sample.disk_read_bytes ?? 0) + (b.stats.rd_bytes ?? 0);
      sample.disk_write_bytes = (sample.disk_write_bytes ?? 0) + (b.stats.wr_bytes ?? 0);
      sample.disk_read_ops = (sample.disk_read_ops ?? 0) + (b.stats.rd_operations ?? 0);
      sample.disk_write_ops = (sample.disk_write_ops ?? 0) + (b.stats.wr_operations ?? 0);
    }
    for (const name of vm.hostInterfaces) {
      const c = readInterface(name);
      if (!c) continue;
      sample.net_rx_bytes = (sample.net_rx_bytes ?? 0) + c.txBytes;
      sample.net_tx_bytes = (sample.net_tx_bytes ?? 0) + c.rxBytes;
      sample.net_rx_packets = (sample.net_rx_packets ?? 0) + c.txPackets;
      sample.net_tx_packets = (sample.net_tx_packets ?? 0) + c.rxPackets;
      sample.net_rx_drops = (sample.net_rx_drops ?? 0) + c.txDrops;
      sample.net_tx_drops = (sample.net_tx_drops ?? 0) + c.rxDrops;
    }
    let stale = false;
    const proc = vm.pid ? readProcessCpu(vm.pid) : undefined;
    if (vm.pid && !proc) stale = true;
    if (proc) {
      const hz = clockTicksPerSecond();
      const prev = this.prev.get(vm.uuid);
      if (prev && prev.startTicks !== proc.startTicks) stale = true;
      if (prev && !stale && now > prev.at) {
        sample.cpu_usage = Math.max(0, (proc.ticks - prev.ticks) / hz / ((now - prev.at) / 1000));
      } else {
        const up = uptimeSeconds();
        const age = up !== undefined ? up - proc.startTicks / hz : 0;
        sample.cpu_usage = age > 0 ? proc.ticks / hz / age : 0;
      }
      sample.memory_used_bytes = proc.rssBytes;
      this.prev.set(vm.uuid, { ticks: proc.ticks, startTicks: proc.startTicks, at: now });
    }
    const result: VmSampleResult = { sample, stale };
    if (guest.used !== undefined) {
      result.guestMemoryUsed = guest.used;
      sample.extra = { ...sample.extra, guest_memory_used_bytes: guest.used };
    }
    if (guest.pending) result.guestMemoryPending = true;
    return result;
  }
}
