// The hypervisor driver interface: everything the agent does to VMs goes through one of these.
// Drivers: `qemu` (QMP sockets; plain QEMU and Proxmox), `libvirt`, and `fake` (in-process, a real
// implementation of the interface for unit tests). One conformance suite (driver-conformance.ts)
// runs against every driver.
//
// Optional abilities are announced in `capabilities`; callers check them instead of catching
// "not implemented" (e.g. a host without fd passing cannot capture through `getfd`).

export type VmState = "running" | "paused" | "shutdown" | "crashed" | "migrating" | "unknown";

export interface DiskInfo {
  /** Block node name of the device's root node (what block jobs and snapshots address). */
  node: string;
  /** Guest-visible device id (qdev id), when known. */
  device: string | undefined;
  file: string;
  format: string;
  /** Virtual size the guest sees. */
  size_bytes: number;
  /** Backing file of the image, if any. */
  backing_file: string | undefined;
  read_only: boolean;
}

export interface NicInfo {
  /** QEMU device model, e.g. virtio-net-pci, e1000. */
  model: string;
  mac: string;
  /** qdev id of the NIC. */
  device: string;
  netdev: string | undefined;
  /** Backend type: user, tap, bridge, vhost-user, ... */
  netdev_type: string | undefined;
  /** Host-side interface (tap name), when the backend has one. */
  host_interface: string | undefined;
}

export interface VmInventory {
  name: string;
  uuid: string;
  state: VmState;
  vcpus: number;
  memory_mb: number;
  machine_type: string;
  disks: DiskInfo[];
  nics: NicInfo[];
  /** QEMU command line (argv), when the QEMU process is visible to the agent. */
  command_line: string[];
  pid: number | undefined;
  /** Where the driver reached it (QMP socket path, libvirt domain URI, ...). */
  address: string;
  qemu_version: string | undefined;
}

export interface DriverCapabilities {
  /** Can pass file descriptors to the hypervisor (capture to an fd). */
  fdPassing: boolean;
  /** Live consistent capture (memory + disk at one instant). */
  capture: boolean;
  /** Shadows from captures. */
  shadows: boolean;
  /** Machine-check (memory error) injection. */
  memoryErrorInjection: boolean;
  /** NMI injection. */
  nmiInjection: boolean;
  /** Balloon device for memory pressure. */
  balloon: boolean;
  /** Block I/O throttling. */
  ioThrottling: boolean;
}

/** A VM the driver can see but could not inventory, and why (one line for the operator). */
export interface InventoryProblem {
  address: string;
  error: string;
}

export interface InventoryResult {
  vms: VmInventory[];
  problems: InventoryProblem[];
}

export interface HypervisorDriver {
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  /** Every VM the driver can see. One unreachable VM is a problem entry, not a failure of the call. */
  listVms(): Promise<InventoryResult>;
  /** One VM by name or uuid; throws a ShadowvmError with code "not_found" when it does not exist. */
  getVm(nameOrUuid: string): Promise<VmInventory>;
  /** Releases connections and resources. */
  close(): Promise<void>;
}
