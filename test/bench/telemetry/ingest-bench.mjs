#!/usr/bin/env node
// Ingest benchmark: the end-to-end rate (agent spool -> wss:// -> collector decode + validate ->
// DuckDB commit -> Ack -> agent deletes) next to the raw DuckDB Appender rate, measured in the same
// run on the same machine.
//
//   raw, chunked    the collector's SampleAppender (DataChunk + appendDataChunk) fed with samples
//                   already decoded into columns, one transaction per 50k rows: the store's ceiling
//   raw, row-wise   DuckDB's plain appender, value by value (appendVarchar, appendUBigInt, ...)
//   end-to-end      K load-agent processes with pre-filled spools (frames of F samples); the clock
//                   runs from the collector process being ready until every agent has had its
//                   whole spool acknowledged (acks are sent only after the commit)
//
// Usage (after `npx tsc -b shared agent collector test`):
//   node test/bench/telemetry/ingest-bench.mjs [--agents 4] [--frames 100] [--samples 2000]
//        [--raw-rows 1000000] [--decode-workers 1] [--json out.json]
// --decode-workers 0 decodes on the collector's main thread (ingest.decode_workers).
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { decodeFrame, encodeFrame } from "@shadowvm/shared";
import { COUNTERS, toIngestFrame } from "../../../collector/dist/ingest/ingest-frame.js";
import { MIGRATIONS } from "../../../collector/dist/store/migrations.js";
import { SampleAppender } from "../../../collector/dist/store/sample-appender.js";
import { createTestPki } from "../../dist/telemetry/fixtures/pki.js";
import {
  CollectorProcess,
  killAll,
  LOAD_AGENT,
  metricValue,
} from "../../dist/telemetry/fixtures/processes.js";

// @duckdb/node-api is the collector's dependency, not the test package's.
const { DuckDBInstance } = createRequire(new URL("../../../collector/package.json", import.meta.url))(
  "@duckdb/node-api",
);

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const AGENTS = Number(opt("agents", "4"));
const FRAMES = Number(opt("frames", "100"));
const SAMPLES = Number(opt("samples", "2000"));
const RAW_ROWS = Number(opt("raw-rows", "1000000"));
const DECODE_WORKERS = Number(opt("decode-workers", "1"));
const jsonOut = opt("json", "");
const dir = mkdtempSync(join(tmpdir(), "shadowvm-ingest-bench-"));

function sampleObject(r, k) {
  return {
    scope: 2,
    vm_uuid: `vm-${k}`,
    ts_ms: 1_000_000_000_000 + r,
    cpu_usage: (r % 100) / 100,
    memory_used_bytes: r,
    memory_available_bytes: 2 ** 31,
    disk_read_bytes: r * 4096,
    disk_write_bytes: r * 8192,
    net_rx_bytes: r,
    net_tx_bytes: r,
  };
}

async function freshDb(name) {
  const inst = await DuckDBInstance.create(join(dir, name));
  const conn = await inst.connect();
  for (const s of MIGRATIONS[0].statements) if (s.includes("CREATE TABLE samples")) await conn.run(s);
  return { inst, conn };
}

async function rawChunked() {
  const { inst, conn } = await freshDb("raw-chunk.duckdb");
  const appender = await SampleAppender.create(conn);
  // The store's input: a frame's samples as columns, decoded once up front.
  const samples = Array.from({ length: SAMPLES }, (_, i) => sampleObject(i, i % 20));
  const bytes = encodeFrame({
    agent_id: "agent-bench",
    epoch: 1,
    seq: 1,
    sent_at_ms: 1,
    telemetry_batch: { samples },
  });
  const batch = toIngestFrame(decodeFrame(bytes), bytes.byteLength).samples;
  const started = performance.now();
  let rows = 0;
  while (rows < RAW_ROWS) {
    await conn.run("BEGIN TRANSACTION");
    for (let n = 0; n < 50_000 && rows < RAW_ROWS; n += SAMPLES, rows += SAMPLES)
      appender.add("agent-bench", batch);
    appender.flush();
    await conn.run("COMMIT");
  }
  const secs = (performance.now() - started) / 1000;
  appender.close();
  conn.closeSync();
  inst.closeSync();
  return { rows, secs, rate: rows / secs };
}

async function rawRowWise() {
  const { inst, conn } = await freshDb("raw-row.duckdb");
  const app = await conn.createAppender("samples");
  const batch = Array.from({ length: SAMPLES }, (_, i) => sampleObject(i, i % 20));
  const rowsWanted = Math.min(RAW_ROWS, 400_000);
  const started = performance.now();
  let rows = 0;
  while (rows < rowsWanted) {
    await conn.run("BEGIN TRANSACTION");
    for (let n = 0; n < 50_000 && rows < rowsWanted; n += SAMPLES, rows += SAMPLES) {
      for (const s of batch) {
        app.appendVarchar("agent-bench");
        app.appendUTinyInt(s.scope);
        app.appendVarchar(s.vm_uuid);
        app.appendBigInt(BigInt(s.ts_ms));
        app.appendDouble(s.cpu_usage);
        for (const c of COUNTERS) app.appendUBigInt(BigInt(s[c] ?? 0));
        app.appendNull();
        app.endRow();
      }
    }
    app.flushSync();
    await conn.run("COMMIT");
  }
  const secs = (performance.now() - started) / 1000;
  app.closeSync();
  conn.closeSync();
  inst.closeSync();
  return { rows, secs, rate: rows / secs };
}

