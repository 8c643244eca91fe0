#!/usr/bin/env node
// Query API latency on a full store: 10M telemetry samples, 100k failures (over 20k shadow runs and
// 2k signatures), 1,000 VMs on 50 hosts and 24 rounds of risk assessments (3 signatures per VM each,
// 72k rows), in the collector's real schema (IngestStore.open runs the migrations). The store is
// filled with DuckDB INSERT ... SELECT over range() (10M samples through the wire would take
// minutes and measure ingest, which docs/benchmarks-telemetry.md does); the API is the real one
// (startApi: HTTP server, auth, validation, the reader pool on the collector's own instance),
// queried over loopback HTTP with a read token.
//
// Measured, sequentially after a warm-up: GET /api/v1/vms?limit=50 (the fleet's VMs with current
// risk, highest first), GET /api/v1/signatures/<fp> (one signature with where and when it
// occurred), GET /api/v1/signatures?limit=50 and GET /api/v1/failures?fingerprint=<fp>&limit=50.
// Then the VM risk list again while a writer commits 2,000-row sample batches on the ingest
// connection (reads must not wait for ingest).
//
// Usage (after `npx tsc -b shared agent collector test`):
//   node test/bench/api/api-bench.mjs [--samples 10000000] [--failures 100000] [--requests 1000] [--json out.json]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { startApi } from "../../../collector/dist/api/api-server.js";
import { ApiTokenStore } from "../../../collector/dist/api/api-token-store.js";
import { apiTokenDir, collectorConfigSchema } from "../../../collector/dist/config/collector-config.js";
import { IngestStore } from "../../../collector/dist/store/ingest-store.js";
import { silentLogger } from "../../../shared/dist/index.js";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const SAMPLES = Number(opt("samples", 10_000_000));
const FAILURES = Number(opt("failures", 100_000));
const REQUESTS = Number(opt("requests", 1000));
const HOSTS = 50;
const VMS = 1000;
const RUNS = 20_000;
const SIGS = 2000;
const ROUNDS = 24;
const NOW = Date.now();

const dir = mkdtempSync(join(tmpdir(), "shadowvm-api-bench-"));
const config = collectorConfigSchema.parse({
  data_dir: dir,
  tls: { required: false },
  api: { host: "127.0.0.1", port: 0, rate_limit_per_minute: 10_000_000 },
  reports: { schedule: "" },
});
const t0 = performance.now();
const store = await IngestStore.open(join(dir, "shadowvm.duckdb"));
const q = (sql, v) => store.query(sql, v);

await q(`INSERT INTO hosts SELECT 'agent-' || i, 'kvm-' || i, 32, 128 * 1024^3, '6.1.0', 'qemu', '8.2',
  '["capture","shadow"]', to_json(list_transform(range(20), k -> 'vm-' || (i * 20 + k))), ${NOW}
  FROM range(${HOSTS}) t(i)`);
await q(`INSERT INTO vms SELECT 'agent-' || (i // 20), 'vm-' || i, 'vm-name-' || i, 'running', 4, 8192, 'pc-q35-8.2',
  '[]', '[]', '[]', 1000 + i, '{"image":"debian-12"}', ${NOW} FROM range(${VMS}) t(i)`);
// 10M samples: 1,000 VMs every 10 s back from now (10k per VM), operating point in extra.
await q(`INSERT INTO samples SELECT 'agent-' || ((i % ${VMS}) // 20), 2, 'vm-' || (i % ${VMS}),
  ${NOW} - (i // ${VMS}) * 10000, random() * 4, 2^30, 2^32, 0, i, i, i, i, i, i, i, i, 0, 0,
  '{"op_avg_cpu":0.5,"op_avg_memory":0.3,"op_avg_disk_io":0.1}'
  FROM range(${SAMPLES}) t(i)`);
await q(`INSERT INTO shadow_runs SELECT 'agent-' || ((i % ${VMS}) // 20), 'run-' || i, 'camp-' || (i // 100), 'cap-' || (i % ${VMS}),
  'vm-name-' || (i % ${VMS}), 'vm-' || (i % ${VMS}),
  to_json({'cpu_load': (i % 10) / 10, 'memory_load': (i % 7) / 7, 'io_load': 0.1, 'duration_s': 60}),
  'random', false, ${NOW} - i * 60000, ${NOW} - i * 60000 + 30000, CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'ok' END,
  5, '[]', ${NOW} FROM range(${RUNS}) t(i)`);
await q(`INSERT INTO failures (failure_id, agent_id, shadow_run_id, title, class, frame, fingerprint, corrupted, evidence, offset_ms, source, received_at_ms)
  SELECT md5(i::VARCHAR), 'agent-' || (((i % ${RUNS}) % ${VMS}) // 20), 'run-' || (i % ${RUNS}),
  'BUG: failure kind ' || (i % ${SIGS}), 'oops', 'frame_' || (i % ${SIGS}), 'fp-' || (i % ${SIGS}), false,
  '["line 1","line 2"]', 1000 * (i % 60), 'console', ${NOW} FROM range(${FAILURES}) t(i)`);
