// The `libvirt` driver: domains of a libvirt QEMU connection (qemu:///system by default), read
// through libvirt's own interfaces only (virsh: domain XML, domain state, QMP passthrough).
//
// Inventory per running domain:
//   domain XML (`virsh dumpxml`)     name, uuid, vCPUs, RAM, machine type, disks (files, formats,
//                                    backing chain, target dev, alias), NICs (MAC, model, type,
//                                    source, host tap device)
//   `virsh domstate --reason`        state
//   QMP passthrough                  block node names and virtual sizes (`query-block`, so capture
//                                    can address every disk), NIC device models (`qom-list`),
//                                    QEMU's version
//   /proc                            the QEMU process (found by libvirt's `-uuid` argument) and
//                                    its command line
// Each running domain gets a QMP bridge (qmp-bridge.ts): an agent-side QMP socket carried through
// libvirt, whose path is the VM's `address`. Everything in the agent that speaks QMP to
// `vm.address` (capture, capture recovery, telemetry) works on libvirt domains through it, while
// libvirtd stays the only client of QEMU's real monitor. Live capture is the capture service
// (capture/capture-service.ts) unchanged over the bridge, with the qemu driver's guarantees;
// prepareCaptureRecovery gives its crash recovery the bridges earlier agent processes recorded.
//
// Domains that are shut off are not VMs on this host and are not listed, except those libvirt
// reports as crashed (QEMU died or was killed): those are problem entries, like a QMP socket whose
// QEMU is gone for the qemu driver. An unreachable libvirtd is one problem entry for the URI.
import { mkdirSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { dirname, join } from "node:path";
import { type Logger, ShadowvmError, silentLogger } from "@shadowvm/shared";
import type { CaptureJournal } from "../../capture/live-capture.js";
import type {
  DiskInfo,
  DriverCapabilities,
  HypervisorDriver,
  InventoryResult,
  NicInfo,
  VmInventory,
  VmState,
} from "../driver.js";
import { readCommandLine } from "../qemu/qemu-process.js";
import { QmpClient } from "../qemu/qmp-client.js";
import { loadUsocket } from "../usocket.js";
import { type DomainDescription, describeDomain, qemuNetdevType, qemuNicModel } from "./domain-xml.js";
import { qemuPidsByUuid } from "./qemu-pids.js";
import { QmpBridge } from "./qmp-bridge.js";
import { VirshError, VirshShell } from "./virsh.js";

export const DRIVER_NAME = "libvirt";
export const DEFAULT_LIBVIRT_URI = "qemu:///system";
/** Parent of each agent process's bridge directory (`<this>/<pid>`). */
export const DEFAULT_BRIDGE_ROOT = "/run/shadowvm/libvirt";

export interface LibvirtDriverOptions {
  /** libvirt connection URI (default qemu:///system). */
  uri?: string;
  /**
   * Directory of the per-domain QMP bridge sockets (created 0700, removed by close()). Default
   * `/run/shadowvm/libvirt/<pid>`: one per agent process, so that processes never replace each
   * other's sockets (prepareCaptureRecovery serves bridges at the paths an earlier one recorded).
   */
  bridgeDir?: string;
  /** Deadline of each libvirt call. */
  commandTimeoutMs?: number;
  /** Deadline for QMP connections to a bridge (greeting included). */
  connectTimeoutMs?: number;
  /** A bridge's event watchers stop this long after its last client left (default 2 min). */
  idleWatchMs?: number;
  virshBinary?: string;
  logger?: Logger;
}

/** What libvirt adds to the common inventory. */
export interface LibvirtDetails {
  uri: string;
  /** libvirt's domain id while it runs. */
  domain_id: number | undefined;
  /** Domain type: kvm or qemu (TCG). */
  domain_type: string;
  /** `virsh domstate --reason`, e.g. "running (booted)". */
  state_reason: string;
  interfaces: { alias: string | undefined; type: string; source: Record<string, string> }[];
}

export interface LibvirtVmInventory extends VmInventory {
  libvirt: LibvirtDetails;
}

interface QueryBlockDevice {
  device: string;
  qdev?: string;
  inserted?: {
    "node-name"?: string;
    file: string;
    ro: boolean;
    image: { "virtual-size": number; format: string; "backing-filename"?: string };
  };
}

/** `virsh domstate --reason` text -> VmState. */
export function mapDomainState(text: string): VmState {
  const [state, reason] = [text.replace(/\s*\(.*$/, "").trim(), /\((.*)\)/.exec(text)?.[1] ?? ""];
  switch (state) {
    case "running":
    case "idle":
    case "blocked":
    case "in shutdown":
      return "running";
    case "paused":
      return reason === "migrating" || reason === "migration" ? "migrating" : "paused";
    case "pmsuspended":
      return "paused";
    case "shut off":
      return reason === "crashed" ? "crashed" : "shutdown";
    case "crashed":
      return "crashed";
    default:
      return "unknown";
  }
}

function isActive(stateText: string): boolean {
  return !/^(shut off|crashed)/.test(stateText.trim());
}

/** True when something accepts connections on the unix socket at `path`. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** QMP qdev path -> qdev id (`/machine/peripheral/virtio-disk0/virtio-backend` -> virtio-disk0). */
function qdevId(qdev: string | undefined): string | undefined {
  return qdev?.replace(/^\/machine\/peripheral(-anon)?\//, "").replace(/\/virtio-backend$/, "") || undefined;
}

export class LibvirtDriver implements HypervisorDriver {
  readonly name = DRIVER_NAME;
  readonly capabilities: DriverCapabilities;
  readonly uri: string;
  readonly bridgeDir: string;
  private readonly options: LibvirtDriverOptions;
  private readonly log: Logger;
  private readonly shell: VirshShell;
  /** Bridges by domain uuid (promises: concurrent inventories must not start two). */
  private readonly bridges = new Map<string, Promise<QmpBridge>>();
  /** Bridges at paths recorded by earlier agent processes (crash recovery), by path. */
  private readonly extraBridges = new Map<string, Promise<QmpBridge>>();
  private readonly ownBridgeDir: boolean;
  private closed = false;

  constructor(options: LibvirtDriverOptions = {}) {
    this.options = options;
    this.uri = options.uri ?? DEFAULT_LIBVIRT_URI;
    this.bridgeDir = options.bridgeDir ?? join(DEFAULT_BRIDGE_ROOT, String(process.pid));
    this.ownBridgeDir = options.bridgeDir === undefined;
    this.log = options.logger ?? silentLogger();
    this.shell = new VirshShell({
      uri: this.uri,
      commandTimeoutMs: options.commandTimeoutMs,
      virshBinary: options.virshBinary,
    });
    const bridged = loadUsocket() !== null;
    this.capabilities = {
      // The bridge receives descriptors over its socket and hands them to QEMU through libvirt.
      fdPassing: bridged,
      // Live capture through the bridge (same technique and guarantees as the qemu driver).
      capture: bridged,
      // Shadows are agent-run QEMU processes built from the domain's command line (libvirt-shadow.ts).
      shadows: bridged,
      // HMP `mce`, `inject-nmi`, `balloon`, `block_set_io_throttle` through the QMP passthrough.
      memoryErrorInjection: true,
      nmiInjection: true,
      balloon: true,
      ioThrottling: true,
    };
  }

  /** `cannot reach libvirtd at URI: ...` for an unreachable daemon, the libvirt text otherwise. */
  private describeLibvirtError(err: unknown, what: string): ShadowvmError {
    if (err instanceof VirshError && (err.code === "unreachable" || err.code === "timeout")) {
      return new ShadowvmError(
        "libvirt",
        "unreachable",
        `cannot reach libvirtd at ${this.uri} (${what}): ${err.libvirtMessage || err.message}; is libvirtd running, and may this user open its socket?`,
        { cause: err },
      );
    }
    if (err instanceof ShadowvmError) return err;
    return new ShadowvmError("libvirt", "failed", `${what}: ${(err as Error).message}`, { cause: err });
  }

  /** The bridge socket path of a domain (its inventory `address`). */
  bridgePath(uuid: string): string {
    return join(this.bridgeDir, `${uuid}.qmp`);
  }

  async listVms(): Promise<InventoryResult> {
    const result: InventoryResult = { vms: [], problems: [] };
    let domains: { uuid: string; name: string }[];
    try {
      domains = (await this.shell.run(["list", "--all", "--uuid", "--name"])).stdout
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l.length > 0)
        .map((l) => {
          const at = l.indexOf(" ");
          return { uuid: l.slice(0, at).toLowerCase(), name: l.slice(at + 1).trim() };
        });
    } catch (err) {
      const e = this.describeLibvirtError(err, "listing domains");
      return { vms: [], problems: [{ address: this.uri, error: e.message }] };
    }
    const pids = qemuPidsByUuid();
    const active = new Set<string>();
    for (const d of domains) {
      let stateText: string;
      try {
        stateText = (await this.shell.run(["domstate", "--reason", d.uuid])).stdout.trim();
      } catch (err) {
        if (err instanceof VirshError && err.code === "not_found") continue; // undefined meanwhile
        result.problems.push({
          address: this.bridgePath(d.uuid),
          error: this.describeLibvirtError(err, `reading the state of domain ${d.name}`).message,
        });
        continue;
      }
      if (!isActive(stateText)) {
        if (mapDomainState(stateText) === "crashed") {
          result.problems.push({
            address: this.bridgePath(d.uuid),
            error: `libvirt domain ${d.name} is ${stateText}: its QEMU process died or was killed; nothing to inventory until it is started again`,
          });
        }
        continue;
      }
      active.add(d.uuid);
      try {
        result.vms.push(await this.inventory(d.uuid, d.name, stateText, pids));
      } catch (err) {
        result.problems.push({
          address: this.bridgePath(d.uuid),
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }
    // Bridges of domains that stopped meanwhile go away with them.
    for (const [uuid, bridge] of this.bridges) {
      if (!active.has(uuid)) {
        this.bridges.delete(uuid);
        await (await bridge.catch(() => undefined))?.close();
      }
    }
    return result;
  }

  /** listVms, except that an unreachable libvirtd throws (code `unreachable`). */
  private async reachableInventory(): Promise<InventoryResult> {
    const result = await this.listVms();
    const unreachable = result.problems.find((p) => p.address === this.uri);
    if (unreachable) throw new ShadowvmError("libvirt", "unreachable", unreachable.error);
    return result;
  }

  async getVm(nameOrUuid: string): Promise<LibvirtVmInventory> {
    const { vms, problems } = await this.reachableInventory();
    const wanted = nameOrUuid.toLowerCase();
    const vm = vms.find((v) => v.name === nameOrUuid || v.uuid === wanted || v.address === nameOrUuid);
    if (vm) return vm as LibvirtVmInventory;
    const named = problems.find((p) => p.error.includes(`domain ${nameOrUuid} `));
    const visible = vms.map((v) => v.name).join(", ") || "none";
    throw new ShadowvmError(
      "libvirt",
      "not_found",
      named
        ? `VM "${nameOrUuid}" cannot be used: ${named.error} (visible VMs: ${visible})`
        : `no running libvirt domain named or with uuid "${nameOrUuid}" at ${this.uri} (visible VMs: ${visible})`,
    );
  }

  /** Opens a QMP connection to a domain's bridge (the `address` of its inventory). */
  connect(address: string, options: { fdPassing?: boolean } = {}): Promise<QmpClient> {
    return QmpClient.connect(address, {
      connectTimeoutMs: this.options.connectTimeoutMs ?? 15_000,
      commandTimeoutMs: this.options.commandTimeoutMs ?? 30_000,
      fdPassing: options.fdPassing ?? false,
    });
  }

  /** The bridge of a running domain, started on first use. */
  bridge(uuid: string, name: string): Promise<QmpBridge> {
    return this.startBridge(this.bridges, uuid, uuid, name, this.bridgePath(uuid));
  }

  /**
   * Serves a running domain's bridge at an exact path, e.g. the socket an earlier agent process
   * recorded in the journal of a capture it did not finish. Closed with the driver.
   */
  serveBridgeAt(uuid: string, name: string, socketPath: string): Promise<QmpBridge> {
    return this.startBridge(this.extraBridges, socketPath, uuid, name, socketPath);
  }

  /**
   * Crash recovery of captures (capture-recovery.ts calls this before connecting to anything): a
   * journal names the bridge socket of the agent process that wrote it (`<bridge dir>/<uuid>.qmp`),
   * gone with that process. For each journal whose domain still runs, a bridge is served at that
   * very path (unless it is this driver's own bridge, or another live agent process still serves
   * it), so that the common recovery undoes the capture through libvirt: migration cancelled,
   * guest resumed, overlays merged back. A domain that no longer runs gets no bridge, and the
   * common recovery commits its overlays offline. Throws when libvirtd cannot be reached (whether
   * the domains run is unknown then).
   */
  async prepareCaptureRecovery(journals: CaptureJournal[]): Promise<void> {
    if (journals.length === 0) return;
    const { vms } = await this.reachableInventory();
    for (const journal of journals) {
      const uuid = /([0-9a-f-]{36})\.qmp$/.exec(journal.qmpSocket)?.[1];
      const vm = vms.find((v) => v.uuid === uuid);
      if (!vm || vm.address === journal.qmpSocket || (await socketAnswers(journal.qmpSocket))) continue;
      await this.serveBridgeAt(vm.uuid, vm.name, journal.qmpSocket);
    }
  }

  private startBridge(
    map: Map<string, Promise<QmpBridge>>,
    key: string,
    uuid: string,
    name: string,
    socketPath: string,
  ): Promise<QmpBridge> {
    const existing = map.get(key);
    if (existing) return existing;
    if (this.closed)
      return Promise.reject(new ShadowvmError("libvirt", "closed", "the libvirt driver is closed"));
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
    const started = QmpBridge.start({
      uri: this.uri,
      uuid,
      name,
      socketPath,
      commandTimeoutMs: this.options.commandTimeoutMs,
      idleWatchMs: this.options.idleWatchMs,
      virshBinary: this.options.virshBinary,
      logger: this.log,
    });
    map.set(key, started);
    started.catch(() => map.delete(key));
    return started;
  }

  /** One running domain's inventory. */
  private async inventory(
    uuid: string,
    name: string,
    stateText: string,
    pids: Map<string, number>,
  ): Promise<LibvirtVmInventory> {
    let step = "dumpxml";
    const qmp = async <T>(command: string, args?: Record<string, unknown>): Promise<T> => {
      step = command;
      const json = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) });
      const { stdout } = await this.shell.run(["qemu-monitor-command", uuid, json]);
      const reply = JSON.parse(stdout.split("\n").find((l) => l.startsWith("{")) ?? "{}") as {
        return?: T;
        error?: { class: string; desc: string };
      };
      if (reply.error || reply.return === undefined) {
        throw new ShadowvmError(
          "libvirt",
          "qmp_failed",
          `QMP ${command} on libvirt domain ${name} failed: ${reply.error?.desc ?? "no reply"}`,
        );
      }
      return reply.return;
    };
    try {
      const dom: DomainDescription = describeDomain((await this.shell.run(["dumpxml", uuid])).stdout);
      const blocks = await qmp<QueryBlockDevice[]>("query-block");
      const peripherals = await qmp<{ name: string; type: string }[]>("qom-list", {
        path: "/machine/peripheral",
      });
      const version = await qmp<{ qemu: { major: number; minor: number; micro: number } }>("query-version");
      const models = new Map(
        peripherals.map((p) => [p.name, /^child<(.+)>$/.exec(p.type)?.[1]] as [string, string | undefined]),
      );
      const disks: DiskInfo[] = [];
      for (const d of dom.disks) {
        const block = blocks.find((b) => qdevId(b.qdev) === d.alias || (b.device && b.device === d.alias));
        const ins = block?.inserted;
        if (!ins) continue; // empty drive (no medium)
        disks.push({
          node: ins["node-name"] ?? block!.device,
          device: d.alias,
          file: d.source || ins.file,
          format: d.format ?? ins.image.format,
          size_bytes: ins.image["virtual-size"],
          backing_file: d.backingChain[0]?.source ?? ins.image["backing-filename"],
          read_only: ins.ro,
        });
      }
      const nics: NicInfo[] = dom.interfaces.map((n) => ({
        model: (n.alias && models.get(n.alias)) || qemuNicModel(n.model),
        mac: n.mac,
        device: n.alias ?? "",
        // libvirt names a NIC's backend "host" + the NIC's alias (net0 -> hostnet0).
        netdev: n.alias ? `host${n.alias}` : undefined,
        netdev_type: qemuNetdevType(n.type),
        host_interface: n.targetDev,
      }));
      const bridge = await this.bridge(uuid, dom.name || name);
      const pid = pids.get(uuid);
      return {
        name: dom.name || name,
        uuid: dom.uuid || uuid,
        state: mapDomainState(stateText),
        vcpus: dom.vcpus,
        memory_mb: Math.round(dom.memoryBytes / (1024 * 1024)),
        machine_type: dom.machine ?? "",
        disks,
        nics,
        command_line: pid ? readCommandLine(pid) : [],
        pid,
        address: bridge.socketPath,
        qemu_version: `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`,
        libvirt: {
          uri: this.uri,
          domain_id: dom.id,
          domain_type: dom.type,
          state_reason: stateText,
          interfaces: dom.interfaces.map((n) => ({ alias: n.alias, type: n.type, source: n.source })),
        },
      };
    } catch (err) {
      if (err instanceof VirshError && (err.code === "not_running" || err.code === "not_found")) {
        throw new ShadowvmError(
          "libvirt",
          "vanished",
          `libvirt domain ${name} disappeared while reading its inventory (${err.libvirtMessage}, during ${step})`,
          { cause: err },
        );
      }
      throw this.describeLibvirtError(err, `reading the inventory of domain ${name} (${step})`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const bridges = [...this.bridges.values(), ...this.extraBridges.values()];
    this.bridges.clear();
    this.extraBridges.clear();
    await Promise.all(bridges.map(async (b) => (await b.catch(() => undefined))?.close()));
    await this.shell.close();
    if (this.ownBridgeDir) rmSync(this.bridgeDir, { recursive: true, force: true });
  }
}

export default function createLibvirtDriver(options: LibvirtDriverOptions = {}): LibvirtDriver {
  return new LibvirtDriver(options);
}
