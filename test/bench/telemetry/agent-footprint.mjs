#!/usr/bin/env node
// Agent footprint: resident memory and CPU of `shadowvm-agent serve` monitoring 20 VMs at a 10 s
// interval and streaming to a collector. The VMs are real QEMU processes started paused with no
// guest (agent/src/testing/bare-qemu.ts: 1-2 vCPUs, 128-256 MiB, a qcow2 disk and a NIC each), so
// every tick is the agent's real work: 20 QMP connections with three queries each, /proc reads,
// the host sample, one spooled TelemetryBatch, its send and acknowledgement.
//
// CPU is read from /proc/<pid>/stat (utime + stime of the agent process) over the measurement
// window after a warm-up, RSS from /proc/<pid>/status every second (max and last), and at the end
// PSS and private anonymous memory from /proc/<pid>/smaps_rollup: RSS counts the node binary's code
// pages (~40 MiB, shared by every node process on the host) in full.
//
// Usage (after `npx tsc -b shared agent collector test`):
//   node test/bench/telemetry/agent-footprint.mjs [--vms 20] [--interval 10] [--warmup 30]
//        [--duration 300] [--json out.json]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createBareQemuHost } from "../../../agent/dist/testing/bare-qemu.js";
import { createTestPki } from "../../dist/telemetry/fixtures/pki.js";
import {
  AgentServeProcess,
  CollectorProcess,
  killAll,
  metricValue,
} from "../../dist/telemetry/fixtures/processes.js";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const VMS = Number(opt("vms", "20"));
const INTERVAL = Number(opt("interval", "10"));
const WARMUP = Number(opt("warmup", "30"));
const DURATION = Number(opt("duration", "300"));
const jsonOut = opt("json", "");
const dir = mkdtempSync(join(tmpdir(), "shadowvm-footprint-"));
const HZ = 100;

function procCpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}
function procRssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) * 1024;
}
/** PSS (shared pages split between the processes sharing them) and private anonymous memory. */
function procMemory(pid) {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { pss: kb("Pss"), anonymous: kb("Anonymous"), fileShared: kb("Shared_Clean") };
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const host = createBareQemuHost();
try {
  const started = Date.now();
  for (let i = 0; i < VMS; i++) {
    await host.start({
      name: `vm-${String(i).padStart(2, "0")}`,
      uuid: `6f1c3a52-2222-4000-8000-${String(i).padStart(12, "0")}`,
      vcpus: 1 + (i % 2),
      memoryMb: 128 + 128 * (i % 2),
      disks: [{ sizeBytes: 64 << 20, format: "qcow2" }],
      nics: [{ mac: `52:54:00:88:00:${i.toString(16).padStart(2, "0")}` }],
    });
  }
  console.log(`${VMS} bare QEMU VMs up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const pki = createTestPki(dir);
  const collector = await CollectorProcess.create({ name: "footprint-collector", dir, pki });
  await collector.start();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, collector.createToken());
  const agent = await AgentServeProcess.create({
    name: "footprint-agent",
    dir,
    agentId: "footprint",
    collectorUrl: collector.url,
    caFile: pki.caFile,
    tokenFile,
    intervalS: INTERVAL,
    qmpSockets: [join(host.dir, "*", "qmp.sock")],
  });
  await agent.start();
  const pid = agent.child.pid;
  console.log(`agent pid ${pid}; warming up ${WARMUP} s, then measuring ${DURATION} s`);
  await sleep(WARMUP * 1000);
  const t0 = performance.now();
  const c0 = procCpuTicks(pid);
  const samples0 = metricValue(await agent.metrics(), "shadowvm_agent_telemetry_samples_total", {
    scope: "vm",
  });
  let rssMax = 0;
  let rss = 0;
  while (performance.now() - t0 < DURATION * 1000) {
    await sleep(1000);
    rss = procRssBytes(pid);
    rssMax = Math.max(rssMax, rss);
  }
  const secs = (performance.now() - t0) / 1000;
  const mem = procMemory(pid);
  const cpuSecs = (procCpuTicks(pid) - c0) / HZ;
  const m = await agent.metrics();
  const vmSamples = metricValue(m, "shadowvm_agent_telemetry_samples_total", { scope: "vm" }) - samples0;
  const failures = (m.match(/shadowvm_agent_telemetry_collector_success\{collector="vm:[^"]+"\} 0/g) ?? [])
    .length;
  const pending = metricValue(m, "shadowvm_agent_spool_pending_frames");
  const result = {
    machine: `${cpus().length} x ${cpus()[0]?.model ?? "?"}`,
    node: process.version,
    vms: VMS,
    interval_s: INTERVAL,
    measured_s: secs,
    cpu_seconds: cpuSecs,
    cpu_percent_of_one_core: (cpuSecs / secs) * 100,
    rss_max_mb: rssMax / 2 ** 20,
    rss_last_mb: rss / 2 ** 20,
    pss_mb: mem.pss / 2 ** 20,
    anonymous_mb: mem.anonymous / 2 ** 20,
    shared_clean_mb: mem.fileShared / 2 ** 20,
    vm_samples: vmSamples,
    vm_collectors_failing: failures,
    spool_pending_frames: pending,
  };
  console.log(
    `agent, ${VMS} VMs every ${INTERVAL} s, over ${secs.toFixed(0)} s: CPU ${result.cpu_percent_of_one_core.toFixed(2)}% of one core ` +
      `(${cpuSecs.toFixed(2)} s), RSS max ${result.rss_max_mb.toFixed(1)} MiB, last ${result.rss_last_mb.toFixed(1)} MiB ` +
      `(PSS ${result.pss_mb.toFixed(1)} MiB, private anonymous ${result.anonymous_mb.toFixed(1)} MiB, ` +
      `shared clean file pages ${result.shared_clean_mb.toFixed(1)} MiB, mostly the node binary); ` +
      `${vmSamples} VM samples, ${failures} VM collectors failing, ${pending} frames pending`,
  );
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify(result, null, 2)}\n`);
  await agent.stop("SIGTERM");
  await collector.kill("SIGTERM");
} finally {
  await killAll();
  await host.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
