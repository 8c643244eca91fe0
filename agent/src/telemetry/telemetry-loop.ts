// Production telemetry, every interval: one host sample plus one sample per VM, appended to the
// spool as one TelemetryBatch (split if a batch would pass the frame size). The inventory (host +
// VMs) is read through the hypervisor driver at start, every inventory interval, and whenever the
// set of QMP sockets changes or a VM's process is no longer the inventoried one; HostInventory and
// VmInventory records are spooled only when they changed. A tick that overruns the interval skips
// the next one rather than piling up. Each source reports its own success and duration
// (telemetry_collector_success / _duration_seconds), node_exporter style; a VM that cannot be read
// is one failed collector, not a failed tick.
import { createHash } from "node:crypto";
import { cpus, hostname, release, totalmem } from "node:os";
import { type Logger, type shadowvm, WireError } from "@shadowvm/shared";
import type { DriverCapabilities, HypervisorDriver, VmInventory } from "../hypervisor/driver.js";
import type { Spool } from "../spool/spool.js";
import type { AgentMetrics } from "./agent-metrics.js";
import type { HostMetrics } from "./host-metrics.js";
import { type OperatingPoint, OperatingPointTracker } from "./operating-point.js";
import type { VmMetrics, VmTarget } from "./vm-metrics.js";

/** Samples per TelemetryBatch frame at most (a sample encodes to ~100 bytes). */
export const MAX_SAMPLES_PER_FRAME = 4000;

const VM_STATE: Record<VmInventory["state"], number> = {
  running: 1,
  paused: 3,
  shutdown: 4,
  crashed: 6,
  migrating: 3,
  unknown: 0,
};

/** The driver's inventory as the wire's VmInventory. */
export function vmInventoryMessage(
  vm: VmInventory,
  labels: Record<string, string> = {},
): shadowvm.v1.IVmInventory {
  return {
    name: vm.name,
    uuid: vm.uuid,
    state: VM_STATE[vm.state],
    vcpus: vm.vcpus,
    memory_mb: vm.memory_mb,
    machine_type: vm.machine_type,
    disks: vm.disks.map((d) => ({
      node: d.node,
      file: d.file,
      format: d.format,
      size_bytes: d.size_bytes,
      backing: d.backing_file ?? "",
    })),
    nics: vm.nics.map((n) => ({
      model: n.model,
      mac: n.mac,
      netdev_id: n.netdev ?? "",
      netdev_type: n.netdev_type ?? "",
      host_interface: n.host_interface ?? "",
    })),
    qemu_cmdline: vm.command_line,
    pid: vm.pid ?? 0,
    labels,
  };
}

function capabilityNames(c: DriverCapabilities): string[] {
  const names: string[] = ["telemetry"];
  if (c.capture) names.push("capture");
  if (c.shadows) names.push("shadow");
  if (c.memoryErrorInjection) names.push("fault:memory_error");
  if (c.nmiInjection) names.push("fault:nmi");
  if (c.balloon) names.push("balloon");
  if (c.ioThrottling) names.push("io_throttling");
  return names;
}

const digest = (v: unknown) => createHash("sha256").update(JSON.stringify(v)).digest("hex");

/** The driver plus, for QEMU, the cheap socket listing used to notice VMs coming and going. */
export type TelemetryDriver = HypervisorDriver & { socketPaths?(): string[] };

export interface TelemetryLoopOptions {
  driver: TelemetryDriver;
  spool: Spool;
  host: HostMetrics;
  vms: VmMetrics;
  tracker: OperatingPointTracker;
  logger: Logger;
  metrics?: AgentMetrics;
  intervalMs: number;
  inventoryIntervalMs: number;
  /** VMs sampled at the same time (each holds its QMP socket for a few ms). */
  concurrency: number;
  labels?: Record<string, string>;
}

