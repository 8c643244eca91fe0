// The `qemu` driver: VMs reached through their QMP sockets (plain QEMU, Proxmox's
// /var/run/qemu-server/*.qmp, anything started with `-qmp unix:...`). The inventory is read over
// QMP only, never guessed from command lines, so it describes the machine as it runs now
// (hot-plugged disks and NICs included).
import { ShadowvmError } from "@shadowvm/shared";
import type {
  DiskInfo,
  DriverCapabilities,
  HypervisorDriver,
  InventoryResult,
  NicInfo,
  VmInventory,
  VmState,
} from "../driver.js";
import { loadUsocket } from "../usocket.js";
import { findSocketOwnerPid, readCommandLine } from "./qemu-process.js";
import { QmpClient, QmpError } from "./qmp-client.js";
import { expandSocketGlobs } from "./socket-glob.js";

export const DRIVER_NAME = "qemu";

export interface QemuDriverOptions {
  /** Socket patterns to discover VMs (globs with * and ?). Missing matches are not errors. */
  socketGlobs?: string[];
  /** Sockets named explicitly (e.g. `--qmp PATH`): a missing one is reported as a problem. */
  sockets?: string[];
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
}

interface QueryBlockDevice {
  device: string;
  qdev?: string;
  inserted?: {
    "node-name"?: string;
    file: string;
    drv: string;
    ro: boolean;
    backing_file?: string;
    image: { "virtual-size": number; format: string; "backing-filename"?: string };
  };
}

interface QomProperty {
  name: string;
  type: string;
}

/** Device models that are NICs. QOM has no "is a NIC" flag that QMP can read cheaply. */
const NIC_MODEL = /^(virtio-net|e1000|e1000e|igb|rtl8139|vmxnet3|ne2k_pci|pcnet|i8255|tulip|sungem|usb-net)/;

function mapState(status: string): VmState {
  switch (status) {
    case "running":
      return "running";
    case "paused":
    case "prelaunch":
    case "suspended":
    case "inmigrate":
    case "postmigrate":
    case "finish-migrate":
    case "save-vm":
    case "restore-vm":
    case "debug":
    case "watchdog":
    case "colo":
      return "paused";
    case "shutdown":
      return "shutdown";
    case "guest-panicked":
    case "internal-error":
    case "io-error":
      return "crashed";
    default:
      return "unknown";
  }
}

/** Parses HMP `info network` into netdev id -> {type, ifname} and nic name -> netdev id. */
export function parseInfoNetwork(text: string): Map<string, { type: string; ifname: string | undefined }> {
  const netdevs = new Map<string, { type: string; ifname: string | undefined }>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/^\s*\\\s*/, "").trim();
    const m = /^([^:\s]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const props = new Map(
      m[2]!.split(",").map((kv) => {
        const i = kv.indexOf("=");
        return (i < 0 ? [kv.trim(), ""] : [kv.slice(0, i).trim(), kv.slice(i + 1).trim()]) as [
          string,
          string,
        ];
      }),
    );
    const type = props.get("type");
    if (!type || type === "nic") continue;
    netdevs.set(m[1]!, { type, ifname: props.get("ifname") });
  }
  return netdevs;
}

export class QemuDriver implements HypervisorDriver {
  readonly name = DRIVER_NAME;
  readonly capabilities: DriverCapabilities;
  private readonly options: QemuDriverOptions;

  constructor(options: QemuDriverOptions = {}) {
    this.options = options;
    this.capabilities = {
      fdPassing: loadUsocket() !== null,
      capture: false,
      shadows: false,
      memoryErrorInjection: true,
      nmiInjection: true,
      balloon: true,
      ioThrottling: true,
    };
  }

  /** Every socket to look at: explicit ones first, then discovered ones. */
  socketPaths(): string[] {
    const explicit = this.options.sockets ?? [];
    const found = expandSocketGlobs(this.options.socketGlobs ?? []);
    return [...new Set([...explicit, ...found])];
  }

  async listVms(): Promise<InventoryResult> {
    const result: InventoryResult = { vms: [], problems: [] };
    // One at a time: a QMP socket serves one client, and inventories are cheap.
    for (const path of this.socketPaths()) {
      try {
        result.vms.push(await this.inventory(path));
      } catch (err) {
        result.problems.push({ address: path, error: err instanceof Error ? err.message : String(err) });
      }
    }
    return result;
  }

  async getVm(nameOrUuid: string): Promise<VmInventory> {
    const { vms, problems } = await this.listVms();
    const vm = vms.find((v) => v.name === nameOrUuid || v.uuid === nameOrUuid || v.address === nameOrUuid);
    if (vm) return vm;
    const visible = vms.map((v) => v.name).join(", ") || "none";
    const unreachable = problems.length
      ? `; ${problems.length} socket(s) could not be read: ${problems.map((p) => p.error).join("; ")}`
      : "";
    throw new ShadowvmError(
      "qemu",
      "not_found",
      `no VM named or with uuid "${nameOrUuid}" (visible VMs: ${visible})${unreachable}`,
    );
  }

