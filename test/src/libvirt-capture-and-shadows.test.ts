// Issue 10 (libvirt driver) under a real, private libvirtd: the demo guest as a libvirt domain of
// type qemu, QEMU running as libvirt-qemu (as on a stock Debian host), with a user-mode NIC, a
// tap NIC libvirt passes as an fd, a serial console file and a guest channel. A live capture
// through libvirt while the guest writes; libvirt's bookkeeping afterwards (state, block graph,
// fd sets, the domain still managed normally); shadows from the capture that continue the
// workload with intact data, isolated, as agent-run QEMU processes; and an agent killed in the
// middle of a capture, recovered through a fresh driver, and by the next CLI capture.
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { recoverInterruptedCaptures } from "@shadowvm/agent/capture/capture-recovery";
import { captureVm } from "@shadowvm/agent/capture/capture-service";
import { CaptureStore } from "@shadowvm/agent/capture/store/index";
import { escapeXml } from "@shadowvm/agent/hypervisor/libvirt/domain-xml";
import { LibvirtDriver, type LibvirtVmInventory } from "@shadowvm/agent/hypervisor/libvirt/libvirt-driver";
import { restoreLibvirtCapture } from "@shadowvm/agent/hypervisor/libvirt/libvirt-shadow";
import { QmpClient } from "@shadowvm/agent/hypervisor/qemu/qmp-client";
import { startShadow } from "@shadowvm/agent/shadow/shadow-vm";
import { type PrivateLibvirtd, startPrivateLibvirtd } from "@shadowvm/agent/testing/libvirt-daemon";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ensureGuestImage, httpGet, qemuProcesses, verifyGuest } from "./support/demo-guest.js";
import { AGENT_BIN, runCli } from "./support/run-cli.js";

const NAME = "lv-prod";
const UUID = "6f1c3a52-0000-4000-8000-00000000c0de";

let daemon: PrivateLibvirtd;
let work: string;
let consoleLog: string;
let channelSocket: string;

test.before(async () => {
  try {
    await bootProduction();
  } catch (err) {
    // uvu does not print errors thrown by hooks; say why before the tests fail.
    console.error(`setting up the libvirt domain failed: ${(err as Error).stack}`);
    const log = daemon ? join(daemon.logDir, "qemu", `${NAME}.log`) : "";
    if (log && existsSync(log)) console.error(`--- ${log} ---\n${readFileSync(log, "utf8").slice(-3000)}`);
    throw err;
  }
});

async function bootProduction(): Promise<void> {
  const { dir: guestDir } = await ensureGuestImage();
  const guest = JSON.parse(readFileSync(join(guestDir, "guest.json"), "utf8")) as {
    kernel: { file: string };
    initrd: { file: string };
    data_disk: { file: string };
    cmdline: string;
  };
  daemon = await startPrivateLibvirtd({ qemuUser: "libvirt-qemu" });
  // QEMU runs as libvirt-qemu: its files live in a directory it can reach (not root's cache),
  // and libvirt chowns the domain's images while it runs.
  work = join(daemon.dir, "w");
  mkdirSync(work, { mode: 0o755 });
  chmodSync(work, 0o755);
  for (const f of [guest.kernel.file, guest.initrd.file, guest.data_disk.file])
    copyFileSync(join(guestDir, f), join(work, f));
  consoleLog = join(work, "console.log");
  channelSocket = join(work, "guest.sock");
  const xml = `<domain type='qemu'>
  <name>${NAME}</name>
  <uuid>${UUID}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${escapeXml(join(work, guest.kernel.file))}</kernel>
    <initrd>${escapeXml(join(work, guest.initrd.file))}</initrd>
    <cmdline>${escapeXml(`${guest.cmdline} shadowvm.writer_rate=20`)}</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${escapeXml(join(work, guest.data_disk.file))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:5a:c0:01'/>
      <model type='virtio'/>
    </interface>
    <interface type='ethernet'>
      <mac address='52:54:00:5a:c0:02'/>
      <model type='e1000'/>
    </interface>
    <serial type='file'>
      <source path='${escapeXml(consoleLog)}'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='${escapeXml(channelSocket)}'/>
      <target type='virtio' name='org.shadowvm.guest.0'/>
    </channel>
    <memballoon model='virtio'/>
    <panic model='isa'/>
  </devices>
</domain>`;
  await daemon.define(xml);
  const t0 = Date.now();
  await daemon.virsh("start", NAME);
  await waitFor(
    () => existsSync(consoleLog) && readFileSync(consoleLog, "utf8").includes("shadowvm-guest: ready"),
    {
      timeoutMs: 180_000,
      intervalMs: 100,
      what: "the demo guest under libvirt to be ready",
    },
  );
  console.log(`libvirt domain ${NAME} booted to its workload in ${Date.now() - t0} ms`);
}

