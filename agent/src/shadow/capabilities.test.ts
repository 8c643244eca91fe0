import { test } from "uvu";
import * as assert from "uvu/assert";
import { demoVmArgs } from "../demo/demo-vm.js";
import type { VmInventory } from "../hypervisor/driver.js";
import { captureDevices, checkProfile, type LabCapabilities, profileNeeds } from "./capabilities.js";
import type { RestoredCapture } from "./restored-capture.js";
import { buildShadowCommandLine } from "./shadow-command-line.js";

const argv = [
  "qemu-system-x86_64",
  ...demoVmArgs({
    name: "prod",
    uuid: "00000000-0000-0000-0000-000000000001",
    memoryMb: 256,
    vcpus: 1,
    kernel: "/g/vmlinuz",
    initrd: "/g/initrd.img",
    cmdline: "console=ttyS0",
    disk: "/vm/disk0.qcow2",
    diskBacking: "/g/data.qcow2",
    httpPort: 8080,
    mac: "52:54:00:00:00:01",
    consoleLog: "/vm/console.log",
    qmpSocket: "/vm/qmp.sock",
    guestChannelSocket: "/vm/guest.sock",
  }),
];

const capture: RestoredCapture = {
  captureId: "cap-1",
  vm: "prod",
  dir: "/r",
  memoryFile: "/r/memory.migration",
  disks: [
    {
      node: "disk0",
      device: "virtio-disk0",
      productionFile: "/vm/disk0.qcow2",
      top: "/r/disk-disk0-0.qcow2",
      format: "qcow2",
      sizeBytes: 64 << 20,
    },
  ],
  inventory: { memory_mb: 256 } as VmInventory,
  productionArgv: argv,
  guestAddresses: [],
};

const all = (over: Partial<LabCapabilities> = {}): LabCapabilities => {
  const names = [
    "cpu_contention",
    "memory_pressure",
    "io_throttling",
    "net_impairment",
    "netns_isolation",
    "tbf",
    "netem",
    "disk_io_error",
    "memory_error",
    "net_latency_spike",
    "nmi",
    "process_kill",
    "disk_fill",
    "clock_jump",
  ] as const;
  return { ...Object.fromEntries(names.map((n) => [n, { available: true }])), ...over } as LabCapabilities;
};

const base = {
  cpu_load: 0,
  memory_load: 0,
  io_load: 0,
  net_latency_ms: 0,
  net_loss_pct: 0,
  faults: [],
  duration_s: 60,
};

test("the demo VM's devices: balloon, guest channel, -cpu max, -blockdev disks, a NIC, x86", () => {
  assert.equal(captureDevices(capture), {
    balloon: true,
    guestChannel: true,
    cpuModel: "max",
    blockdevDisks: true,
    nics: 1,
    x86: true,
  });
});

test("what a profile needs", () => {
  assert.equal(profileNeeds(base), []);
  assert.equal(profileNeeds({ ...base, cpu_load: 1 }), [], "cpu_load 1 = exactly its share: nothing to do");
  assert.equal(
    profileNeeds({
      ...base,
      cpu_load: 2,
      memory_load: 0.5,
      io_load: 3,
      net_loss_pct: 1,
      faults: [
        { kind: "nmi", rate: 1, at_s: 1 },
        { kind: "nmi", rate: 1, at_s: 2 },
      ],
    }),
    ["cpu_contention", "memory_pressure", "io_throttling", "net_impairment", "nmi"],
  );
  assert.equal(profileNeeds(base, 1000, "netns"), ["tbf", "netns_isolation"]);
});

test("a profile asking for a missing capability is refused up front, naming it and why", () => {
  checkProfile({ ...base, cpu_load: 3 }, all());
  const caps = all({
    cpu_contention: { available: false, reason: "no cgroup hierarchy with the cpu controller is mounted" },
    disk_io_error: { available: false, reason: "qemu-system-x86_64 has no blkdebug block driver" },
  });
  assert.throws(
    () =>
      checkProfile({ ...base, cpu_load: 3, faults: [{ kind: "disk_io_error", rate: 0.5, at_s: 5 }] }, caps, {
        label: "stress profile 2",
      }),
    (err: Error) =>
      /^stress profile 2 needs cpu_contention \(no cgroup hierarchy with the cpu controller is mounted\), disk_io_error \(qemu-system-x86_64 has no blkdebug block driver\), which this host cannot do$/.test(
        err.message,
      ),
  );
});

test("shadow command line: named layers, the agent's monitor, netns taps and a slirp state sink", () => {
  const disks = [
    {
      node: "disk0",
      productionFile: "/vm/disk0.qcow2",
      overlay: "/s/overlay-disk0.qcow2",
      backing: { file: "/r/disk-disk0-0.qcow2", format: "qcow2" },
    },
  ];
  const common = {
    productionArgv: argv,
    shadowName: "s1",
    disks,
    qmpSocket: "/s/qmp.sock",
    agentQmpSocket: "/s/qmp-agent.sock",
    consoleLog: "/s/console.log",
    socketDir: "/s",
  };
  const user = buildShadowCommandLine({
    ...common,
    network: { mode: "user", forwards: [{ hostPort: 5555, guestPort: 80 }] },
  });
  assert.equal(user.disks, [{ node: "disk0", fileNode: "disk0-svm-file", backingNode: "disk0-svm-base" }]);
  const blockdev = JSON.parse(user.args[user.args.lastIndexOf("-blockdev") + 1]!);
  assert.equal(blockdev.file, {
    driver: "file",
    "node-name": "disk0-svm-file",
    filename: "/s/overlay-disk0.qcow2",
  });
  assert.is(blockdev.backing["node-name"], "disk0-svm-base");
  assert.is(blockdev.backing["read-only"], true);
  assert.is(blockdev.backing.file["read-only"], true);
  assert.ok(user.args.includes("unix:/s/qmp-agent.sock,server=on,wait=off"));
  assert.ok(user.args.includes("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:5555-:80"));
  assert.equal(user.taps, []);
  assert.not.ok(user.args.join(" ").includes("/vm/disk0.qcow2"), "production's disk is never opened");

  const ns = buildShadowCommandLine({ ...common, network: { mode: "netns", tapPrefix: "svmtap" } });
  assert.equal(ns.taps, [{ name: "svmtap0", id: "net0", originalType: "user" }]);
  assert.ok(ns.args.includes("tap,id=net0,ifname=svmtap0,script=no,downscript=no"));
  assert.ok(
    ns.args.includes("user,id=svm-slirp-state0,restrict=on"),
    "production's slirp state lands somewhere harmless",
  );
  assert.not.ok(ns.args.some((a) => a.includes("hostfwd")));
});

test.run();
