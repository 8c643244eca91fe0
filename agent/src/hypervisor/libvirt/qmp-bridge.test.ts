// The QMP bridge to libvirt domains against a real, private libvirtd whose QEMUs run as
// libvirt-qemu (as on a stock Debian host): QMP semantics, events with QEMU's timestamps, fd
// passing, files passed as fd sets, disconnect when QEMU exits, idle watchers; and the driver's
// error for a domain that disappears in the middle of its inventory.
import { execFileSync } from "node:child_process";
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  createDomainDisks,
  domainXml,
  type PrivateLibvirtd,
  startPrivateLibvirtd,
} from "../../testing/libvirt-daemon.js";
import type { VmSpec } from "../driver-conformance.js";
import { QmpClient, QmpError } from "../qemu/qmp-client.js";
import { LibvirtDriver } from "./libvirt-driver.js";

const SPEC: VmSpec = {
  name: "br-1",
  uuid: "6f1c3a52-0000-4000-8000-0000000000b1",
  vcpus: 1,
  memoryMb: 64,
  disks: [{ sizeBytes: 8 * 1024 * 1024, format: "qcow2" }],
  nics: [{ mac: "52:54:00:5a:00:b1" }],
};
const GONE: VmSpec = { ...SPEC, name: "gone-1", uuid: "6f1c3a52-0000-4000-8000-0000000000b2", nics: [] };

let daemon: PrivateLibvirtd;
let driver: LibvirtDriver;
let address: string;

test.before(async () => {
  daemon = await startPrivateLibvirtd({ qemuUser: "libvirt-qemu" });
  try {
    const diskDir = join(daemon.dir, "images");
    for (const spec of [SPEC, GONE]) {
      await createDomainDisks(spec, diskDir);
      await daemon.define(domainXml(spec, { diskDir }));
      await daemon.virsh("start", "--paused", spec.name);
    }
    driver = new LibvirtDriver({ uri: daemon.uri, bridgeDir: join(daemon.dir, "bridges"), idleWatchMs: 300 });
    address = (await driver.getVm(SPEC.name)).address;
  } catch (err) {
    console.error(`setup failed: ${(err as Error).stack}`);
    throw err;
  }
});

test.after(async () => {
  await driver?.close();
  await daemon?.cleanup();
});

function qemuUid(uuid: string): number {
  const status = readFileSync(`/proc/${daemon.qemuPid(uuid)}/status`, "utf8");
  return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
}

test("speaks QMP: QEMU's greeting, negotiation first, replies and QMP error classes kept", async () => {
  // A raw client first: the greeting, and a command before qmp_capabilities is refused.
  const raw = createConnection(address);
  let text = "";
  raw.setEncoding("utf8").on("data", (d: string) => {
    text += d;
  });
  await waitFor(() => text.includes('"QMP"'), { timeoutMs: 15_000, what: "the greeting" });
  const greeting = JSON.parse(text.split("\n")[0]!) as { QMP: { version: { qemu: { major: number } } } };
  assert.is(greeting.QMP.version.qemu.major, 7);
  raw.write('{"execute":"query-status","id":"early"}\n');
  await waitFor(() => text.includes('"early"'), { timeoutMs: 15_000, what: "the early reply" });
  assert.match(text, /Expecting capabilities negotiation/);
  raw.destroy();

  const qmp = await driver.connect(address);
  try {
    assert.is((await qmp.execute<{ status: string }>("query-status")).status, "prelaunch");
    try {
      await qmp.execute("no-such-command");
      assert.unreachable("must fail");
    } catch (err) {
      assert.instance(err, QmpError);
      assert.is((err as QmpError).errorClass, "CommandNotFound");
    }
    // Replies come back in order and matched to their ids, also when pipelined.
    const replies = await Promise.all(
      ["query-status", "query-name", "query-uuid"].map((c) => qmp.execute<Record<string, unknown>>(c)),
    );
    assert.is(replies[1]!["name"], SPEC.name);
    assert.is(replies[2]!["UUID"], SPEC.uuid);
  } finally {
    qmp.close();
  }
});

test("QEMU's events reach every client with QEMU's timestamps; libvirt's state follows", async () => {
  const a = await driver.connect(address);
  const b = await driver.connect(address);
  try {
    const t0 = Date.now();
    const resumedA = a.waitForEvent("RESUME", undefined, 15_000);
    const resumedB = b.waitForEvent("RESUME", undefined, 15_000);
    await a.execute("cont");
    const [ea, eb] = await Promise.all([resumedA, resumedB]);
    assert.is(ea.timestampMs, eb.timestampMs, "the same event, QEMU's timestamp");
    assert.ok(
      ea.timestampMs >= t0 - 1000 && ea.timestampMs <= Date.now() + 1000,
      `timestamp ${ea.timestampMs}`,
    );
    assert.ok(ea.timestampMs % 1 !== 0 || ea.timestampMs > 0, "microsecond precision kept");
    await waitFor(async () => /^running/.test(await daemon.virsh("domstate", SPEC.uuid)), {
      timeoutMs: 10_000,
      what: "libvirt to see the domain running",
    });
    const stopped = b.waitForEvent("STOP", undefined, 15_000);
    await b.execute("stop");
    assert.ok((await stopped).timestampMs > ea.timestampMs);
    await waitFor(async () => /^paused/.test(await daemon.virsh("domstate", SPEC.uuid)), {
      timeoutMs: 10_000,
      what: "libvirt to see the domain paused",
    });
  } finally {
    a.close();
    b.close();
  }
});