  /** Opens a QMP connection to one VM: for the capture and shadow code, which need events. */
  connect(path: string, options: { fdPassing?: boolean } = {}): Promise<QmpClient> {
    return QmpClient.connect(path, {
      connectTimeoutMs: this.options.connectTimeoutMs ?? 5000,
      commandTimeoutMs: this.options.commandTimeoutMs ?? 10_000,
      fdPassing: options.fdPassing ?? false,
    });
  }

  /** Reads one VM's inventory over QMP. */
  async inventory(path: string): Promise<VmInventory> {
    const qmp = await this.connect(path);
    let step = "query-name";
    try {
      const run = <T>(command: string, args?: Record<string, unknown>): Promise<T> => {
        step = command;
        return qmp.execute<T>(command, args);
      };
      const nameReply = await run<{ name?: string }>("query-name");
      const { UUID: uuid } = await run<{ UUID: string }>("query-uuid");
      const { status } = await run<{ status: string }>("query-status");
      const cpus = await run<unknown[]>("query-cpus-fast");
      const memory = await run<{ "base-memory": number }>("query-memory-size-summary");
      const machineType = await run<string>("qom-get", { path: "/machine", property: "type" });
      const blocks = await run<QueryBlockDevice[]>("query-block");
      const nics = await this.readNics(qmp, (s) => {
        step = s;
      });
      const version = qmp.greeting?.version.qemu;
      const pid = findSocketOwnerPid(path);
      const fallbackName = path.replace(/^.*\//, "").replace(/\.(qmp|sock|socket)$/, "");
      return {
        name: nameReply.name ?? fallbackName,
        uuid,
        state: mapState(status),
        vcpus: cpus.length,
        memory_mb: Math.round(memory["base-memory"] / (1024 * 1024)),
        machine_type: machineType.replace(/-machine$/, ""),
        disks: blocks.filter((b) => b.inserted).map(toDiskInfo),
        nics,
        command_line: pid ? readCommandLine(pid) : [],
        pid,
        address: path,
        qemu_version: version ? `${version.major}.${version.minor}.${version.micro}` : undefined,
      };
    } catch (err) {
      if (err instanceof QmpError && err.errorClass === "Disconnected") {
        throw new ShadowvmError(
          "qemu",
          "vanished",
          `VM at ${path} disappeared while reading its inventory (QMP connection closed during ${step})`,
          {
            cause: err,
          },
        );
      }
      throw err;
    } finally {
      qmp.close();
    }
  }

  private async readNics(qmp: QmpClient, onStep: (s: string) => void): Promise<NicInfo[]> {
    onStep("human-monitor-command info network");
    const netdevs = parseInfoNetwork(await qmp.hmp("info network"));
    const nics: NicInfo[] = [];
    for (const container of ["/machine/peripheral", "/machine/peripheral-anon"]) {
      onStep(`qom-list ${container}`);
      const children = await qmp.execute<QomProperty[]>("qom-list", { path: container });
      for (const child of children) {
        const model = /^child<(.+)>$/.exec(child.type)?.[1];
        if (!model || !NIC_MODEL.test(model)) continue;
        const devPath = `${container}/${child.name}`;
        onStep(`qom-get ${devPath}`);
        const mac = await qmp.execute<string>("qom-get", { path: devPath, property: "mac" });
        const netdev = await qmp
          .execute<string>("qom-get", { path: devPath, property: "netdev" })
          .catch(() => "");
        const backend = netdev ? netdevs.get(netdev) : undefined;
        nics.push({
          model,
          mac: mac.toLowerCase(),
          device: child.name,
          netdev: netdev || undefined,
          netdev_type: backend?.type,
          host_interface: backend?.ifname,
        });
      }
    }
    return nics;
  }

  async close(): Promise<void> {
    // Connections are per call; nothing is held open between calls.
  }
}

function toDiskInfo(b: QueryBlockDevice): DiskInfo {
  const ins = b.inserted!;
  return {
    node: ins["node-name"] ?? b.device,
    device:
      b.qdev?.replace(/^\/machine\/peripheral(-anon)?\//, "").replace(/\/virtio-backend$/, "") ||
      b.device ||
      undefined,
    file: ins.file,
    format: ins.image.format ?? ins.drv,
    size_bytes: ins.image["virtual-size"],
    backing_file: ins.image["backing-filename"] ?? ins["backing_file"],
    read_only: ins.ro,
  };
}

export default function createQemuDriver(options: QemuDriverOptions = {}): QemuDriver {
  return new QemuDriver(options);
}
