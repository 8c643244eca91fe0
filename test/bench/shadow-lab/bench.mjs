#!/usr/bin/env node
// Shadow lab benchmark: from one capture of the demo VM, time until K shadows run, for K = 1, 2, 4,
// and the host memory each shadow costs.
//
// Usage (after `npx tsc -b shared agent`; root, QEMU and the demo guest image as for the tests):
//   node test/bench/shadow-lab/bench.mjs [--k 1,2,4] [--reps 3] [--network user|netns]
//        [--memory-mb 256] [--cpu-share 1] [--json]
//
// What is timed:
//   restore    the capture from the encrypted store into plain files (once per capture);
//   to K       from the campaign request (ShadowLab.runCampaign: validation, capabilities,
//              admission, registry, cgroup, overlays, QEMU spawn, memory load from the capture,
//              cont) until the K-th shadow runs; also each shadow's own start time (request ->
//              running) and the K-th arrival after the first ("each further one");
//   memory     each shadow QEMU's RSS and PSS (smaps_rollup) 3 s after they all run, and the drop
//              of the host's MemAvailable.
// The shadows are unstressed (control-like profiles) and stopped once measured.
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

const agent = (p) => import(new URL(`../../../agent/dist/${p}`, import.meta.url).href);
const { buildGuestImage, startDemoVm } = await agent("demo/demo-vm.js");
const { captureVm } = await agent("capture/capture-service.js");
const { CaptureStore } = await agent("capture/store/index.js");
const { QemuDriver } = await agent("hypervisor/qemu/qemu-driver.js");
const { restoreCapture } = await agent("shadow/restored-capture.js");
const { ShadowLab, controlProfile, labSettingsFromConfig } = await agent("shadow/shadow-lab.js");
const { loadAgentConfig } = await agent("config/agent-config.js");
const { processMemory, readMemInfo } = await agent("host/proc.js");