test.after(async () => {
  if (process.env["SVM_DEBUG_LIBVIRT"]) {
    for (const f of ["libvirtd.log", `qemu/${NAME}.log`]) {
      const file = join(daemon.logDir, f);
      if (existsSync(file)) console.log(`--- ${f} ---\n${readFileSync(file, "utf8").slice(-4000)}`);
    }
  }
  await daemon?.cleanup();
});

/** What libvirt and QEMU say about production: must be the same before and after a capture. */
async function productionState(driver: LibvirtDriver): Promise<Record<string, unknown>> {
  const vm = await driver.getVm(NAME);
  const qmp = await driver.connect(vm.address);
  try {
    const nodes = await qmp.execute<{ "node-name": string; file: string }[]>("query-named-block-nodes", {
      flat: true,
    });
    const fdsets = await qmp.execute<unknown[]>("query-fdsets");
    const migrate = await qmp.execute<Record<string, unknown>>("query-migrate-capabilities");
    return {
      graph: nodes.map((n) => `${n["node-name"]}=${n.file}`).sort(),
      fdsets,
      migrate,
      // The reason changes (booted -> unpaused: libvirt saw the guest pause and resume).
      domstate: (await daemon.virsh("domstate", NAME)).trim(),
      domblklist: await daemon.virsh("domblklist", NAME, "--details"),
      jobs: await qmp.execute("query-jobs"),
    };
  } finally {
    qmp.close();
  }
}