function startLoadAgent(i, collector, pki, tokenFile) {
  const a = {
    agentId: `bench-${i}`,
    dataDir: join(dir, `agent-${i}`),
    url: collector.url,
    caFile: pki.caFile,
    tokenFile,
    records: FRAMES,
    firstRecord: i * 1_000_000,
    samplesPerRecord: SAMPLES,
    burst: 10,
    burstIntervalMs: 0,
    reconnectMinMs: 50,
    reconnectMaxMs: 100,
    exitWhenDrained: true,
  };
  const child = spawn(process.execPath, [LOAD_AGENT, JSON.stringify(a)], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const state = { child, appended: false, drainedAt: 0 };
  let buf = "";
  child.stdout.on("data", (d) => {
    buf += d;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith("APPENDED")) state.appended = true;
      if (line === "DRAINED") state.drainedAt = performance.now();
    }
  });
  return state;
}

/** utime + stime of a process, in seconds (0 once it is gone). */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

async function until(cond, what, timeoutMs = 600_000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function endToEnd() {
  const pki = createTestPki(dir);
  const collector = await CollectorProcess.create({
    name: "bench-collector",
    dir,
    pki,
    // e.g. BENCH_COLLECTOR_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the collector
    nodeArgs: (process.env.BENCH_COLLECTOR_NODE_ARGS ?? "").split(" ").filter(Boolean),
    ingest: { decode_workers: DECODE_WORKERS },
  });
  // Enroll every agent first (with the collector up), then stop it so the spools fill.
  await collector.start();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, collector.createToken());
  await collector.kill("SIGTERM");
  const agents = Array.from({ length: AGENTS }, (_, i) => startLoadAgent(i, collector, pki, tokenFile));
  const fillStarted = performance.now();
  await until(() => agents.every((a) => a.appended), "the spools to fill");
  const fillSecs = (performance.now() - fillStarted) / 1000;
  await collector.start();
  const started = performance.now();
  const cpu0 = cpuSeconds(collector.child.pid);
  const agentCpu0 = agents.map((a) => cpuSeconds(a.child.pid));
  await until(() => agents.every((a) => a.drainedAt > 0), "every spool to drain");
  const secs = (Math.max(...agents.map((a) => a.drainedAt)) - started) / 1000;
  const collectorCpu = cpuSeconds(collector.child.pid) - cpu0;
  const agentCpu = agents.reduce(
    (sum, a, i) => sum + (a.child.exitCode === null ? cpuSeconds(a.child.pid) - agentCpu0[i] : 0),
    0,
  );
  const m = await collector.metrics();
  const rows = metricValue(m, "shadowvm_collector_rows_written_total", { table: "samples" });
  const commitSum = metricValue(m, "shadowvm_collector_commit_duration_seconds_sum");
  const commits = metricValue(m, "shadowvm_collector_commit_duration_seconds_count");
  await collector.kill("SIGTERM");
  return {
    rows,
    secs,
    rate: rows / secs,
    collectorCpuPercent: (collectorCpu / secs) * 100,
    agentsCpuPercent: (agentCpu / secs) * 100,
    commits,
    avgCommitMs: (commitSum / commits) * 1000,
    fillRate: (AGENTS * FRAMES * SAMPLES) / fillSecs,
  };
}

try {
  const raw = await rawChunked();
  const rowWise = await rawRowWise();
  const e2e = await endToEnd();
  const expected = AGENTS * FRAMES * SAMPLES;
  if (e2e.rows !== expected) throw new Error(`stored ${e2e.rows} samples, expected ${expected}`);
  const result = {
    machine: `${cpus().length} x ${cpus()[0]?.model ?? "?"}`,
    node: process.version,
    config: {
      agents: AGENTS,
      frames_per_agent: FRAMES,
      samples_per_frame: SAMPLES,
      decode_workers: DECODE_WORKERS,
    },
    raw_chunked: raw,
    raw_row_wise: rowWise,
    end_to_end: e2e,
    e2e_share_of_raw: e2e.rate / raw.rate,
  };
  const f = (n) => Math.round(n).toLocaleString("en-US");
  console.log(
    `machine: ${result.machine}, node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}`,
  );
  console.log(
    `raw DuckDB appender, chunked: ${f(raw.rate)} samples/s (${f(raw.rows)} rows in ${raw.secs.toFixed(2)} s)`,
  );
  console.log(
    `raw DuckDB appender, row-wise: ${f(rowWise.rate)} samples/s (${f(rowWise.rows)} rows in ${rowWise.secs.toFixed(2)} s)`,
  );
  console.log(
    `end to end (ack after commit): ${f(e2e.rate)} samples/s (${f(e2e.rows)} samples from ${AGENTS} agents in ${e2e.secs.toFixed(2)} s, ` +
      `${e2e.commits} commits, ${e2e.avgCommitMs.toFixed(1)} ms each on average; collector CPU ${e2e.collectorCpuPercent.toFixed(0)}% ` +
      `of one core, agents ${e2e.agentsCpuPercent.toFixed(0)}% until they exit)`,
  );
  console.log(
    `end to end / raw chunked: ${(result.e2e_share_of_raw * 100).toFixed(0)}%; agents filled their spools at ${f(e2e.fillRate)} samples/s`,
  );
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify(result, null, 2)}\n`);
} finally {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
}
