import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { silentLogger } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { main } from "../cli/main.js";
import { loadCollectorConfig } from "../config/collector-config.js";
import { IngestStore } from "./ingest-store.js";
import { MIGRATIONS } from "./migrations.js";
import {
  type PruneResult,
  pruneStore,
  pruneTarget,
  type RetentionPolicy,
  RetentionService,
  retentionProblems,
} from "./retention.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-retention-"));
const NOW = 1_790_000_000_000;
const daysAgo = (d: number) => NOW - d * 86_400_000;
const POLICY: RetentionPolicy = {
  samples_days: 30,
  ingest_frames_days: 7,
  production_events_days: 30,
  alerts_days: 90,
  shadow_results_days: 60,
};

/** A database with rows on both sides of every cutoff of POLICY. */
async function seeded(name: string): Promise<IngestStore> {
  const store = await IngestStore.open(join(dir, `${name}.duckdb`));
  const q = (sql: string) => store.query(sql);
  for (const [i, d] of [40, 29, 0].entries())
    await q(
      `INSERT INTO samples (agent_id, scope, vm_uuid, ts_ms) VALUES ('a', 2, 'vm-${i}', ${daysAgo(d)})`,
    );
  for (const [seq, d] of [8, 1].entries())
    await q(
      `INSERT INTO ingest_frames VALUES ('a', 1, ${seq + 1}, 'telemetry_batch', 1, 100, ${daysAgo(d)}, ${daysAgo(d)})`,
    );
  await q("INSERT INTO ingest_streams VALUES ('a', 1, 2, 2, 0)");
  // The host lists vm-1 only: vm-gone left 40 days ago, vm-just-gone yesterday.
  await q(`INSERT INTO hosts VALUES ('a', 'kvm-a', 8, 1, 'k', 'qemu', '8', '[]', '["vm-1"]', ${NOW})`);
  for (const [uuid, d] of [
    ["vm-1", 40],
    ["vm-gone", 40],
    ["vm-just-gone", 1],
  ] as const)
    await q(
      `INSERT INTO vms VALUES ('a', '${uuid}', '${uuid}', 'running', 1, 256, 'q35', '[]', '[]', '[]', 1, '{}', ${daysAgo(d)})`,
    );
  for (const [i, d] of [31, 1].entries())
    await q(
      `INSERT INTO production_events (event_id, agent_id, vm_uuid, vm_name, ts_ms, kind, fingerprint, title, class, line, pattern, suppressed, received_at_ms)
       VALUES ('e${i}', 'a', 'vm-1', 'web-1', ${daysAgo(d)}, 'precursor', 'f', 't', 'oom', 'l', 'p', 0, ${daysAgo(d)})`,
    );
  const alert = (id: string, status: string, delivered: boolean, startDays: number, endDays: number | null) =>
    q(`INSERT INTO alerts (alert_id, vm_uuid, vm_name, fingerprint, title, class, severity, status, starts_at_ms,
         ends_at_ms, updated_at_ms, send_count, delivered, confidence, confidence_level, summary, mitigation, link,
         labels, annotations)
       VALUES ('${id}', 'vm-1', 'web-1', 'f', 't', 'oom', 'warning', '${status}', ${daysAgo(startDays)},
         ${endDays === null ? "NULL" : daysAgo(endDays)}, ${NOW}, 1, ${delivered}, 0.5, 'medium', 's', 'm', 'l', '{}', '{}')`);
  await alert("old-resolved", "resolved", true, 120, 100);
  await alert("old-resolved-undelivered", "resolved", false, 120, 100);
  await alert("old-firing", "firing", true, 100, null);
  await alert("recent-resolved", "resolved", true, 20, 10);
  for (const d of [91, 1])
    await q(
      `INSERT INTO alert_deliveries VALUES ('old-firing', ${daysAgo(d)}, 'am', 'alertmanager', 'firing', true, 200, NULL)`,
    );
  const run = (id: string, d: number) =>
    q(`INSERT INTO shadow_runs (agent_id, id, campaign_id, capture_id, vm_name, vm_uuid, strategy, control,
         started_at_ms, finished_at_ms, outcome, failure_count, notes, updated_at_ms)
       VALUES ('a', '${id}', 'c', 'cap', 'web-1', 'vm-1', 'adaptive', false, ${daysAgo(d)}, ${daysAgo(d)}, 'failed', 1, '[]', 0)`);
  const failure = (id: string, runId: string, d: number) =>
    q(`INSERT INTO failures (failure_id, agent_id, shadow_run_id, title, class, frame, fingerprint, corrupted, evidence,
         offset_ms, source, received_at_ms)
       VALUES ('${id}', 'a', '${runId}', 't', 'oom', '', 'f', false, '[]', 0, 'console', ${daysAgo(d)})`);
  await run("old-run", 70);
  await run("new-run", 10);
  // A failure of the old run received recently still goes with its run; the new run's stays.
  await failure("f-old-1", "old-run", 70);
  await failure("f-old-2", "old-run", 1);
  await failure("f-new", "new-run", 10);
  await failure("f-orphan-old", "never-arrived", 70);
  await failure("f-orphan-new", "never-arrived", 1);
  const capture = (id: string, status: string, d: number) =>
    q(
      `INSERT INTO captures VALUES ('a', '${id}', 'web-1', 'vm-1', ${daysAgo(d)}, ${daysAgo(d)}, 5, 1, 1, 1, 1, '[]', 'x', '${status}', '', 0)`,
    );
  await capture("old-ok", "ok", 70);
  await capture("old-running", "running", 70);
  await capture("new-ok", "ok", 1);
  return store;
}

