// The `fake` driver: an in-process hypervisor holding VMs in memory. A real implementation of the
// driver interface (it passes the same conformance suite as the qemu driver), used by unit tests
// of everything above the driver layer. Never used on the real path.
import { ShadowvmError } from "@shadowvm/shared";
import type { DriverCapabilities, HypervisorDriver, InventoryResult, VmInventory } from "../driver.js";

export const DRIVER_NAME = "fake";

export class FakeDriver implements HypervisorDriver {
  readonly name = DRIVER_NAME;
  readonly capabilities: DriverCapabilities = {
    fdPassing: false,
    capture: false,
    shadows: false,
    memoryErrorInjection: false,
    nmiInjection: false,
    balloon: false,
    ioThrottling: false,
  };
  private readonly vms = new Map<string, VmInventory>();
  /** Addresses that exist but do not answer, with the error they give. */
  private readonly broken = new Map<string, string>();

  addVm(vm: VmInventory): void {
    this.vms.set(vm.address, structuredClone(vm));
  }

  /** Simulates a VM whose endpoint exists but cannot be read (crashed, stale socket, ...). */
  breakVm(address: string, error: string): void {
    this.vms.delete(address);
    this.broken.set(address, error);
  }

  async listVms(): Promise<InventoryResult> {
    return {
      vms: [...this.vms.values()].map((vm) => structuredClone(vm)),
      problems: [...this.broken].map(([address, error]) => ({ address, error })),
    };
  }

  async getVm(nameOrUuid: string): Promise<VmInventory> {
    const { vms } = await this.listVms();
    const vm = vms.find((v) => v.name === nameOrUuid || v.uuid === nameOrUuid || v.address === nameOrUuid);
    if (vm) return vm;
    throw new ShadowvmError(
      DRIVER_NAME,
      "not_found",
      `no VM named or with uuid "${nameOrUuid}" (visible VMs: ${vms.map((v) => v.name).join(", ") || "none"})`,
    );
  }

  async close(): Promise<void> {}
}

export default function createFakeDriver(): FakeDriver {
  return new FakeDriver();
}