test("file descriptors sent with a command reach QEMU through libvirt", async () => {
  const fd = openSync("/dev/null", "w");
  try {
    await QmpClient.passFd(address, "svm-test-fd", fd);
  } finally {
    closeSync(fd);
  }
  const qmp = await driver.connect(address);
  try {
    // closefd succeeds only for a descriptor QEMU really holds under that name.
    await qmp.execute("closefd", { fdname: "svm-test-fd" });
    try {
      await qmp.execute("closefd", { fdname: "svm-test-fd" });
      assert.unreachable("a second closefd must fail");
    } catch (err) {
      assert.match((err as Error).message, /not found/i);
    }
  } finally {
    qmp.close();
  }
});

test("a file QEMU may not open by name is handed over as an fd set, removed with its node", async () => {
  assert.is.not(qemuUid(SPEC.uuid), 0, "QEMU runs unprivileged, as libvirt-qemu");
  const privateDir = join(daemon.dir, "private");
  mkdirSync(privateDir, { mode: 0o700 });
  chmodSync(privateDir, 0o700);
  const file = join(privateDir, "overlay.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", file, "1M"]);
  const add = { driver: "qcow2", "node-name": "svm-test-ovl", file: { driver: "file", filename: file } };
  // Control: QEMU itself cannot open it (libvirt's passthrough, no bridge in between).
  const direct = await daemon.virsh(
    "qemu-monitor-command",
    SPEC.uuid,
    JSON.stringify({ execute: "blockdev-add", arguments: add }),
  );
  assert.match(direct, /Permission denied/);

  const qmp = await driver.connect(address);
  try {
    await qmp.execute("blockdev-add", add);
    const nodes = await qmp.execute<{ "node-name": string; file: string }[]>("query-named-block-nodes");
    assert.match(nodes.find((n) => n["node-name"] === "svm-test-ovl")?.file ?? "", /^\/dev\/fdset\/\d+$/);
    const tagged = async () =>
      (await qmp.execute<{ fds: { opaque?: string }[] }[]>("query-fdsets")).filter((s) =>
        s.fds.some((f) => f.opaque === "shadowvm-node:svm-test-ovl"),
      );
    assert.is((await tagged()).length, 1);
    // QEMU closes a removed fd set only while the guest runs (it is paused here since start).
    await qmp.execute("cont");
    await qmp.execute("blockdev-del", { "node-name": "svm-test-ovl" });
    assert.is((await tagged()).length, 0, "the fd set went with the node");
    await qmp.execute("stop");
  } finally {
    qmp.close();
  }
});

test("idle bridges stop their event watchers and start them again on demand", async () => {
  const bridge = await driver.bridge(SPEC.uuid, SPEC.name);
  await waitFor(() => !bridge.watching, { timeoutMs: 10_000, what: "the watchers to stop when idle" });
  const qmp = await driver.connect(address);
  try {
    assert.ok(bridge.watching);
    const resumed = qmp.waitForEvent("RESUME", undefined, 15_000);
    await qmp.execute("cont");
    await resumed;
    await qmp.execute("stop");
  } finally {
    qmp.close();
  }
});

test("a domain that disappears in the middle of its inventory is one 'vanished' problem line", async () => {
  // virsh, except that GONE's QEMU is killed right before the first QMP command of the inventory
  // reaches libvirt (after its domain XML was read).
  const wrapper = join(daemon.dir, "virsh-killing");
  writeFileSync(
    wrapper,
    `#!/bin/bash
while IFS= read -r line; do
  if [[ "$line" == *qemu-monitor-command*${GONE.uuid}* && ! -e "$0.done" ]]; then
    : > "$0.done"
    kill -KILL ${daemon.qemuPid(GONE.uuid)}
    for i in $(seq 1 600); do
      virsh -q -c '${daemon.uri}' domstate ${GONE.uuid} | grep -q 'shut off' && break
      sleep 0.05
    done
  fi
  printf '%s\\n' "$line"
done | exec virsh "$@"
`,
    { mode: 0o755 },
  );
  const killing = new LibvirtDriver({
    uri: daemon.uri,
    bridgeDir: join(daemon.dir, "bridges-2"),
    virshBinary: wrapper,
  });
  try {
    const { vms, problems } = await killing.listVms();
    assert.equal(
      vms.map((v) => v.name),
      [SPEC.name],
    );
    assert.is(problems.length, 1);
    assert.match(
      problems[0]!.error,
      /^libvirt domain gone-1 disappeared while reading its inventory \(.*domain is not running.*during query-block\)$/,
    );
  } finally {
    await killing.close();
  }
  // Afterwards it is a crashed domain, and getVm says why it cannot be used.
  try {
    await driver.getVm(GONE.name);
    assert.unreachable("getVm must fail");
  } catch (err) {
    assert.match(
      (err as Error).message,
      /VM "gone-1" cannot be used: libvirt domain gone-1 is shut off \(crashed\)/,
    );
  }
});

test("when QEMU exits, clients are disconnected and the bridge goes with the domain", async () => {
  const qmp = await driver.connect(address);
  const closed = new Promise<void>((r) => qmp.once("close", () => r()));
  const waiting = qmp.waitForEvent("NEVER", undefined, 60_000);
  await daemon.virsh("destroy", SPEC.name);
  await closed;
  try {
    await waiting;
    assert.unreachable("the waiter must fail");
  } catch (err) {
    assert.is((err as QmpError).errorClass, "Disconnected");
  }
  const { vms } = await driver.listVms();
  assert.is(vms.length, 0);
  try {
    await QmpClient.connect(address, { connectTimeoutMs: 2000 });
    assert.unreachable("the bridge socket must be gone");
  } catch (err) {
    assert.match((err as Error).message, /no QMP socket at/);
  }
});

test.run();