test("capture through libvirt, libvirt still in charge, shadows continue with intact data", async () => {
  const data = join(daemon.dir, "data");
  const driver = new LibvirtDriver({ uri: daemon.uri, bridgeDir: join(daemon.dir, "bridges") });
  try {
    const vm = (await driver.getVm(NAME)) as LibvirtVmInventory;
    assert.is(vm.state, "running");
    assert.ok(vm.pid && vm.command_line.includes("-uuid"), "QEMU process and command line found");
    const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${vm.pid}/status`, "utf8"))?.[1]);
    assert.is.not(uid, 0, "production QEMU runs unprivileged (it cannot open the agent's staging files)");
    assert.equal(
      vm.nics.map((n) => [n.mac, n.model, n.netdev_type]),
      [
        ["52:54:00:5a:c0:01", "virtio-net-pci", "user"],
        ["52:54:00:5a:c0:02", "e1000", "tap"],
      ],
    );
    assert.ok(vm.nics[1]!.host_interface, "the tap libvirt created is reported");
    const before = await productionState(driver);
    assert.is(before["domstate"], "running");

    const store = await CaptureStore.open({ dir: join(data, "captures"), keyFile: join(data, "store.key") });
    try {
      const t0 = Date.now();
      const record = await captureVm({
        driver,
        store,
        vm: NAME,
        stagingRoot: join(data, "staging"),
      });
      console.log(
        `capture through libvirt: pause ${record.pause_ms.toFixed(1)} ms (QEMU STOP->RESUME), total ${Date.now() - t0} ms, memory ${record.memory_bytes} B, disks ${record.disk_bytes} B`,
      );
      assert.ok(record.pause_ms > 0 && record.pause_ms < 5000, `pause ${record.pause_ms} ms`);
      assert.ok(record.memory_bytes > 10 * 1024 * 1024, "memory captured");
      assert.is(record.disks.length, 1);
      assert.equal(readdirSync(join(data, "staging")), [], "no staging files left");

      // libvirt's bookkeeping: state, block graph, fd sets, migration settings as before.
      const after = await waitFor(
        async () => {
          const s = await productionState(driver);
          return /^running/.test(String(s["domstate"])) ? s : undefined;
        },
        { timeoutMs: 10_000, what: "libvirt to report the domain running" },
      );
      assert.equal(after, before, "production's block graph, fd sets and libvirt state are unchanged");
      // ... and libvirt still manages the domain normally.
      await daemon.virsh("suspend", NAME);
      assert.match(await daemon.virsh("domstate", "--reason", NAME), /^paused \(user\)/);
      await daemon.virsh("resume", NAME);
      assert.match(await daemon.virsh("domstate", "--reason", NAME), /^running \(unpaused\)/);
      assert.match(await daemon.virsh("domblkinfo", NAME, "vda"), /Capacity:\s+67108864/);
      assert.match(await daemon.virsh("domjobinfo", NAME), /Job type:\s+None/);

      // Shadows: agent-run QEMU from the captured libvirt command line, isolated.
      const restored = await restoreLibvirtCapture(store, record.id, join(data, "restored"));
      const shadows = [];
      try {
        for (const i of [0, 1]) {
          const s = await startShadow(restored, { id: `lv-s${i}`, workDir: join(data, `shadow-${i}`) });
          shadows.push(s);
          console.log(`shadow ${s.id} running again ${s.startMs} ms after start`);
        }
        for (const shadow of shadows) {
          const argv = readFileSync(`/proc/${shadow.pid}/cmdline`, "utf8").split("\0");
          const netdevs = argv.filter((_, i) => argv[i - 1] === "-netdev");
          assert.is(netdevs.length, 2, "both NICs kept (device model unchanged)");
          for (const n of netdevs) assert.match(n, /^user,.*restrict=on/, `isolated backend: ${n}`);
          assert.not.ok(
            argv.some((a) => /(^|,)fd=\d|"fd"|\/dev\/fdset\//.test(a)),
            "no descriptor inherited from libvirt",
          );
          assert.not.ok(
            argv.some((a) => a.includes(join(work, "data.qcow2"))),
            "production's disk is never opened by a shadow",
          );
          const result = await verifyGuest(shadow.guestChannels["org.shadowvm.guest.0"]!);
          assert.ok(result.ok, `shadow ${shadow.id}: guest verify ${JSON.stringify(result)}`);
          assert.is(result.fsck, "clean");
          assert.ok(result.records > 0);
          const health = await httpGet(shadow.httpPort, "/cgi-bin/health");
          assert.is(health.status, 200);
          assert.is((JSON.parse(health.body) as { status: string }).status, "ok");
        }
        assert.is(await daemon.virsh("list", "--all", "--name"), NAME, "shadows are not libvirt domains");
      } finally {
        await Promise.all(shadows.map((s) => s.stop()));
      }
      for (const s of shadows) assert.ok(s.exited(), `shadow ${s.id} QEMU is gone`);
      assert.is(qemuProcesses(UUID).length, 1, "only production's QEMU carries the uuid");
      assert.ok((await verifyGuest(channelSocket)).ok, "production data intact");
    } finally {
      await store.close();
    }
  } finally {
    await driver.close();
  }
});

test("the agent CLI with hypervisor.driver libvirt lists and captures the domain", async () => {
  const data = join(daemon.dir, "cli-data");
  const env = {
    SHADOWVM_AGENT__HYPERVISOR__DRIVER: "libvirt",
    SHADOWVM_AGENT__HYPERVISOR__LIBVIRT_URI: daemon.uri,
  };
  const vms = await runCli(AGENT_BIN, ["vms", "--json", "--data-dir", data], { env });
  assert.is(vms.code, 0, vms.stderr);
  const listed = JSON.parse(vms.stdout) as LibvirtVmInventory[];
  assert.equal(
    listed.map((v) => [v.name, v.uuid, v.state]),
    [[NAME, UUID, "running"]],
  );
  assert.is(listed[0]!.libvirt.uri, daemon.uri);
  const capture = await runCli(AGENT_BIN, ["capture", NAME, "--data-dir", data, "--json"], {
    env,
    timeoutMs: 300_000,
  });
  assert.is(capture.code, 0, capture.stderr);
  const record = JSON.parse(capture.stdout) as { pause_ms: number; vm: string };
  assert.is(record.vm, NAME);
  console.log(`capture through the CLI: pause ${record.pause_ms.toFixed(1)} ms`);
  assert.ok(existsSync(join(data, "captures")));
  assert.equal(readdirSync(join(data, "staging")), []);
  const down = await runCli(AGENT_BIN, ["vms", "--data-dir", data], {
    env: { ...env, SHADOWVM_AGENT__HYPERVISOR__LIBVIRT_URI: "qemu+unix:///system?socket=/nonexistent/sock" },
  });
  assert.is(down.code, 1);
  assert.match(down.stderr, /^shadowvm-agent: error: cannot reach libvirtd at qemu\+unix:.*\n$/);
});

/**
 * Runs a capture of production in its own process (an agent) with its own bridge directory, and
 * kills it (SIGKILL) once the capture reached `step`. `data/staging` keeps its journal.
 */
async function killCaptureAt(step: string, data: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { join } from "node:path";
       import { captureVm } from "@shadowvm/agent/capture/capture-service";
       import { CaptureStore } from "@shadowvm/agent/capture/store/index";
       import { LibvirtDriver } from "@shadowvm/agent/hypervisor/libvirt/libvirt-driver";
       const [uri, bridges, data, stopAt] = process.argv.slice(1);
       const store = await CaptureStore.open({ dir: join(data, "captures"), keyFile: join(data, "store.key") });
       await captureVm({
         driver: new LibvirtDriver({ uri, bridgeDir: bridges }), store, vm: "${NAME}",
         stagingRoot: join(data, "staging"),
         async onStep(step) { if (step === stopAt) { process.stdout.write("AT " + step + "\\n"); await new Promise(() => {}); } },
       });`,
      daemon.uri,
      join(daemon.dir, "bridges-child"),
      data,
      step,
    ],
    { stdio: ["ignore", "pipe", "pipe"], cwd: join(import.meta.dirname, "..") },
  );
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    err += d;
  });
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`capture child exited: ${err}`);
      return out.includes(`AT ${step}`);
    },
    { timeoutMs: 180_000, intervalMs: 20, what: `the capture to reach ${step}` },
  );
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
}