const ids = async (store: IngestStore, sql: string) =>
  (await store.query(sql)).map((r) => String(Object.values(r)[0])).sort();

const deleted = (r: PruneResult) => Object.fromEntries(r.tables.map((t) => [t.table, t.rows]));

test("deletes exactly the rows past each table's retention; a dry run counts the same and deletes nothing", async () => {
  const store = await seeded("prune");
  const conn = await store.connectReader();
  const dry = await pruneStore(pruneTarget(conn), POLICY, { now: NOW, dryRun: true });
  const expected = {
    samples: 1,
    vms: 1,
    ingest_frames: 1,
    production_events: 1,
    alert_deliveries: 1,
    alerts: 1,
    failures: 3,
    shadow_runs: 1,
    captures: 1,
  };
  assert.equal(deleted(dry), expected);
  assert.is(dry.dry_run, true);
  assert.equal(await ids(store, "SELECT count(*) FROM samples"), ["3"], "a dry run deletes nothing");

  const real = await pruneStore(pruneTarget(conn), POLICY, { now: NOW });
  assert.equal(deleted(real), expected);
  assert.is(real.tables.find((t) => t.table === "samples")?.cutoff_ms, daysAgo(30));
  assert.equal(await ids(store, "SELECT vm_uuid FROM samples"), ["vm-1", "vm-2"]);
  assert.equal(
    await ids(store, "SELECT uuid FROM vms"),
    ["vm-1", "vm-just-gone"],
    "only the VM that left long ago",
  );
  assert.equal(await ids(store, "SELECT seq FROM ingest_frames"), ["2"]);
  assert.equal(await ids(store, "SELECT committed_seq FROM ingest_streams"), ["2"], "dedupe marks are kept");
  assert.equal(await ids(store, "SELECT event_id FROM production_events"), ["e1"]);
  assert.equal(await ids(store, "SELECT alert_id FROM alerts"), [
    "old-firing",
    "old-resolved-undelivered",
    "recent-resolved",
  ]);
  assert.equal(await ids(store, "SELECT at_ms FROM alert_deliveries"), [String(daysAgo(1))]);
  assert.equal(await ids(store, "SELECT id FROM shadow_runs"), ["new-run"]);
  assert.equal(await ids(store, "SELECT failure_id FROM failures"), ["f-new", "f-orphan-new"]);
  assert.equal(await ids(store, "SELECT id FROM captures"), ["new-ok", "old-running"]);

  const again = await pruneStore(pruneTarget(conn), POLICY, { now: NOW });
  assert.ok(
    again.tables.every((t) => t.rows === 0),
    "a second prune finds nothing",
  );
  conn.closeSync();
  store.close();
});

test("0 days keeps a table forever; a read-only target refuses to delete", async () => {
  const store = await seeded("forever");
  const conn = await store.connectReader();
  const result = await pruneStore(
    pruneTarget(conn),
    { ...POLICY, samples_days: 0, shadow_results_days: 0 },
    { now: NOW },
  );
  const tables = result.tables.map((t) => t.table);
  for (const kept of ["samples", "shadow_runs", "failures", "captures"])
    assert.not.ok(tables.includes(kept), kept);
  assert.equal(await ids(store, "SELECT count(*) FROM samples"), ["3"]);
  assert.equal(await ids(store, "SELECT count(*) FROM failures"), ["5"]);
  const refused = await pruneStore({ query: store.query.bind(store) }, POLICY, { now: NOW }).then(
    () => undefined,
    (err: Error) => err.message,
  );
  assert.match(refused ?? "", /read-only \(use dryRun\)/);
  conn.closeSync();
  store.close();
});

