import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ShadowvmError } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  type DemoVmArgsInput,
  defaultGuestDir,
  demoVmArgs,
  GUEST_CHANNEL_NAME,
  guestBuildScript,
  macForName,
  readGuestDescription,
  startDemoVm,
} from "./demo-vm.js";

const base: DemoVmArgsInput = {
  name: "web1",
  uuid: "11111111-2222-3333-4444-555555555555",
  memoryMb: 256,
  vcpus: 2,
  kernel: "/g/vmlinuz",
  initrd: "/g/initrd.img",
  cmdline: "console=ttyS0 panic=-1 shadowvm.leak_kb_s=64",
  disk: "/w/disk0.qcow2",
  diskBacking: "/g/data.qcow2",
  httpPort: 18080,
  mac: "52:54:00:aa:bb:cc",
  consoleLog: "/w/console.log",
  qmpSocket: "/w/qmp.sock",
  guestChannelSocket: "/w/guest.sock",
  pidFile: "/w/qemu.pid",
};

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ""] : []));
}

test("demoVmArgs: machine, identity, console, QMP and kernel", () => {
  const args = demoVmArgs(base);
  assert.equal(values(args, "-machine"), ["q35,accel=tcg"]);
  assert.equal(values(args, "-cpu"), ["max"]);
  assert.equal(values(args, "-m"), ["256"]);
  assert.equal(values(args, "-smp"), ["2"]);
  assert.equal(values(args, "-name"), ["web1,process=qemu-web1"]);
  assert.equal(values(args, "-uuid"), [base.uuid]);
  assert.ok(args.includes("-nodefaults"));
  assert.equal(values(args, "-display"), ["none"]);
  assert.equal(values(args, "-qmp"), ["unix:/w/qmp.sock,server=on,wait=off"]);
  assert.equal(values(args, "-kernel"), ["/g/vmlinuz"]);
  assert.equal(values(args, "-initrd"), ["/g/initrd.img"]);
  assert.equal(values(args, "-append"), [base.cmdline]);
  assert.equal(values(args, "-action"), ["panic=none"]);
  assert.equal(values(args, "-pidfile"), ["/w/qemu.pid"]);
  const chardevs = values(args, "-chardev");
  assert.ok(chardevs.includes("file,id=charserial0,path=/w/console.log"));
  assert.ok(chardevs.includes("socket,id=charchannel0,path=/w/guest.sock,server=on,wait=off"));
});

test("demoVmArgs: devices with stable ids, overlay disk with explicit node names", () => {
  const args = demoVmArgs(base);
  assert.equal(values(args, "-blockdev"), [
    "driver=file,node-name=disk0-base-file,filename=/g/data.qcow2,read-only=on",
    "driver=qcow2,node-name=disk0-base,file=disk0-base-file,read-only=on",
    "driver=file,node-name=disk0-file,filename=/w/disk0.qcow2",
    "driver=qcow2,node-name=disk0,file=disk0-file,backing=disk0-base",
  ]);
  assert.equal(values(args, "-device"), [
    "isa-serial,chardev=charserial0,id=serial0",
    "pvpanic",
    "virtio-blk-pci,drive=disk0,id=virtio-disk0",
    "virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc,id=net0-dev",
    "virtio-balloon-pci,id=balloon0",
    "virtio-serial-pci,id=virtio-serial0",
    `virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,name=${GUEST_CHANNEL_NAME}`,
  ]);
  assert.equal(values(args, "-netdev"), ["user,id=net0,hostfwd=tcp:127.0.0.1:18080-:80"]);
});