export class TelemetryLoop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private targets: VmTarget[] = [];
  private sockets = "";
  private inventoryAt = 0;
  private refreshInventory = true;
  private hostDigest = "";
  private readonly vmDigests = new Map<string, string>();
  private stopped = false;
  /** Completed ticks (tests wait on it). */
  ticks = 0;
  lastTickAt = 0;

  constructor(private readonly o: TelemetryLoopOptions) {}

  start(): void {
    if (this.timer) return;
    this.runTick();
    this.timer = setInterval(() => this.runTick(), this.o.intervalMs);
  }

  private runTick(): void {
    if (this.running || this.stopped) {
      if (this.running)
        this.o.logger.warn(
          { interval_ms: this.o.intervalMs },
          "telemetry: previous tick still running; skipping one",
        );
      return;
    }
    this.running = this.tick()
      .catch((err) => {
        this.o.metrics?.error(
          err instanceof WireError ? err.code : ((err as { code?: string }).code ?? "error"),
          "telemetry",
        );
        this.o.logger.error({ err }, "telemetry: tick failed");
      })
      .finally(() => {
        this.running = undefined;
        this.ticks++;
        this.lastTickAt = Date.now();
      });
  }

  /** The operating point of a VM (for the explorer's baseline generator). */
  operatingPoint(uuid: string): OperatingPoint | undefined {
    return this.o.tracker.get(uuid);
  }

  get vmTargets(): readonly VmTarget[] {
    return this.targets;
  }

  private async timed<T>(collector: string, fn: () => Promise<T>): Promise<T | undefined> {
    const started = performance.now();
    try {
      const v = await fn();
      this.o.metrics?.scrapeSuccess.set({ collector }, 1);
      return v;
    } catch (err) {
      this.o.metrics?.scrapeSuccess.set({ collector }, 0);
      this.o.metrics?.error(
        (err as { code?: string }).code ?? "error",
        `telemetry_${collector.split(":")[0]}`,
      );
      this.o.logger.warn({ collector, err: (err as Error).message }, "telemetry: collector failed");
      return undefined;
    } finally {
      this.o.metrics?.scrapeDuration.set({ collector }, (performance.now() - started) / 1000);
    }
  }

  private async inventory(now: number): Promise<void> {
    const { driver, spool, logger } = this.o;
    const { vms, problems } = await driver.listVms();
    for (const p of problems)
      logger.warn({ address: p.address, err: p.error }, "telemetry: VM not inventoried");
    const gone = new Set(this.targets.map((t) => t.uuid));
    this.targets = vms.map((vm) => ({
      uuid: vm.uuid,
      name: vm.name,
      address: vm.address,
      pid: vm.pid,
      vcpus: vm.vcpus,
      memoryMb: vm.memory_mb,
      hostInterfaces: vm.nics.map((n) => n.host_interface).filter((i): i is string => !!i),
    }));
    for (const t of this.targets) gone.delete(t.uuid);
    for (const uuid of gone) {
      this.o.vms.forget(uuid);
      this.o.tracker.forget(uuid);
      this.vmDigests.delete(uuid);
    }
    const host: shadowvm.v1.IHostInventory = {
      hostname: hostname(),
      cpus: cpus().length,
      memory_bytes: totalmem(),
      kernel: release(),
      hypervisor_driver: driver.name,
      hypervisor_version: vms.find((v) => v.qemu_version)?.qemu_version ?? "",
      capabilities: capabilityNames(driver.capabilities),
      vm_uuids: vms.map((v) => v.uuid).sort(),
    };
    const hostDigest = digest(host);
    if (hostDigest !== this.hostDigest) {
      await spool.append({ host_inventory: host });
      this.hostDigest = hostDigest;
    }
    for (const vm of vms) {
      const msg = vmInventoryMessage(vm, this.o.labels);
      const d = digest(msg);
      if (this.vmDigests.get(vm.uuid) !== d) {
        await spool.append({ vm_inventory: msg });
        this.vmDigests.set(vm.uuid, d);
      }
    }
    this.inventoryAt = now;
    this.refreshInventory = false;
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    const sockets = this.o.driver.socketPaths?.().join("\n") ?? "";
    if (sockets !== this.sockets) {
      this.sockets = sockets;
      this.refreshInventory = true;
    }
    if (this.refreshInventory || now - this.inventoryAt >= this.o.inventoryIntervalMs) {
      await this.timed("inventory", () => this.inventory(now));
    }
    const samples: shadowvm.v1.ISample[] = [];
    const host = await this.timed("host", () => this.o.host.sample(now));
    if (host) samples.push(host);
    const queue = [...this.targets];
    const workers = Array.from({ length: Math.max(1, this.o.concurrency) }, async () => {
      for (let vm = queue.shift(); vm; vm = queue.shift()) {
        const target = vm;
        const result = await this.timed(`vm:${target.name}`, () => this.o.vms.sample(target, Date.now()));
        if (!result) continue;
        if (result.stale) this.refreshInventory = true;
        const s = result.sample;
        // The operating point's memory is the guest's own view when it reports one (vm-metrics.ts);
        // while that is pending (the first sample after enabling it) the point waits.
        if (!result.guestMemoryPending)
          this.o.tracker.observe(target.uuid, s.ts_ms ?? now, {
            cpuCores: s.cpu_usage ?? 0,
            vcpus: target.vcpus,
            memUsed: result.guestMemoryUsed ?? s.memory_used_bytes ?? 0,
            memAvailable: s.memory_available_bytes ?? target.memoryMb * 1024 * 1024,
            diskBytes: (s.disk_read_bytes ?? 0) + (s.disk_write_bytes ?? 0),
          });
        const op = this.o.tracker.get(target.uuid);
        if (op) s.extra = { ...s.extra, ...OperatingPointTracker.extra(op) };
        samples.push(s);
      }
    });
    await Promise.all(workers);
    this.o.metrics?.samples.inc({ scope: "host" }, host ? 1 : 0);
    this.o.metrics?.samples.inc({ scope: "vm" }, samples.length - (host ? 1 : 0));
    for (let i = 0; i < samples.length; i += MAX_SAMPLES_PER_FRAME) {
      try {
        await this.o.spool.append({
          telemetry_batch: { samples: samples.slice(i, i + MAX_SAMPLES_PER_FRAME) },
        });
      } catch (err) {
        // Full spool (counted by the spool) or an invalid sample: this batch is lost, said loudly.
        this.o.logger.warn(
          { err: (err as Error).message, samples: samples.length },
          "telemetry: batch not spooled",
        );
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