/** Production's state once libvirt reports it running again. */
function productionRunning(driver: LibvirtDriver): Promise<Record<string, unknown>> {
  return waitFor(
    async () => {
      const s = await productionState(driver);
      return /^running/.test(String(s["domstate"])) ? s : undefined;
    },
    { timeoutMs: 30_000, what: "production running again" },
  );
}

test("an agent killed during a libvirt capture: a new driver's recovery restores production", async () => {
  const probe = new LibvirtDriver({ uri: daemon.uri, bridgeDir: join(daemon.dir, "bridges") });
  const before = await productionState(probe);
  await probe.close();
  for (const step of ["migrating", "snapshotted", "resumed"]) {
    const data = join(daemon.dir, `crash-${step}`);
    await killCaptureAt(step, data);

    // A new agent process: its own bridge directory; recovery serves the recorded socket path.
    const driver = new LibvirtDriver({ uri: daemon.uri, bridgeDir: join(daemon.dir, "bridges-next") });
    try {
      const recovered = await recoverInterruptedCaptures(join(data, "staging"), undefined, driver);
      assert.is(recovered.length, 1, `one capture to recover after a kill at ${step}`);
      assert.is(recovered[0]!.error, undefined, `recovery after ${step}: ${recovered[0]!.error}`);
      assert.is(recovered[0]!.action, "restored-live");
      const after = await productionRunning(driver);
      assert.equal(after, before, `production as before after a kill at ${step}`);
    } finally {
      await driver.close();
      rmSync(data, { recursive: true, force: true });
    }
  }
  assert.ok((await verifyGuest(channelSocket)).ok, "production data intact after three interrupted captures");
  const q = await QmpClient.connect(join(daemon.dir, "bridges-child", `${UUID}.qmp`)).catch(() => undefined);
  assert.is(q, undefined, "a closed driver leaves no bridge socket behind");
});

test("the next CLI capture recovers a libvirt capture whose agent was killed, then captures", async () => {
  const probe = new LibvirtDriver({ uri: daemon.uri, bridgeDir: join(daemon.dir, "bridges") });
  try {
    const before = await productionState(probe);
    const data = join(daemon.dir, "crash-cli");
    await killCaptureAt("snapshotted", data);
    assert.is(readdirSync(join(data, "staging")).length, 1, "the killed capture left its journal");
    const capture = await runCli(
      AGENT_BIN,
      ["capture", NAME, "--data-dir", data, "--key-file", join(data, "store.key"), "--json"],
      {
        env: {
          SHADOWVM_AGENT__HYPERVISOR__DRIVER: "libvirt",
          SHADOWVM_AGENT__HYPERVISOR__LIBVIRT_URI: daemon.uri,
        },
        timeoutMs: 300_000,
      },
    );
    assert.is(capture.code, 0, capture.stderr);
    assert.is((JSON.parse(capture.stdout) as { vm: string }).vm, NAME);
    assert.equal(
      readdirSync(join(data, "staging")),
      [],
      "the interrupted capture was recovered (its journal is gone) and the new one cleaned up",
    );
    assert.equal(await productionRunning(probe), before, "production as before");
    assert.ok((await verifyGuest(channelSocket)).ok, "production data intact");
    rmSync(data, { recursive: true, force: true });
  } finally {
    await probe.close();
  }
});

test.run();
