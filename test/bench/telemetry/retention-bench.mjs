#!/usr/bin/env node
// Retention benchmark: does retention keep the collector's database from growing, and what does
// pruning cost next to ingest? Simulated days of telemetry go through the collector's own write
// path (SampleAppender, 50k-row transactions, as a batch commit does), in three databases measured
// in the same run:
//
//   none         no retention: the baseline growth
//   prune        retention.samples_days = --keep-days, pruneStore once per simulated day on its own
//                connection (the collector prunes hourly; DuckDB checkpoints on its own when the
//                write-ahead log passes 16 MiB)
//   prune+ckpt   the same, and a FORCE CHECKPOINT after each prune
//
// Each reports the file size once the window is full (day --keep-days) and at the end (day --days),
// the time spent ingesting and pruning, and checks that no row past the retention is left. The
// prune run's database is then compacted (`shadowvm-collector compact`): size after, and time.
// Samples carry varied values (per-VM counters that grow, CPU that moves), so they compress as
// real telemetry does rather than as constants.
//
// Usage (after `npx tsc -b shared agent collector test`):
//   node test/bench/telemetry/retention-bench.mjs [--vms 100] [--interval-s 10] [--keep-days 7]
//        [--days 21] [--json out.json]
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { COUNTERS } from "../../../collector/dist/ingest/ingest-frame.js";
import { compactDatabase } from "../../../collector/dist/store/compact.js";
import { IngestStore } from "../../../collector/dist/store/ingest-store.js";
import { pruneStore, pruneTarget } from "../../../collector/dist/store/retention.js";
import { SampleAppender } from "../../../collector/dist/store/sample-appender.js";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const VMS = Number(opt("vms", "100"));
const INTERVAL_S = Number(opt("interval-s", "10"));
const KEEP_DAYS = Number(opt("keep-days", "7"));
const DAYS = Number(opt("days", "21"));
const jsonOut = opt("json", "");
const DAY = 86_400_000;
const ROWS_PER_DAY = Math.round((VMS * 86_400) / INTERVAL_S);
const START = Date.UTC(2026, 0, 1);
const dir = mkdtempSync(join(tmpdir(), "shadowvm-retention-bench-"));
const MiB = (b) => +(b / 2 ** 20).toFixed(1);
const BATCH = 2000;

/** A day's samples in frames of BATCH rows, as the ingest path hands them to the store. */
function* daySamples(day, state) {
  const vmUuid = Array.from({ length: BATCH }, (_, i) => `vm-${String(i % VMS).padStart(4, "0")}`);
  for (let first = 0; first < ROWS_PER_DAY; first += BATCH) {
    const n = Math.min(BATCH, ROWS_PER_DAY - first);
    const cols = {
      n,
      scope: new Uint8Array(n).fill(2),
      vmUuid: vmUuid.slice(0, n),
      ts: new Float64Array(n),
      cpu: new Float64Array(n),
      counters: new Float64Array(COUNTERS.length * n),
      extra: new Array(n).fill(null),
    };
    for (let r = 0; r < n; r++) {
      const row = first + r;
      const vm = row % VMS;
      cols.ts[r] = START + day * DAY + Math.floor(row / VMS) * INTERVAL_S * 1000;
      cols.cpu[r] = Math.round(Math.random() * 400) / 100;
      for (let c = 0; c < COUNTERS.length; c++) {
        state[vm * COUNTERS.length + c] += Math.floor(Math.random() * 65_536);
        cols.counters[c * n + r] = state[vm * COUNTERS.length + c];
      }
    }
    yield cols;
  }
}

async function simulate(mode) {
  const path = join(dir, `${mode}.duckdb`);
  const store = await IngestStore.open(path);
  const ingestConn = await store.connectReader();
  const pruneConn = await store.connectReader();
  const appender = await SampleAppender.create(ingestConn);
  const state = new Float64Array(VMS * COUNTERS.length);
  let ingestMs = 0;
  let pruneMs = 0;
  let pruned = 0;
  let sizeWindowFull = 0;
  const sizes = [];
  for (let day = 0; day < DAYS; day++) {
    const t0 = performance.now();
    let rows = 0;
    await ingestConn.run("BEGIN TRANSACTION");
    for (const cols of daySamples(day, state)) {
      appender.add("bench", cols);
      rows += cols.n;
      if (rows % 50_000 === 0) {
        appender.flush();
        await ingestConn.run("COMMIT");
        await ingestConn.run("BEGIN TRANSACTION");
      }
    }
    appender.flush();
    await ingestConn.run("COMMIT");
    ingestMs += performance.now() - t0;
    if (mode !== "none") {
      const result = await pruneStore(
        pruneTarget(pruneConn),
        {
          samples_days: KEEP_DAYS,
          ingest_frames_days: 0,
          production_events_days: 0,
          alerts_days: 0,
          shadow_results_days: 0,
        },
        { now: START + (day + 1) * DAY },
      );
      pruneMs += result.duration_ms;
      pruned += result.tables[0].rows;
      if (mode === "prune+ckpt") {
        const t1 = performance.now();
        await pruneConn.run("FORCE CHECKPOINT");
        pruneMs += performance.now() - t1;
      }
    }
    sizes.push(MiB(statSync(path).size));
    if (day + 1 === KEEP_DAYS) sizeWindowFull = statSync(path).size;
  }
  const cutoff = START + DAYS * DAY - KEEP_DAYS * DAY;
  const [{ past, total }] = await store.query(
    `SELECT count(*) FILTER (WHERE ts_ms < ${cutoff}) AS past, count(*) AS total FROM samples`,
  );
  appender.close();
  ingestConn.closeSync();
  pruneConn.closeSync();
  store.close();
  const sizeEnd = statSync(path).size;
  // What `shadowvm-collector compact` gives back at the end (the "prune" run only).
  const compacted = mode === "prune" ? await compactDatabase(path) : undefined;
  return {
    mode,
    rows_stored: Number(total),
    rows_past_retention: mode === "none" ? null : Number(past),
    rows_pruned: pruned,
    ingest_s: +(ingestMs / 1000).toFixed(1),
    prune_s: +(pruneMs / 1000).toFixed(2),
    prune_per_ingest: +(pruneMs / ingestMs).toFixed(4),
    mib_window_full: MiB(sizeWindowFull),
    mib_end: MiB(sizeEnd),
    growth_after_window: +(sizeEnd / sizeWindowFull).toFixed(2),
    ...(compacted
      ? { compact: { mib_after: MiB(compacted.bytes_after), s: +(compacted.duration_ms / 1000).toFixed(1) } }
      : {}),
    mib_per_day: sizes,
  };
}

const runs = [];
for (const mode of ["none", "prune", "prune+ckpt"]) runs.push(await simulate(mode));
rmSync(dir, { recursive: true, force: true });

const result = {
  vms: VMS,
  interval_s: INTERVAL_S,
  rows_per_day: ROWS_PER_DAY,
  keep_days: KEEP_DAYS,
  days: DAYS,
  runs,
  loadavg: loadavg().map((l) => +l.toFixed(2)),
};
console.log(JSON.stringify(result, null, 2));
for (const r of runs) {
  if (r.rows_past_retention) {
    console.error(`FAIL: ${r.mode}: ${r.rows_past_retention} rows past the retention remain`);
    process.exitCode = 1;
  }
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(result, null, 2));
