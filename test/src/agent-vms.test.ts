// `shadowvm-agent vms` end to end: the demo guest booted under real QEMU and read through the
// agent's command line, plus the one-line errors an operator gets for bad input.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { withDemoVm } from "./support/demo-guest.js";
import { AGENT_BIN, type CliResult, runCli } from "./support/run-cli.js";

const dir = mkdtempSync(join(tmpdir(), "svm-vms-"));
// Keep the configured default globs from finding VMs of other tests running on this machine.
const isolated = { SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: `[${join(dir, "none", "*.qmp")}]` };

function assertOneErrorLine(res: CliResult, pattern: RegExp | string): void {
  const lines = res.stderr.trim().split("\n");
  assert.is(lines.filter((l) => l.startsWith("shadowvm-agent: error:")).length, 1, res.stderr);
  assert.match(lines[0]!, pattern);
  assert.not.match(res.stderr, /\n\s+at .*\(/, "no stack trace");
}

test("vms shows the demo VM's vCPUs, RAM, disks and MAC as read over QMP", async () => {
  await withDemoVm({ name: "vms-e2e", memoryMb: 192, vcpus: 2 }, async (vm) => {
    const json = await runCli(AGENT_BIN, ["vms", "--json", "--qmp", vm.qmpSocket], { env: isolated });
    assert.is(json.code, 0, json.stderr);
    const vms = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    assert.is(vms.length, 1);
    const inv = vms[0] as {
      name: string;
      uuid: string;
      state: string;
      vcpus: number;
      memory_mb: number;
      disks: { node: string; file: string; format: string; size_bytes: number }[];
      nics: { model: string; mac: string }[];
      pid: number;
    };
    assert.is(inv.name, "vms-e2e");
    assert.is(inv.uuid, vm.uuid);
    assert.is(inv.state, "running");
    assert.is(inv.vcpus, 2);
    assert.is(inv.memory_mb, 192);
    assert.equal(
      inv.disks.map((d) => [d.node, d.file, d.format, d.size_bytes]),
      [["disk0", vm.disk, "qcow2", vm.guest.data_disk.virtual_mb * 1024 * 1024]],
    );
    assert.equal(
      inv.nics,
      [
        {
          model: "virtio-net-pci",
          mac: vm.mac,
          device: "net0-dev",
          netdev: "net0",
          netdev_type: "user",
          host_interface: undefined,
        },
      ].map((n) => JSON.parse(JSON.stringify(n))),
    );
    assert.is(inv.pid, vm.pid);

    const table = await runCli(AGENT_BIN, ["vms", "--qmp", vm.qmpSocket], { env: isolated });
    assert.is(table.code, 0);
    assert.match(table.stdout, /^NAME\s+UUID\s+STATE\s+VCPUS\s+MEMORY\s+DISKS\s+NICS/);
    assert.match(
      table.stdout,
      new RegExp(
        `vms-e2e\\s+${vm.uuid}\\s+running\\s+2\\s+192M\\s+disk0:qcow2:64M\\s+virtio-net-pci/${vm.mac}`,
      ),
    );
  });
});

test("a missing socket gives one clear error line and exit code 1", async () => {
  const res = await runCli(AGENT_BIN, ["vms", "--qmp", join(dir, "missing.qmp")], { env: isolated });
  assert.is(res.code, 1);
  assertOneErrorLine(res, /no QMP socket at .*missing\.qmp/);
});

test("a socket that does not speak QMP gives one clear error line", async () => {
  const path = join(dir, "ssh.sock");
  const server = createServer((s) => s.end("SSH-2.0-OpenSSH_9.2\r\n"));
  await new Promise<void>((r) => server.listen(path, r));
  try {
    const res = await runCli(AGENT_BIN, ["vms", "--qmp", path], { env: isolated });
    assert.is(res.code, 1);
    assertOneErrorLine(res, /does not speak QMP/);
  } finally {
    server.close();
  }
});

test("a VM that disappears mid-query gives one clear error line", async () => {
  const path = join(dir, "vanishing.qmp");
  const greeting = JSON.stringify({
    QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "" }, capabilities: [] },
  });
  const server = createServer((s) => {
    s.write(`${greeting}\r\n`);
    let n = 0;
    s.on("data", (d) => {
      for (const line of d.toString().split("\n").filter(Boolean)) {
        const { id } = JSON.parse(line);
        // Answer capabilities and the first queries like QEMU, then die like a killed VM.
        if (n++ < 2) s.write(`${JSON.stringify({ return: n === 2 ? { name: "doomed" } : {}, id })}\r\n`);
        else s.destroy();
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  try {
    const res = await runCli(AGENT_BIN, ["vms", "--qmp", path], { env: isolated });
    assert.is(res.code, 1);
    assertOneErrorLine(
      res,
      /disappeared while reading its inventory \(QMP connection closed during query-uuid\)/,
    );
  } finally {
    server.close();
  }
});

test("bad config names the key, the expected and the actual value; exit code 2", async () => {
  const file = join(dir, "agent.yaml");
  writeFileSync(file, "hypervisor:\n  connect_timeout_ms: soon\n");
  const res = await runCli(AGENT_BIN, ["vms", "--config", file], { env: isolated });
  assert.is(res.code, 2);
  assertOneErrorLine(res, /hypervisor\.connect_timeout_ms is invalid: expected number \(actual: "soon"\)/);

  const env = await runCli(AGENT_BIN, ["vms"], { env: { ...isolated, SHADOWVM_AGENT__AGENT_ID: "bad id!" } });
  assert.is(env.code, 2);
  assertOneErrorLine(env, /agent_id is invalid: .*\(actual: "bad id!"\)/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
