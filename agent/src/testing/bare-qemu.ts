// Real QEMU processes for driver tests: machines with the requested vCPUs, RAM, disks and NICs,
// started paused (-S) with no guest OS, so their inventory is real QMP output at almost no CPU
// cost. Boot-level tests use the demo guest instead (agent/src/demo).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "@shadowvm/shared";
import type { VmSpec } from "../hypervisor/driver-conformance.js";

export interface BareQemu {
  spec: VmSpec;
  qmpSocket: string;
  process: ChildProcess;
  kill(): Promise<void>;
}

export interface BareQemuHost {
  dir: string;
  vms: BareQemu[];
  start(spec: VmSpec): Promise<BareQemu>;
  cleanup(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export function createBareQemuHost(): BareQemuHost {
  const dir = mkdtempSync(join(tmpdir(), "shadowvm-bare-qemu-"));
  const vms: BareQemu[] = [];

  async function start(spec: VmSpec): Promise<BareQemu> {
    const vmDir = join(dir, spec.name);
    execFileSync("mkdir", ["-p", vmDir]);
    const qmpSocket = join(vmDir, "qmp.sock");
    const args = [
      "-machine",
      "q35,accel=tcg",
      "-cpu",
      "max",
      "-S",
      "-display",
      "none",
      "-nodefaults",
      "-name",
      spec.name,
      "-uuid",
      spec.uuid,
      "-m",
      String(spec.memoryMb),
      "-smp",
      String(spec.vcpus),
      "-qmp",
      `unix:${qmpSocket},server=on,wait=off`,
    ];
    spec.disks.forEach((disk, i) => {
      const file = join(vmDir, `disk${i}.${disk.format}`);
      execFileSync("qemu-img", ["create", "-q", "-f", disk.format, file, String(disk.sizeBytes)]);
      args.push(
        "-blockdev",
        `driver=file,filename=${file},node-name=disk${i}-file`,
        "-blockdev",
        `driver=${disk.format},file=disk${i}-file,node-name=disk${i}`,
        "-device",
        `virtio-blk-pci,drive=disk${i},id=virtio-disk${i}`,
      );
    });
    spec.nics.forEach((nic, i) => {
      args.push(
        "-netdev",
        `user,id=net${i},restrict=on`,
        "-device",
        `virtio-net-pci,netdev=net${i},mac=${nic.mac},id=nic${i}`,
      );
    });
    const child = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (d) => {
      stderr += d;
    });
    await waitFor(
      () =>
        existsSync(qmpSocket) ||
        (child.exitCode !== null && Promise.reject(new Error(`qemu exited: ${stderr}`))),
      {
        timeoutMs: 30_000,
        what: `QMP socket of ${spec.name}`,
      },
    );
    const vm: BareQemu = {
      spec,
      qmpSocket,
      process: child,
      async kill() {
        child.kill("SIGKILL");
        await exited(child);
      },
    };
    vms.push(vm);
    return vm;
  }

  return {
    dir,
    vms,
    start,
    async cleanup() {
      await Promise.all(vms.map((vm) => vm.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