const { values: args } = parseArgs({
  options: {
    k: { type: "string", default: "1,2,4" },
    reps: { type: "string", default: "3" },
    network: { type: "string", default: "user" },
    "memory-mb": { type: "string", default: "256" },
    "cpu-share": { type: "string", default: "1" },
    json: { type: "boolean", default: false },
  },
});
const ks = args.k.split(",").map(Number);
const reps = Number(args.reps);
const say = (m) => process.stderr.write(`${m}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};
const MiB = 1024 * 1024;

const work = mkdtempSync("/tmp/svm-bench-");
const guestDir = await buildGuestImage({});
const vm = await startDemoVm({
  name: "bench-prod",
  workDir: join(work, "vm"),
  guestDir,
  memoryMb: Number(args["memory-mb"]),
});
const results = { network: args.network, memory_mb: Number(args["memory-mb"]), runs: [] };
try {
  await vm.waitReady(180_000);
  const store = await CaptureStore.open({ dir: join(work, "captures"), keyFile: join(work, "key") });
  const rec = await captureVm({
    driver: new QemuDriver({ sockets: [vm.qmpSocket] }),
    store,
    vm: vm.qmpSocket,
    stagingRoot: join(work, "staging"),
  });
  let t = performance.now();
  const restored = await restoreCapture(store, rec.id, join(work, "restored"));
  results.restore_ms = Math.round(performance.now() - t);
  results.capture_pause_ms = rec.pause_ms;
  say(`captured ${rec.id} (pause ${rec.pause_ms.toFixed(1)} ms), restored in ${results.restore_ms} ms`);
  await store.close();

  const config = loadAgentConfig(
    { dataDir: work },
    {
      SHADOWVM_AGENT__SHADOW__NETWORK: args.network,
      SHADOWVM_AGENT__SHADOW__CPU_SHARE: args["cpu-share"],
      SHADOWVM_AGENT__SHADOW__MAX_SHADOWS: String(Math.max(...ks)),
      SHADOWVM_AGENT__SHADOW__PROBE_PATH: "/cgi-bin/health",
    },
  );
  const lab = await ShadowLab.open({
    shadowsDir: join(work, "shadows"),
    settings: labSettingsFromConfig(config.shadow, readMemInfo().totalBytes),
  });
  const idle = controlProfile(600);
  try {
    for (const k of ks) {
      for (let rep = 0; rep < reps; rep++) {
        const arrivals = [];
        const starts = [];
        const pids = [];
        const availBefore = readMemInfo().availableBytes;
        let allRunning;
        const running = new Promise((r) => {
          allRunning = r;
        });
        const onEvent = (e) => {
          if (e.type !== "started") return;
          arrivals.push(performance.now() - t);
          starts.push(e.startMs);
          pids.push(e.pid);
          if (arrivals.length === k) allRunning();
        };
        lab.on("event", onEvent);
        t = performance.now();
        const campaign = lab.runCampaign(restored, {
          runs: Array.from({ length: k }, () => ({ profile: idle })),
        });
        await Promise.race([running, campaign]);
        await new Promise((r) => setTimeout(r, 3000));
        const mem = pids.map((pid) => processMemory(pid));
        const availAfter = readMemInfo().availableBytes;
        lab.stopAll("benchmark: measured");
        await campaign;
        lab.off("event", onEvent);
        const run = {
          k,
          rep,
          to_k_ms: Math.round(arrivals[k - 1] ?? Number.NaN),
          first_ms: Math.round(arrivals[0] ?? Number.NaN),
          further_ms: arrivals.slice(1).map((a) => Math.round(a - arrivals[0])),
          start_ms: starts,
          rss_mb: mem.map((m) => Math.round((m?.rssBytes ?? 0) / MiB)),
          pss_mb: mem.map((m) => Math.round((m?.pssBytes ?? 0) / MiB)),
          host_available_drop_mb: Math.round((availBefore - availAfter) / MiB),
        };
        results.runs.push(run);
        say(
          `K=${k} rep ${rep + 1}: ${run.to_k_ms} ms to ${k} running (first ${run.first_ms} ms, further +${run.further_ms.join("/+") || "-"} ms); RSS ${run.rss_mb.join("/")} MiB, PSS ${run.pss_mb.join("/")} MiB; host MemAvailable -${run.host_available_drop_mb} MiB`,
        );
      }
    }
  } finally {
    await lab.close();
  }
} finally {
  await vm.stop({ timeoutMs: 10_000 });
  rmSync(work, { recursive: true, force: true });
}

const summary = ks.map((k) => {
  const rs = results.runs.filter((r) => r.k === k);
  const further = rs.flatMap((r) => r.further_ms);
  return {
    k,
    to_k_ms_median: median(rs.map((r) => r.to_k_ms)),
    to_k_ms_min: Math.min(...rs.map((r) => r.to_k_ms)),
    to_k_ms_max: Math.max(...rs.map((r) => r.to_k_ms)),
    first_ms_median: median(rs.map((r) => r.first_ms)),
    further_ms_max: further.length ? Math.max(...further) : null,
    rss_mb_median: median(rs.flatMap((r) => r.rss_mb)),
    pss_mb_median: median(rs.flatMap((r) => r.pss_mb)),
    host_drop_per_shadow_mb: median(rs.map((r) => Math.round(r.host_available_drop_mb / k))),
  };
});
results.summary = summary;
if (args.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
else {
  process.stdout.write(
    `restore from the store: ${results.restore_ms} ms (capture pause ${results.capture_pause_ms.toFixed(1)} ms); network ${results.network}; guest RAM ${results.memory_mb} MiB\n`,
  );
  process.stdout.write(
    "| K | to K running, median (min-max) ms | first ms | each further, worst ms | RSS/shadow MiB | PSS/shadow MiB | host MemAvailable drop/shadow MiB |\n",
  );
  process.stdout.write("| --- | --- | --- | --- | --- | --- | --- |\n");
  for (const s of summary) {
    process.stdout.write(
      `| ${s.k} | ${s.to_k_ms_median} (${s.to_k_ms_min}-${s.to_k_ms_max}) | ${s.first_ms_median} | ${s.further_ms_max ?? "-"} | ${s.rss_mb_median} | ${s.pss_mb_median} | ${s.host_drop_per_shadow_mb} |\n`,
    );
  }
}
