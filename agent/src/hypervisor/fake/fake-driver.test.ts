import type { VmInventory } from "../driver.js";
import { runDriverConformance } from "../driver-conformance.js";
import { FakeDriver } from "./fake-driver.js";

runDriverConformance({
  name: "fake",
  async createFixture(specs, unreachable) {
    const driver = new FakeDriver();
    for (const spec of specs) {
      const vm: VmInventory = {
        name: spec.name,
        uuid: spec.uuid,
        state: "running",
        vcpus: spec.vcpus,
        memory_mb: spec.memoryMb,
        machine_type: "pc-q35-7.2",
        disks: spec.disks.map((d, i) => ({
          node: `disk${i}`,
          device: `vd${i}`,
          file: `/fake/${spec.name}-${i}.${d.format}`,
          format: d.format,
          size_bytes: d.sizeBytes,
          backing_file: undefined,
          read_only: false,
        })),
        nics: spec.nics.map((n, i) => ({
          model: "virtio-net-pci",
          mac: n.mac,
          device: `nic${i}`,
          netdev: `net${i}`,
          netdev_type: "user",
          host_interface: undefined,
        })),
        command_line: [],
        pid: undefined,
        address: `fake://${spec.name}`,
        qemu_version: undefined,
      };
      driver.addVm(vm);
    }
    for (let i = 0; i < unreachable; i++)
      driver.breakVm(`fake://unreachable-${i}`, "endpoint does not answer");
    return {
      driver,
      async killVm(name) {
        driver.breakVm(`fake://${name}`, `VM ${name} is gone`);
      },
      async cleanup() {},
    };
  },
});