test("demoVmArgs: standalone disk, restricted network, panic action, commas escaped, extra args last", () => {
  const { diskBacking: _unused, ...rest } = base;
  const args = demoVmArgs({
    ...rest,
    disk: "/w,x/disk0.qcow2",
    consoleLog: "/w,x/console.log",
    restrictNetwork: true,
    panicAction: "pause",
    extraArgs: ["-S"],
  });
  assert.equal(values(args, "-blockdev"), [
    "driver=file,node-name=disk0-file,filename=/w,,x/disk0.qcow2",
    "driver=qcow2,node-name=disk0,file=disk0-file",
  ]);
  assert.equal(values(args, "-netdev"), ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18080-:80"]);
  assert.equal(values(args, "-action"), ["panic=pause"]);
  assert.ok(values(args, "-chardev").includes("file,id=charserial0,path=/w,,x/console.log"));
  assert.is(args.at(-1), "-S");
});

test("demoVmArgs is pure: same input, same output, input untouched", () => {
  const copy = structuredClone(base);
  assert.equal(demoVmArgs(base), demoVmArgs(base));
  assert.equal(base, copy);
});

test("macForName: stable, QEMU prefix, differs by name", () => {
  assert.is(macForName("web1"), macForName("web1"));
  assert.match(macForName("web1"), /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.is.not(macForName("web1"), macForName("web2"));
});

test("defaultGuestDir and guestBuildScript", () => {
  assert.is(defaultGuestDir({ SHADOWVM_CACHE: "/c" }), "/c/guest");
  assert.match(defaultGuestDir({}), /\.cache\/shadowvm\/guest$/);
  assert.match(guestBuildScript(), /deploy\/guest\/build-guest-image\.sh$/);
});

function fakeGuestDir(root: string): string {
  const dir = join(root, "guest");
  mkdirSync(dir);
  for (const f of ["vmlinuz", "initrd.img", "data.qcow2"]) writeFileSync(join(dir, f), "x");
  writeFileSync(
    join(dir, "guest.json"),
    JSON.stringify({
      schema: 1,
      kernel: { file: "vmlinuz" },
      initrd: { file: "initrd.img" },
      data_disk: { file: "data.qcow2" },
      cmdline: "console=ttyS0",
      memory_mb: 256,
      ready_line: "shadowvm-guest: ready",
    }),
  );
  return dir;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<ShadowvmError> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, ShadowvmError);
    assert.is((err as ShadowvmError).code, code, (err as Error).message);
    return err as ShadowvmError;
  }
  throw new Error(`expected a rejection with code ${code}`);
}

test("readGuestDescription: missing or incomplete image is a clear error", async () => {
  const root = mkdtempSync(join(tmpdir(), "demo-vm-test-"));
  try {
    const err = await rejectsWith(readGuestDescription(join(root, "nothing")), "no-image");
    assert.match(err.message, /build-guest-image\.sh/);
    const dir = fakeGuestDir(root);
    assert.is((await readGuestDescription(dir)).cmdline, "console=ttyS0");
    rmSync(join(dir, "initrd.img"));
    await rejectsWith(readGuestDescription(dir), "no-image");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("startDemoVm: a QEMU that exits at once fails fast with its log; a missing binary too", async () => {
  const root = mkdtempSync(join(tmpdir(), "demo-vm-test-"));
  try {
    const guestDir = fakeGuestDir(root);
    const fakeQemu = join(root, "fake-qemu");
    writeFileSync(fakeQemu, "#!/bin/sh\necho 'qemu: something is wrong with -blockdev' >&2\nexit 1\n", {
      mode: 0o755,
    });
    const t0 = Date.now();
    const err = await rejectsWith(
      startDemoVm({
        name: "bad",
        workDir: join(root, "vm"),
        guestDir,
        qemuBinary: fakeQemu,
        diskMode: "copy",
      }),
      "qemu-failed",
    );
    assert.match(err.message, /something is wrong with -blockdev/);
    assert.ok(Date.now() - t0 < 10_000, "did not wait for the start deadline");
    assert.ok(readdirSync(join(root, "vm")).includes("disk0.qcow2"));

    const err2 = await rejectsWith(
      startDemoVm({
        name: "bad2",
        workDir: join(root, "vm2"),
        guestDir,
        qemuBinary: join(root, "no-such-qemu"),
        diskMode: "copy",
      }),
      "qemu-failed",
    );
    assert.match(err2.message, /ENOENT/);
    await rejectsWith(startDemoVm({ name: "bad name", workDir: join(root, "vm3"), guestDir }), "invalid");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test.run();
