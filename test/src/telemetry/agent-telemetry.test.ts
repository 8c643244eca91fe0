// End to end: `shadowvm-agent serve` samples a real demo guest under load (one CPU hog, 2 MiB/s of
// fsynced writes, a tap NIC the host sends packets into) and a paused bare QEMU, spools and sends
// over wss:// to `shadowvm-collector serve`, and the store holds the inventory and samples with the
// values the guest produced, including the production operating point. Also checks both services'
// /metrics, /healthz and /readyz.
import { execFileSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DemoVm, defaultGuestDir, startDemoVm } from "@shadowvm/agent/demo/demo-vm";
import { type BareQemuHost, createBareQemuHost } from "@shadowvm/agent/testing/bare-qemu";
import { openReadOnly } from "@shadowvm/collector/store/ingest-store";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createTestPki } from "./fixtures/pki.js";
import { AgentServeProcess, CollectorProcess, killAll, metricValue } from "./fixtures/processes.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-agent-telemetry-"));
const TAP = `svmt${process.pid % 100_000}`;
const PROD_UUID = "6f1c3a52-1111-4000-8000-000000000001";
const BARE_UUID = "6f1c3a52-1111-4000-8000-000000000002";
let vm: DemoVm | undefined;
let bare: BareQemuHost | undefined;

