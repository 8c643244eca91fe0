// The conformance suite every hypervisor driver passes (fake, qemu, libvirt). A driver's test file
// supplies a fixture that creates the VMs described by the suite in that driver's world (real
// QEMU processes for `qemu`, in-memory records for `fake`) and the suite checks what the driver
// reports against the description. Mirrors hono's `runTest({ newRouter })` pattern.
import { ShadowvmError } from "@shadowvm/shared";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { HypervisorDriver } from "./driver.js";

export interface VmSpec {
  name: string;
  uuid: string;
  vcpus: number;
  memoryMb: number;
  disks: { sizeBytes: number; format: "qcow2" | "raw" }[];
  nics: { mac: string }[];
}

export interface DriverFixture {
  driver: HypervisorDriver;
  /** Makes the VM unreachable the way it happens in that world (process killed, ...). */
  killVm(name: string): Promise<void>;
  cleanup(): Promise<void>;
}

export interface ConformanceOptions {
  name: string;
  /** Creates the VMs, plus `unreachable` endpoints that exist in the config but do not answer. */
  createFixture(vms: VmSpec[], unreachable: number): Promise<DriverFixture>;
}

export const CONFORMANCE_VMS: VmSpec[] = [
  {
    name: "web-1",
    uuid: "6f1c3a52-0000-4000-8000-000000000001",
    vcpus: 2,
    memoryMb: 192,
    disks: [
      { sizeBytes: 64 * 1024 * 1024, format: "qcow2" },
      { sizeBytes: 16 * 1024 * 1024, format: "raw" },
    ],
    nics: [{ mac: "52:54:00:5a:00:01" }, { mac: "52:54:00:5a:00:02" }],
  },
  {
    name: "db-1",
    uuid: "6f1c3a52-0000-4000-8000-000000000002",
    vcpus: 1,
    memoryMb: 128,
    disks: [{ sizeBytes: 32 * 1024 * 1024, format: "qcow2" }],
    nics: [{ mac: "52:54:00:5a:00:03" }],
  },
];

export function runDriverConformance(options: ConformanceOptions): void {
  const test = suite(`driver conformance: ${options.name}`);
  let fixture: DriverFixture;

  test.before(async () => {
    fixture = await options.createFixture(CONFORMANCE_VMS, 1);
  });
  test.after(async () => {
    await fixture?.cleanup();
  });

  test("announces every capability as a boolean", () => {
    const caps = fixture.driver.capabilities;
    for (const key of [
      "fdPassing",
      "capture",
      "shadows",
      "memoryErrorInjection",
      "nmiInjection",
      "balloon",
      "ioThrottling",
    ]) {
      assert.type((caps as unknown as Record<string, unknown>)[key], "boolean", key);
    }
  });

  test("lists every VM with the configured vCPUs, RAM, disks and NICs", async () => {
    const { vms } = await fixture.driver.listVms();
    assert.equal(vms.map((v) => v.name).sort(), CONFORMANCE_VMS.map((v) => v.name).sort());
    for (const spec of CONFORMANCE_VMS) {
      const vm = vms.find((v) => v.name === spec.name)!;
      assert.is(vm.uuid, spec.uuid);
      assert.is(vm.vcpus, spec.vcpus);
      assert.is(vm.memory_mb, spec.memoryMb);
      assert.ok(["running", "paused"].includes(vm.state), `state ${vm.state}`);
      assert.equal(
        vm.disks.map((d) => [d.format, d.size_bytes]).sort(),
        spec.disks.map((d) => [d.format, d.sizeBytes]).sort(),
      );
      for (const d of vm.disks) {
        assert.ok(d.node.length > 0, "disk node name");
        assert.ok(d.file.length > 0, "disk file");
      }
      assert.equal(vm.nics.map((n) => n.mac).sort(), spec.nics.map((n) => n.mac).sort());
      for (const n of vm.nics) assert.ok(n.model.length > 0, "nic model");
      assert.ok(vm.address.length > 0);
    }
  });

  test("reports an unreachable endpoint as a problem without failing the listing", async () => {
    const { vms, problems } = await fixture.driver.listVms();
    assert.is(vms.length, CONFORMANCE_VMS.length);
    assert.is(problems.length, 1);
    assert.ok(problems[0]!.error.length > 10, "the problem says what is wrong");
    assert.not.match(problems[0]!.error, /\n\s+at /, "no stack trace");
  });

  test("finds one VM by name and by uuid", async () => {
    const spec = CONFORMANCE_VMS[1]!;
    assert.is((await fixture.driver.getVm(spec.name)).uuid, spec.uuid);
    assert.is((await fixture.driver.getVm(spec.uuid)).name, spec.name);
  });

  test("an unknown VM is a not_found error that lists the visible VMs", async () => {
    try {
      await fixture.driver.getVm("no-such-vm");
      assert.unreachable("getVm should throw");
    } catch (err) {
      assert.instance(err, ShadowvmError);
      assert.is((err as ShadowvmError).code, "not_found");
      assert.match((err as Error).message, "no-such-vm");
      assert.match((err as Error).message, "web-1");
    }
  });

  test("a VM that goes away becomes a problem entry, the others stay listed", async () => {
    await fixture.killVm("db-1");
    const { vms, problems } = await fixture.driver.listVms();
    assert.equal(
      vms.map((v) => v.name),
      ["web-1"],
    );
    assert.is(problems.length, 2);
  });

  test.run();
}