test("a database from an older collector (tables missing) is named as such, not a raw catalog error", async () => {
  const instance = await DuckDBInstance.create(join(dir, "v1.duckdb"));
  const conn = await instance.connect();
  for (const statement of MIGRATIONS[0]!.statements) await conn.run(statement);
  const err = await pruneStore(pruneTarget(conn), POLICY, { now: NOW, dryRun: true }).then(
    () => undefined,
    (e: Error) => e.message,
  );
  assert.match(
    err ?? "",
    /the database has no table production_events, alert_deliveries, alerts: it was written by an older collector; start `shadowvm-collector serve` once to migrate it/,
  );
  conn.closeSync();
  instance.closeSync();
});

test("the service prunes at start, keeps the last result, and reports it", async () => {
  const store = await seeded("service");
  const pruned: PruneResult[] = [];
  const service = new RetentionService({
    conn: await store.connectReader(),
    // The service prunes relative to the real clock: every seeded sample is older than a day.
    policy: { ...POLICY, samples_days: 1 },
    schedule: "",
    logger: silentLogger(),
    onPruned: (r) => pruned.push(r),
  });
  service.start();
  const first = await service.prune(); // waits for the start-up prune, then runs again
  assert.is(pruned.length, 2);
  assert.ok((pruned[0]!.tables.find((t) => t.table === "samples")?.rows ?? 0) >= 1, "start-up prune deleted");
  assert.equal(service.status().last, first);
  assert.is(service.status().last_error, undefined);
  assert.equal(await ids(store, "SELECT count(*) FROM samples"), ["0"]);
  const due = await service.dryRun();
  assert.ok(due.dry_run && due.tables.every((t) => t.rows === 0));
  await service.close();
  store.close();
});

test("retentions shorter than what the risk engine reads are refused, naming the key", () => {
  const config = loadCollectorConfig(
    {},
    {
      SHADOWVM_COLLECTOR__RETENTION__SAMPLES_DAYS: "0.1",
      SHADOWVM_COLLECTOR__RETENTION__PRODUCTION_EVENTS_DAYS: "3",
    },
  );
  const problems = retentionProblems(config);
  assert.is(problems.length, 2);
  assert.match(
    problems[0]!,
    /retention\.samples_days is invalid: expected 0 \(keep forever\) or at least 0\.25 days/,
  );
  assert.match(problems[1]!, /retention\.production_events_days is invalid: .*at least 7 days/);
  assert.equal(retentionProblems(loadCollectorConfig({}, {})), []);
  assert.equal(
    retentionProblems(loadCollectorConfig({}, { SHADOWVM_COLLECTOR__RETENTION__SAMPLES_DAYS: "0" })),
    [],
  );
});

test("CLI: prune on a stopped collector's database: --dry-run counts, then it deletes", async () => {
  const dataDir = join(dir, "cli");
  const store = await IngestStore.open(join(dataDir, "shadowvm.duckdb"));
  const old = Date.now() - 40 * 86_400_000;
  await store.query(
    `INSERT INTO samples (agent_id, scope, vm_uuid, ts_ms) VALUES ('a', 2, 'v', ${old}), ('a', 2, 'v', ${Date.now()})`,
  );
  store.close();
  const run = async (...args: string[]) => {
    let out = "";
    let err = "";
    const code = await main(
      args.includes("--data-dir") ? args : [...args, "--data-dir", dataDir],
      { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) },
      {},
    );
    return { code, out, err };
  };
  const dry = await run("prune", "--dry-run");
  assert.is(dry.code, 0, dry.err);
  assert.match(dry.out, /TABLE\s+KEPT\s+OLDER THAN\s+WOULD DELETE\n/);
  assert.match(dry.out, /samples\s+30 d\s+\S+\s+1\n/);
  assert.match(dry.err, /would delete 1 row\(s\) .*\(dry run: nothing deleted\)/);
  const real = await run("prune", "--json");
  assert.is(real.code, 0, real.err);
  assert.is(JSON.parse(real.out).tables.find((t: { table: string }) => t.table === "samples").rows, 1);
  const again = await IngestStore.open(join(dataDir, "shadowvm.duckdb"));
  assert.equal(await ids(again, "SELECT count(*) FROM samples"), ["1"], "the recent sample stays");
  again.close();
  const none = await run("prune", "--data-dir", join(dir, "no-such-dir"));
  assert.is(none.code, 1);
  assert.match(none.err, /no collector database at .*no-such-dir/);
  assert.is((await run("prune", "now")).code, 2);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