/** Whether this host lets us create a tap device (root with /dev/net/tun). */
function canTap(): boolean {
  try {
    execFileSync("ip", ["tuntap", "add", "dev", TAP, "mode", "tap"], { stdio: "ignore" });
    execFileSync("ip", ["tuntap", "del", "dev", TAP, "mode", "tap"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

test.after(async () => {
  await killAll();
  await vm?.stop({ timeoutMs: 3000 }).catch(() => {});
  await bare?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

test("the agent's telemetry of a loaded guest reaches the store", async () => {
  const t0 = Date.now();
  assert.ok(
    existsSync(join(defaultGuestDir(), "guest.json")),
    "the demo guest image is built (bash scripts/setup.sh or deploy/guest/build-guest-image.sh)",
  );
  const tap = canTap();
  const pki = createTestPki(dir);
  const collector = await CollectorProcess.create({ name: "telemetry-collector", dir, pki });
  await collector.start();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, collector.createToken(), { mode: 0o600 });

  const vmsDir = join(dir, "vms");
  vm = await startDemoVm({
    name: "prod-1",
    uuid: PROD_UUID,
    workDir: join(vmsDir, "prod-1"),
    memoryMb: 256,
    extraKernelArgs: ["shadowvm.cpu_hogs=1", "shadowvm.io_mb_s=2"],
    extraQemuArgs: tap
      ? [
          "-netdev",
          `tap,id=tap0,ifname=${TAP},script=no,downscript=no`,
          "-device",
          "virtio-net-pci,netdev=tap0,mac=52:54:00:77:00:01,id=tap0-dev",
        ]
      : [],
  });
  bare = createBareQemuHost();
  await bare.start({
    name: "bare-1",
    uuid: BARE_UUID,
    vcpus: 2,
    memoryMb: 128,
    disks: [{ sizeBytes: 16 << 20, format: "qcow2" }],
    nics: [{ mac: "52:54:00:77:00:02" }],
  });
  await vm.waitReady(120_000);

  const agent = await AgentServeProcess.create({
    name: "telemetry-agent",
    dir,
    agentId: "hv-telemetry",
    collectorUrl: collector.url,
    caFile: pki.caFile,
    tokenFile,
    intervalS: 1,
    qmpSockets: [join(vmsDir, "*", "qmp.sock"), join(bare.dir, "*", "qmp.sock")],
    extra: {},
  });
  writeFileSync(
    agent.configFile,
    JSON.stringify({
      ...JSON.parse((await import("node:fs")).readFileSync(agent.configFile, "utf8")),
      telemetry: { interval_s: 1, labels: { team: "test" }, operating_point_window_s: 60 },
    }),
  );
  await agent.start();

  // Packets from the host into the guest's tap NIC (the kernel sends ARP requests out of it).
  let sender: ReturnType<typeof createSocket> | undefined;
  if (tap) {
    execFileSync("ip", ["addr", "add", "169.254.77.1/24", "dev", TAP]);
    execFileSync("ip", ["link", "set", TAP, "up"]);
    sender = createSocket("udp4");
    const s = sender;
    const timer = setInterval(() => s.send(Buffer.alloc(200), 9, "169.254.77.2"), 100);
    s.once("close", () => clearInterval(timer));
  }

  await waitFor(
    async () => {
      const m = await agent.metrics();
      return (
        metricValue(m, "shadowvm_agent_telemetry_samples_total", { scope: "vm" }) >= 24 &&
        metricValue(m, "shadowvm_agent_frames_acked_total") >= 15
      );
    },
    { timeoutMs: 60_000, what: "12 ticks of samples of both VMs, acknowledged", intervalMs: 200 },
  );
  sender?.close();
  const agentMetrics = await agent.metrics();
  assert.is(
    metricValue(agentMetrics, "shadowvm_agent_telemetry_collector_success", { collector: "vm:prod-1" }),
    1,
  );
  assert.is(
    metricValue(agentMetrics, "shadowvm_agent_telemetry_collector_success", { collector: "host" }),
    1,
  );
  assert.is(metricValue(agentMetrics, "shadowvm_agent_collector_connected"), 1);
  assert.ok(metricValue(agentMetrics, "shadowvm_agent_process_resident_memory_bytes") > 0);
  const agentReady = await fetch(`http://127.0.0.1:${agent.opsPort}/readyz`);
  assert.is(agentReady.status, 200);
  assert.is((await fetch(`http://127.0.0.1:${agent.opsPort}/healthz`)).status, 200);
  assert.is(await collector.ready(), 200);
  const cm = await collector.metrics();
  assert.ok(metricValue(cm, "shadowvm_collector_rows_written_total", { table: "samples" }) >= 30);
  assert.ok(metricValue(cm, "shadowvm_collector_acks_sent_total") > 0);

  assert.is(await agent.stop("SIGTERM"), 0);
  await collector.kill("SIGTERM");

  const db = await openReadOnly(join(collector.dataDir, "shadowvm.duckdb"));
  try {
    const vms = await db.query(
      "SELECT uuid, name, vcpus, memory_mb, labels->>'team' AS team, nics FROM vms ORDER BY name",
    );
    assert.equal(
      vms.map((v) => [v["uuid"], v["name"], v["vcpus"], Number(v["memory_mb"]), v["team"]]),
      [
        [BARE_UUID, "bare-1", 2, 128, "test"],
        [PROD_UUID, "prod-1", 1, 256, "test"],
      ],
    );
    if (tap) assert.match(String(vms[1]?.["nics"]), new RegExp(`"host_interface":"${TAP}"`));
    const [host] = await db.query(
      "SELECT hypervisor_driver, vm_uuids FROM hosts WHERE agent_id = 'hv-telemetry'",
    );
    assert.is(host?.["hypervisor_driver"], "qemu");
    assert.equal(JSON.parse(String(host?.["vm_uuids"])), [PROD_UUID, BARE_UUID].sort());
    const [prod] = await db.query(
      `SELECT count(*) AS n, max(cpu_usage) AS cpu, max(disk_write_bytes) - min(disk_write_bytes) AS written,
              max(memory_available_bytes) AS avail, min(memory_used_bytes) AS used, max(net_rx_bytes) AS rx,
              arg_max(extra, ts_ms) AS op
       FROM samples WHERE vm_uuid = $1`,
      [PROD_UUID],
    );
    assert.ok(Number(prod?.["n"]) >= 12, "a sample per tick");
    assert.ok(Number(prod?.["cpu"]) > 0.3, `the CPU hog shows (max ${prod?.["cpu"]} cores)`);
    assert.ok(Number(prod?.["written"]) > 1 << 20, `the guest's writes show (${prod?.["written"]} bytes)`);
    assert.is(Number(prod?.["avail"]), 256 * 1024 * 1024, "guest RAM, balloon at full size");
    assert.ok(Number(prod?.["used"]) > 32 << 20, "QEMU's resident memory");
    if (tap) assert.ok(Number(prod?.["rx"]) > 0, "packets sent into the tap arrive as the guest's rx");
    const op = JSON.parse(String(prod?.["op"])) as Record<string, number>;
    assert.ok(op["op_avg_cpu"]! > 0.3 && op["op_avg_cpu"]! <= 1, `average_cpu_usage ${op["op_avg_cpu"]}`);
    assert.ok(op["op_avg_disk_io"]! > 0, `average_disk_io ${op["op_avg_disk_io"]}`);
    assert.ok(op["op_avg_memory"]! > 0 && op["op_avg_memory"]! <= 1);
    assert.type(op["op_cpu_slope_per_h"], "number");
    const [b] = await db.query(
      "SELECT count(*) AS n, max(cpu_usage) AS cpu FROM samples WHERE vm_uuid = $1",
      [BARE_UUID],
    );
    assert.ok(Number(b?.["n"]) >= 12);
    assert.ok(Number(b?.["cpu"]) < 0.2, "a paused VM uses (almost) no CPU");
    const [h] = await db.query(
      "SELECT count(*) AS n FROM samples WHERE scope = 1 AND agent_id = 'hv-telemetry'",
    );
    assert.ok(Number(h?.["n"]) >= 12, "host samples");
  } finally {
    db.close();
  }
  console.log(
    `agent-telemetry: ${tap ? "with" : "without"} a tap NIC, ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
});

test.run();
