// One capture from start to finish: live capture of the VM (live-capture.ts), its frozen disks,
// memory, configuration and network state written into the encrypted, deduplicated capture store
// (store/), the staging files removed, and retention applied.
//
// Capture layout in the store (what the shadow lab restores from):
//   memory                 QEMU's migration stream (`-incoming` input)
//   disk/<node>/<depth>    each file of each disk's frozen backing chain, top (0) first
//   config.json            { inventory, command_line, device_model: { pci, peripherals } }
//   network.json           { nics, guest: { addresses } | { unavailable: reason } }
// and metadata { pause_ms, memory_bytes, disk_bytes, disks: [{ node, device, size_bytes, chain }] }.
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Logger, ShadowvmError, silentLogger } from "@shadowvm/shared";
import type { AgentConfig } from "../config/agent-config.js";
import { GuestChannel } from "../guest/guest-channel.js";
import type { HypervisorDriver, VmInventory } from "../hypervisor/driver.js";
import type { QmpClient } from "../hypervisor/qemu/qmp-client.js";
import { type CaptureRecoveryDriver, recoverInterruptedCaptures } from "./capture-recovery.js";
import { type FrozenDisk, type LiveCaptureOptions, liveCapture, MEMORY_FILE } from "./live-capture.js";
import type { CaptureInfo, CaptureStore, PartProgress, RetentionPolicy } from "./store/index.js";

export interface CaptureRecord {
  id: string;
  vm: string;
  vm_uuid: string;
  started_at: string;
  finished_at: string;
  pause_ms: number;
  memory_bytes: number;
  disk_bytes: number;
  stored_bytes: number;
  new_bytes: number;
  disks: {
    node: string;
    device: string | undefined;
    size_bytes: number;
    chain: { part: string; format: string }[];
  }[];
  parts: string[];
}

/**
 * What a capture uses of its driver (QemuDriver and LibvirtDriver both are one). Crash recovery
 * of earlier captures goes through the driver too (`prepareCaptureRecovery`, capture-recovery.ts),
 * so every capture recovers the way its driver needs, whoever calls captureVm.
 */
export interface CaptureDriver extends CaptureRecoveryDriver {
  getVm(nameOrUuid: string): Promise<VmInventory>;
  /** A QMP connection to a VM's `address`. */
  connect(address: string): Promise<QmpClient>;
}

/** A driver that lists VMs and captures them: what the CLI and the campaign scheduler hold. */
export type CapturingDriver = HypervisorDriver & CaptureDriver;

export interface CaptureVmOptions {
  driver: CaptureDriver;
  store: CaptureStore;
  vm: string;
  /** Staging root (0700) for journals, overlays and the memory file; recovery scans it. */
  stagingRoot: string;
  /** Bandwidth cap for reading the frozen disks and memory into the store, bytes/s. */
  maxBytesPerSecond?: number;
  timeoutMs?: number;
  retention?: RetentionPolicy;
  onProgress?: (progress: PartProgress) => void;
  onStep?: LiveCaptureOptions["onStep"];
  logger?: Logger;
}

/** Where the capture store and its key live; `keyFile` (a command's --key-file) overrides the config. */
export function captureStoreLocation(
  config: AgentConfig,
  keyFile?: string,
): { dir: string; keyFile: string } {
  return {
    dir: config.capture.store_dir ?? join(config.data_dir, "captures"),
    keyFile: keyFile ?? config.capture.key_file ?? join(config.data_dir, "keys", "capture-store.key"),
  };
}

/** captureVm's staging, bandwidth cap, deadline and retention from the config (or a command's flags). */
export function captureSettings(
  config: AgentConfig,
  overrides: { bandwidthMbS?: number; timeoutS?: number } = {},
): Pick<CaptureVmOptions, "stagingRoot" | "maxBytesPerSecond" | "timeoutMs" | "retention"> {
  return {
    stagingRoot: join(config.data_dir, "staging"),
    maxBytesPerSecond: (overrides.bandwidthMbS ?? config.capture.bandwidth_mb_s) * 1e6,
    timeoutMs: (overrides.timeoutS ?? config.capture.timeout_s) * 1000,
    retention: {
      keepPerVm: config.capture.keep_per_vm,
      maxTotalBytes: config.capture.max_store_gb * 1024 ** 3,
    },
  };
}

export function diskPartName(node: string, depth: number): string {
  return `disk/${node}/${depth}`;
}

/** Guest addresses through the shadowvm guest channel, when the VM has one that answers. */
async function guestNetwork(qmp: QmpClient): Promise<Record<string, unknown>> {
  try {
    const chardevs = await qmp.execute<{ label: string; filename: string }[]>("query-chardev");
    const ports = await qmp.execute<{ name: string; type: string }[]>("qom-list", {
      path: "/machine/peripheral",
    });
    for (const port of ports.filter((p) => p.type === "child<virtserialport>")) {
      const path = `/machine/peripheral/${port.name}`;
      const name = await qmp.execute<string>("qom-get", { path, property: "name" });
      if (name !== "org.shadowvm.guest.0") continue;
      const chardev = await qmp.execute<string>("qom-get", { path, property: "chardev" });
      const socket = /^unix:([^,]+)/.exec(chardevs.find((c) => c.label === chardev)?.filename ?? "")?.[1];
      if (!socket) continue;
      const channel = await GuestChannel.connect(socket, { connectTimeoutMs: 2000, commandTimeoutMs: 5000 });
      try {
        return { addresses: ((await channel.ip()) as unknown as { addresses?: unknown }).addresses ?? [] };
      } finally {
        await channel.close();
      }
    }
    return { unavailable: "no guest agent channel on this VM" };
  } catch (err) {
    return { unavailable: `guest agent did not answer: ${(err as Error).message}` };
  }
}

