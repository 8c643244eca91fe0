// The libvirt driver against a real, private libvirtd with real `qemu`-type domains (conformance
// suite), plus the operator-facing errors and the XML/state parsing it relies on.
import { join } from "node:path";
import { ShadowvmError } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  createDomainDisks,
  domainXml,
  type PrivateLibvirtd,
  startPrivateLibvirtd,
} from "../../testing/libvirt-daemon.js";
import { runDriverConformance, type VmSpec } from "../driver-conformance.js";
import { describeDomain, parseXml } from "./domain-xml.js";
import { parseLifecycleLine, parseMonitorEventLine } from "./event-watch.js";
import { LibvirtDriver, mapDomainState } from "./libvirt-driver.js";

runDriverConformance({
  name: "libvirt",
  async createFixture(specs, unreachable) {
    const daemon: PrivateLibvirtd = await startPrivateLibvirtd();
    const diskDir = join(daemon.dir, "images");
    const lost: VmSpec[] = Array.from({ length: unreachable }, (_, i) => ({
      name: `lost-${i}`,
      uuid: `6f1c3a52-0000-4000-8000-0000000009${String(i).padStart(2, "0")}`,
      vcpus: 1,
      memoryMb: 64,
      disks: [{ sizeBytes: 1024 * 1024, format: "raw" }],
      nics: [],
    }));
    try {
      for (const spec of [...specs, ...lost]) {
        await createDomainDisks(spec, diskDir);
        await daemon.define(domainXml(spec, { diskDir }));
        // Paused at start: no guest runs, the inventory is still real libvirt + QEMU output.
        await daemon.virsh("start", "--paused", spec.name);
      }
      // A defined domain whose QEMU died: libvirt lists it, there is nothing to inventory.
      for (const spec of lost) await daemon.killQemu(spec.uuid);
    } catch (err) {
      await daemon.cleanup();
      throw err;
    }
    const driver = new LibvirtDriver({ uri: daemon.uri, bridgeDir: join(daemon.dir, "bridges") });
    return {
      driver,
      async killVm(name) {
        await daemon.killQemu(specs.find((s) => s.name === name)!.uuid);
      },
      async cleanup() {
        await driver.close();
        await daemon.cleanup();
      },
    };
  },
});

test("an unreachable libvirtd is one problem line, and getVm says so", async () => {
  const uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
  const driver = new LibvirtDriver({ uri, bridgeDir: "/tmp/svm-unused-bridges" });
  try {
    const { vms, problems } = await driver.listVms();
    assert.is(vms.length, 0);
    assert.is(problems.length, 1);
    assert.is(problems[0]!.address, uri);
    assert.match(problems[0]!.error, /^cannot reach libvirtd at qemu\+unix/);
    assert.match(problems[0]!.error, /No such file or directory/);
    assert.not.match(problems[0]!.error, /\n/);
    try {
      await driver.getVm("web-1");
      assert.unreachable("getVm must fail");
    } catch (err) {
      assert.instance(err, ShadowvmError);
      assert.is((err as ShadowvmError).code, "unreachable");
      assert.match((err as Error).message, /cannot reach libvirtd/);
    }
  } finally {
    await driver.close();
  }
});

test("reads libvirt's domain XML: disks with backing chains, NICs with source and tap", () => {
  const dom = describeDomain(`<domain type='kvm' id='7'>
  <name>web &amp; db</name>
  <uuid>6F1C3A52-0000-4000-8000-000000000001</uuid>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2' index='2'/>
      <backingStore type='file' index='3'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <alias name='sata0-0-0'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:AA:BB:01'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
  </devices>
</domain>`);
  assert.is(dom.name, "web & db");
  assert.is(dom.uuid, "6f1c3a52-0000-4000-8000-000000000001");
  assert.is(dom.id, 7);
  assert.is(dom.type, "kvm");
  assert.is(dom.memoryBytes, 256 * 1024 * 1024);
  assert.is(dom.vcpus, 2);
  assert.is(dom.machine, "pc-q35-7.2");
  assert.equal(dom.disks[0]!.backingChain, [
    { source: "/var/lib/libvirt/images/base.qcow2", format: "qcow2" },
  ]);
  assert.is(dom.disks[0]!.alias, "virtio-disk0");
  assert.is(dom.disks[1]!.readOnly, true);
  assert.is(dom.disks[1]!.source, "");
  assert.equal(dom.interfaces[0], {
    type: "bridge",
    mac: "52:54:00:aa:bb:01",
    model: "virtio",
    targetDev: "vnet3",
    alias: "net0",
    source: { bridge: "br0" },
  });
  assert.throws(() => parseXml("<domain><name>x</domain>"), /malformed XML/);
});

test("maps libvirt states and parses virsh event lines with QEMU's timestamps", () => {
  assert.is(mapDomainState("running (booted)"), "running");
  assert.is(mapDomainState("paused (user)"), "paused");
  assert.is(mapDomainState("paused (migrating)"), "migrating");
  assert.is(mapDomainState("shut off (crashed)"), "crashed");
  assert.is(mapDomainState("shut off (destroyed)"), "shutdown");
  assert.equal(
    parseMonitorEventLine(
      `event MIGRATION at 1795790389.584006 for domain 'web-1': {"status":"pre-switchover"}`,
    ),
    { event: "MIGRATION", data: { status: "pre-switchover" }, timestampMs: 1795790389584.006 },
  );
  assert.equal(parseMonitorEventLine("event STOP at 12.5 for domain 'a': <null>"), {
    event: "STOP",
    data: {},
    timestampMs: 12500,
  });
  assert.equal(parseLifecycleLine("event 'lifecycle' for domain 'web-1': Stopped Destroyed"), {
    event: "Stopped",
    detail: "Destroyed",
  });
});

test.run();
