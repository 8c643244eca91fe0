// The report service on a real DuckDB store (the collector's schema, migrations included): what a
// report contains, what changed since the previous one, CSV quoting, Parquet through DuckDB's COPY,
// retention by count and age, the node-cron schedule, and an empty fleet. The API and Chromium
// side (real ingest, downloads, charts drawn) is in api.test.ts.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ReaderPool } from "@shadowvm/collector/api/reader-pool";
import { DuckDbRiskSource } from "@shadowvm/collector/api/risk-source";
import { ReportService, vmLabeller } from "@shadowvm/collector/reports/report-service";
import { IngestStore } from "@shadowvm/collector/store/ingest-store";
import { waitFor } from "@shadowvm/shared";
import { suite } from "uvu";
import * as assert from "uvu/assert";

const test = suite("risk reports");
const run = promisify(execFile);
const COLLECTOR_BIN = join(import.meta.dirname, "..", "..", "collector", "bin", "shadowvm-collector.js");
const dir = mkdtempSync(join(tmpdir(), "shadowvm-reports-"));
const NOW = Date.now();
let store: IngestStore;
let db: ReaderPool;

function service(sub: string, options: Partial<{ maxReports: number; retentionDays: number }> = {}) {
  return new ReportService({
    dir: join(dir, sub),
    db,
    risk: new DuckDbRiskSource(db),
    atRiskThreshold: 0.5,
    retentionDays: options.retentionDays ?? 30,
    maxReports: options.maxReports ?? 10,
  });
}

async function round(at: number, rows: [vm: string, fp: string, probability: number][]) {
  await store.query("INSERT INTO risk_rounds VALUES ($1, 'test', 1, 2, $2)", [at, rows.length]);
  for (const [vm, fp, p] of rows)
    await store.query(
      `INSERT INTO risk_assessments VALUES ($1, $2, $3, 'agent-a', $4, 'title ' || $4, 'oops', 'own', 'assessed', $5,
        0.8, 'high', 5, 24, 'cpu_load', 0.8, 0.05, 0.7, 0.02, 0.78, 0.03, 100, 6, 3, 0, '[]', '[]',
        'because', '[{"action":"do something","because":"reasons"}]', '{}')`,
      [at, vm, vm === "vm-1" ? 'web "one", east' : "db-2", fp, p],
    );
}

test.before(async () => {
  store = await IngestStore.open(join(dir, "shadowvm.duckdb"));
  db = await ReaderPool.create(() => store.connectReader(), 2);
});