/** The device model as QEMU reports it: enough, with the command line, to rebuild the machine. */
async function deviceModel(qmp: QmpClient): Promise<Record<string, unknown>> {
  const pci = await qmp.execute("query-pci");
  const peripherals: Record<string, string> = {};
  for (const container of ["/machine/peripheral", "/machine/peripheral-anon"]) {
    for (const child of await qmp.execute<{ name: string; type: string }[]>("qom-list", {
      path: container,
    })) {
      const type = /^child<(.+)>$/.exec(child.type)?.[1];
      if (type) peripherals[`${container}/${child.name}`] = type;
    }
  }
  const machine = await qmp.execute<string>("qom-get", { path: "/machine", property: "type" });
  return { machine, pci, peripherals };
}

/**
 * Captures one VM into the store. Runs crash recovery of earlier captures first, through the
 * driver (which makes the QMP sockets their journals recorded answer again, see capture-recovery.ts).
 */
export async function captureVm(options: CaptureVmOptions): Promise<CaptureRecord> {
  const log = options.logger ?? silentLogger();
  await recoverInterruptedCaptures(options.stagingRoot, log, options.driver);
  const vm: VmInventory = await options.driver.getVm(options.vm);
  const startedAt = new Date();
  const writer = await options.store.beginCapture({ vm: vm.name });
  const stagingDir = join(options.stagingRoot, writer.id);
  const partOptions = { maxBytesPerSecond: options.maxBytesPerSecond, onProgress: options.onProgress };
  let frozen: FrozenDisk[] = [];
  try {
    // Config and network state are read before the capture, over its own short session.
    const info = await options.driver.connect(vm.address);
    let config: Record<string, unknown>;
    let network: Record<string, unknown>;
    try {
      config = { inventory: vm, command_line: vm.command_line, device_model: await deviceModel(info) };
      network = { nics: vm.nics, guest: await guestNetwork(info) };
    } finally {
      info.close();
    }

    const result = await liveCapture({
      vm,
      stagingDir,
      connect: () => options.driver.connect(vm.address),
      timeoutMs: options.timeoutMs,
      onStep: options.onStep,
      logger: log,
      async copyFrozenDisks(disks) {
        frozen = disks;
        for (const disk of disks) {
          for (const [depth, image] of disk.chain.entries()) {
            await writer.addFile(diskPartName(disk.node, depth), image.file, {
              ...partOptions,
              totalBytes: statSync(image.file).size,
            });
          }
        }
      },
    });
    await writer.addFile("memory", result.memoryFile, { ...partOptions, totalBytes: result.memoryBytes });
    await writer.addBuffer("config.json", JSON.stringify(config, null, 2));
    await writer.addBuffer("network.json", JSON.stringify(network, null, 2));
    const disks = frozen.map((d) => ({
      node: d.node,
      device: d.device,
      size_bytes: d.sizeBytes,
      chain: d.chain.map((c, depth) => ({ part: diskPartName(d.node, depth), format: c.format })),
    }));
    const diskBytes = frozen.reduce(
      (sum, d) => sum + d.chain.reduce((s, c) => s + statSync(c.file).size, 0),
      0,
    );
    const metadata = {
      vm_uuid: vm.uuid,
      pause_ms: result.pauseMs,
      memory_bytes: result.memoryBytes,
      disk_bytes: diskBytes,
      disks,
      qemu_version: vm.qemu_version,
      machine_type: vm.machine_type,
    };
    const committed: CaptureInfo = await writer.commit({ metadata });
    rmSync(stagingDir, { recursive: true, force: true });
    if (options.retention) await options.store.applyRetention(options.retention);
    return {
      id: committed.id,
      vm: vm.name,
      vm_uuid: vm.uuid,
      started_at: startedAt.toISOString(),
      finished_at: new Date().toISOString(),
      pause_ms: result.pauseMs,
      memory_bytes: result.memoryBytes,
      disk_bytes: diskBytes,
      stored_bytes: committed.stored_bytes,
      new_bytes: committed.new_bytes,
      disks,
      parts: committed.parts.map((p) => p.name),
    };
  } catch (err) {
    await writer.abort(`capture failed: ${(err as Error).message}`).catch(() => undefined);
    // The staging dir holds plaintext memory: never leave that behind. Its journal stays only
    // when restoring production failed too, so that recovery at the next start can finish it.
    if (err instanceof ShadowvmError && err.code === "undo_failed") {
      rmSync(join(stagingDir, MEMORY_FILE), { force: true });
    } else {
      rmSync(stagingDir, { recursive: true, force: true });
    }
    throw err;
  }
}