await q(`INSERT INTO signatures SELECT agent_id, fingerprint, any_value(title), 'oops', min(received_at_ms) - 3600000,
  max(received_at_ms), count(*), to_json(list(DISTINCT 'vm-' || ((regexp_extract(shadow_run_id, '\\d+')::INT) % ${VMS}))),
  '[{"cpu_load":0.9}]', ${NOW} FROM failures GROUP BY agent_id, fingerprint`);
await q(
  `INSERT INTO risk_rounds SELECT ${NOW} - r * 3600000, 'bench', 10, ${VMS}, ${VMS * 3} FROM range(${ROUNDS}) t(r)`,
);
await q(`INSERT INTO risk_assessments SELECT ${NOW} - r * 3600000, 'vm-' || v, 'vm-name-' || v, 'agent-' || (v // 20),
  'fp-' || ((v * 3 + s) % ${SIGS}), 'BUG: failure kind ' || ((v * 3 + s) % ${SIGS}), 'oops', 'own', 'assessed',
  ((v * 7 + s * 13 + r) % 100) / 100.0, 0.7, 'medium', 12, 24, 'cpu_load', 0.85, 0.05, 0.6, 0.01, 0.84, 0.05, 360, 30, 10, 0,
  '[]', '[]', 'cpu_load dominates', '[{"action":"reduce CPU overcommit"}]', '{}'
  FROM range(${ROUNDS}) a(r), range(${VMS}) b(v), range(3) c(s)`);
await q("CHECKPOINT");
const counts = (
  await q(`SELECT (SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM failures) AS failures,
  (SELECT count(*) FROM shadow_runs) AS runs, (SELECT count(*) FROM signatures) AS signatures,
  (SELECT count(*) FROM risk_assessments) AS assessments, (SELECT count(*) FROM vms) AS vms`)
)[0];
const fillS = (performance.now() - t0) / 1000;
console.log(
  `filled in ${fillS.toFixed(1)} s:`,
  Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, Number(v)])),
);

const api = await startApi(config, store, silentLogger());
const { token } = new ApiTokenStore(apiTokenDir(config)).create({ scope: "read" });
const base = `http://127.0.0.1:${api.port}`;
const headers = { authorization: `Bearer ${token}` };

async function measure(name, pathOf, n = REQUESTS) {
  for (let i = 0; i < 20; i++) await (await fetch(`${base}${pathOf(i)}`, { headers })).arrayBuffer();
  const ms = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const res = await fetch(`${base}${pathOf(i)}`, { headers });
    await res.arrayBuffer();
    ms.push(performance.now() - s);
    if (res.status !== 200) throw new Error(`${name}: HTTP ${res.status}`);
  }
  ms.sort((a, b) => a - b);
  const pct = (p) => ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))];
  const r = {
    name,
    requests: n,
    p50_ms: +pct(50).toFixed(2),
    p99_ms: +pct(99).toFixed(2),
    max_ms: +ms.at(-1).toFixed(2),
  };
  console.log(JSON.stringify(r));
  return r;
}

const results = [];
results.push(await measure("vm risk list (GET /vms?limit=50)", () => "/api/v1/vms?limit=50"));
results.push(
  await measure("signature (GET /signatures/{fp})", (i) => `/api/v1/signatures/fp-${(i * 37) % SIGS}`),
);
results.push(await measure("signature list (GET /signatures?limit=50)", () => "/api/v1/signatures?limit=50"));
results.push(
  await measure(
    "failures of a signature (GET /failures?fingerprint=&limit=50)",
    (i) => `/api/v1/failures?fingerprint=fp-${(i * 37) % SIGS}&limit=50`,
  ),
);

// The risk list again while ingest commits batches of 2,000 samples on the writer connection.
let writing = true;
let batches = 0;
const writer = (async () => {
  let k = 0;
  while (writing) {
    await q(
      `INSERT INTO samples SELECT 'agent-0', 2, 'vm-0', ${NOW} + ${k} * 2000 + i, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL FROM range(2000) t(i)`,
    );
    k++;
    batches++;
  }
})();
results.push(await measure("vm risk list during ingest", () => "/api/v1/vms?limit=50"));
writing = false;
await writer;
console.log(`ingest meanwhile: ${batches} batches of 2,000 samples committed`);

await api.close();
store.close();
rmSync(dir, { recursive: true, force: true });
const out = {
  date: new Date().toISOString(),
  cpus: cpus().length,
  cpu: cpus()[0]?.model,
  counts: Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, Number(v)])),
  fill_s: +fillS.toFixed(1),
  ingest_batches_during: batches,
  results,
};
const json = opt("json", "");
if (json) writeFileSync(json, `${JSON.stringify(out, null, 2)}\n`);
const bad = results.filter((r) => r.p99_ms > 50);
console.log(bad.length ? `p99 over 50 ms: ${bad.map((r) => r.name).join(", ")}` : "all p99 <= 50 ms");