test.after(() => {
  db.close(); // both are no-ops when the last test closed them already
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

test("an empty fleet gives a report with empty charts", async () => {
  const s = service("empty");
  const m = await s.generate("cli");
  assert.is(m.vms, 0);
  const html = readFileSync(s.file(m.id, "html")!.path, "utf8");
  assert.match(html, /No risk assessments yet/);
  assert.match(html, /No failure signatures yet/);
  assert.match(html, /First report: nothing to compare with/);
  assert.is(readFileSync(s.file(m.id, "csv")!.path, "utf8").trim().split("\n").length, 1);
});

test("ranking, at-risk details, CSV quoting, Parquet, and what changed since the last report", async () => {
  await store.query(
    `INSERT INTO hosts VALUES ('agent-a', 'kvm-a', 8, 1, 'k', 'qemu', '8', '[]', '["vm-1","vm-2"]', $1)`,
    [NOW],
  );
  for (const [uuid, name] of [
    ["vm-1", 'web "one", east'],
    ["vm-2", "db-2"],
  ] as const)
    await store.query(
      `INSERT INTO vms VALUES ('agent-a', $1, $2, 'running', 2, 2048, 'q35', '[]', '[]', '[]', 1, '{}', $3)`,
      [uuid, name, NOW],
    );
  await store.query(
    `INSERT INTO shadow_runs VALUES ('agent-a', 'r1', 'c', 'cap', 'web', 'vm-1', '{"cpu_load":0.9,"memory_load":0.2}',
      'random', false, $1, $1, 'failed', 1, '[]', $1)`,
    [NOW - 60_000],
  );
  await store.query(
    `INSERT INTO failures (failure_id, agent_id, shadow_run_id, title, class, frame, fingerprint, corrupted, evidence, offset_ms, source, received_at_ms) VALUES ('f1', 'agent-a', 'r1', 'BUG: x', 'oops', '', 'fp-a', false, '[]', 10, 'console', $1)`,
    [NOW],
  );
  await store.query(
    `INSERT INTO signatures VALUES ('agent-a', 'fp-a', 'BUG: x', 'oops', $1, $1, 1, '["vm-1"]', '[]', $1)`,
    [NOW],
  );
  await round(NOW - 7_200_000, [
    ["vm-1", "fp-a", 0.4],
    ["vm-2", "fp-a", 0.1],
  ]);
  const s = service("changes");
  const first = await s.generate("cli");
  assert.is(first.at_risk_vms, 0, "0.4 is below the 0.5 threshold");

  await round(NOW - 3_600_000, [
    ["vm-1", "fp-a", 0.9],
    ["vm-1", "fp-b", 0.3],
    ["vm-2", "fp-a", 0.1],
  ]);
  await store.query(
    `INSERT INTO signatures VALUES ('agent-a', 'fp-b', 'WARNING: y', 'warn', $1, $1, 4, '["vm-2"]', '[]', $1)`,
    [NOW],
  );
  const second = await s.generate("schedule");
  const data = s.readData(second.id)!;
  assert.equal(
    data.ranking.map((r) => [r.rank, r.vm_uuid, r.score]),
    [
      [1, "vm-1", 0.9],
      [2, "vm-2", 0.1],
    ],
  );
  assert.is(data.at_risk.length, 1);
  const v = data.at_risk[0]!;
  assert.is(v.confidence, 0.8);
  assert.equal(
    v.risk_history.map((h) => h.score),
    [0.9, 0.4],
  );
  assert.equal(
    (v.boundary as { fingerprint: string }[]).map((b) => b.fingerprint),
    ["fp-a", "fp-b"],
  );
  assert.equal(v.mitigations, [
    { action: "do something", because: "reasons" },
    { action: "do something", because: "reasons" },
  ]);
  assert.equal(
    v.signatures.map((x) => [x.fingerprint, x.failures]),
    [["fp-a", 1]],
  );
  assert.is(v.boundary_points.length, 1);
  assert.equal(data.changes.previous_report_id, first.id);
  assert.equal(data.changes.new_at_risk, ['web "one", east']);
  assert.equal(data.changes.no_longer_at_risk, []);
  assert.equal(data.changes.score_changes, [
    { vm_uuid: "vm-1", vm_name: 'web "one", east', from: 0.4, to: 0.9 },
  ]);
  assert.equal(data.changes.new_signatures, ["fp-b"]);
  assert.equal(
    data.signatures.map((x) => x.fingerprint),
    ["fp-b", "fp-a"],
    "most frequent first",
  );

  const csv = readFileSync(s.file(second.id, "csv")!.path, "utf8").split("\n");
  assert.match(csv[1]!, /^1,agent-a,kvm-a,vm-1,"web ""one"", east",running,0\.9,0\.8,high,/);
  const pq = await store.query("SELECT vm_name, score FROM read_parquet($1) ORDER BY rank", [
    s.file(second.id, "parquet")!.path,
  ]);
  assert.equal(
    pq.map((r) => [r["vm_name"], r["score"]]),
    [
      ['web "one", east', 0.9],
      ["db-2", 0.1],
    ],
  );
  const html = readFileSync(s.file(second.id, "html")!.path, "utf8");
  assert.match(html, /web &quot;one&quot;, east/, "names are escaped");
  assert.match(html, /class="boundary"/, "the estimated boundary is drawn");
  assert.match(html, /now 0\.70, forecast 0\.78 in 24 h/, "the forecast says how far ahead");
  assert.match(html, /Newly at risk: web &quot;one&quot;, east/);
  assert.match(html, /New signatures: WARNING: y \(fp-b\)/, "a new signature by its title");
  assert.not.match(html, /(src|href)=["']?https?:/i);
});

test("a VM name two VMs share in the changes gets its uuid, so one name is not both new and gone", () => {
  const label = vmLabeller([
    { vm_uuid: "f2102762-7d98", vm_name: "demo-production" },
    { vm_uuid: "0c4e9a11-22aa", vm_name: "demo-production" },
    { vm_uuid: "77aa0000-1111", vm_name: "demo-healthy" },
  ]);
  assert.is(label({ vm_uuid: "f2102762-7d98", vm_name: "demo-production" }), "demo-production (f2102762)");
  assert.is(label({ vm_uuid: "0c4e9a11-22aa", vm_name: "demo-production" }), "demo-production (0c4e9a11)");
  assert.is(label({ vm_uuid: "77aa0000-1111", vm_name: "demo-healthy" }), "demo-healthy");
});

test("retention by count and by age; files never half-written", async () => {
  const s = service("retention", { maxReports: 2, retentionDays: 1 });
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await s.generate("cli")).id);
  assert.equal(
    s.list().map((m) => m.id),
    [ids[2], ids[1]],
  );
  assert.ok(readdirSync(join(dir, "retention")).every((n) => !n.endsWith(".tmp")));
  assert.equal(s.prune(Date.now() + 2 * 86_400_000).sort(), [ids[1], ids[2]].sort());
  assert.equal(s.list(), []);
  assert.is(s.get("../../etc"), undefined);
  assert.is(s.file("nope", "json"), undefined);
});

test("the node-cron schedule writes reports; a bad expression is refused", async () => {
  const s = service("cron");
  assert.throws(() => s.schedule("every minute"), /not a valid cron expression/);
  s.schedule("* * * * * *"); // every second (node-cron's optional seconds field)
  const m = await waitFor(() => s.list()[0], { timeoutMs: 10_000, what: "a scheduled report" });
  assert.is(m.trigger, "schedule");
  await s.stop();
});

test("with the collector stopped, the CLI reads the database itself (report --now, vms, signatures)", async () => {
  db.close();
  store.close();
  const cli = async (...args: string[]) =>
    (await run(process.execPath, [COLLECTOR_BIN, ...args, "--data-dir", dir], { env: { ...process.env } }))
      .stdout;
  const meta = JSON.parse(await cli("report", "--now", "--threshold", "0.05", "--json")) as {
    id: string;
    trigger: string;
    at_risk_vms: number;
  };
  assert.is(meta.trigger, "cli");
  assert.is(meta.at_risk_vms, 2);
  for (const f of ["report.json", "ranking.csv", "ranking.parquet", "report.html"])
    assert.ok(existsSync(join(dir, "reports", meta.id, f)), f);
  assert.match(await cli("report", "list"), new RegExp(`${meta.id}\\s+\\S+\\s+cli\\s+2\\s+2`));
  const vms = await cli("vms");
  assert.match(vms, /web "one", east\s+vm-1\s+kvm-a\s+running\s+0\.90\s+0\.80\s+high/);
  assert.match(await cli("signatures"), /fp-b\s+4\s+warn/);
});

test.run();
