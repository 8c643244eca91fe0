import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeFrame, type EnvelopeInit, encodeFrame } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { toIngestFrame } from "../ingest/ingest-frame.js";
import { type IngestFrame, IngestStore, openReadOnly } from "./ingest-store.js";
import { MIGRATIONS } from "./migrations.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-store-"));
const EPOCH = 1_700_000_000_000;

function frame(
  init: Omit<EnvelopeInit, "agent_id" | "epoch" | "sent_at_ms">,
  agent = "agent-a",
): IngestFrame {
  const bytes = encodeFrame({ agent_id: agent, epoch: EPOCH, sent_at_ms: Date.now(), ...init });
  return toIngestFrame(decodeFrame(bytes), bytes.byteLength);
}

function telemetry(seq: number, n: number, agent = "agent-a"): IngestFrame {
  const samples = Array.from({ length: n }, (_, i) => ({
    scope: 2,
    vm_uuid: `vm-${i % 3}`,
    ts_ms: seq === 3 && i === 0 ? -5 : seq * 100_000 + i,
    cpu_usage: 0.25,
    memory_used_bytes: 1000 + i,
    disk_read_bytes: 2 ** 40 + i,
    extra: (i === 0 ? { steal_pct: 1.5 } : {}) as Record<string, number>,
  }));
  return frame({ seq, telemetry_batch: { samples } }, agent);
}

async function count(store: IngestStore, sql: string): Promise<number> {
  const rows = await store.query(sql);
  return Number(Object.values(rows[0] ?? {})[0] ?? -1);
}

test("migrates a new database to the latest version", async () => {
  const store = await IngestStore.open(join(dir, "m.duckdb"));
  assert.is(store.schemaVersion, MIGRATIONS.at(-1)!.version);
  const tables = (await store.query("SELECT table_name FROM information_schema.tables ORDER BY 1")).map(
    (r) => r["table_name"],
  );
  for (const t of ["samples", "hosts", "vms", "captures", "shadow_runs", "failures", "signatures"]) {
    assert.ok(tables.includes(t), `table ${t}`);
  }
  store.close();
  const again = await IngestStore.open(join(dir, "m.duckdb"));
  assert.is(await count(again, "SELECT count(*) FROM schema_version"), MIGRATIONS.length);
  again.close();
});

test("commits samples once; a replayed frame is a duplicate and changes nothing", async () => {
  const path = join(dir, "d.duckdb");
  const store = await IngestStore.open(path);
  const first = await store.commit([telemetry(1, 3000), telemetry(2, 10)]);
  assert.equal(first.fresh, [true, true]);
  assert.is(first.rows.samples, 3010);
  const replay = await store.commit([telemetry(1, 3000), telemetry(2, 10), telemetry(3, 5)]);
  assert.equal(replay.fresh, [false, false, true]);
  // the same frame twice in one batch
  const twice = await store.commit([telemetry(4, 1), telemetry(4, 1)]);
  assert.equal(twice.fresh, [true, false]);
  assert.is(await count(store, "SELECT count(*) FROM samples"), 3016);
  assert.is(await count(store, "SELECT count(DISTINCT (vm_uuid, ts_ms)) FROM samples"), 3016);
  assert.is(await count(store, "SELECT max(disk_read_bytes) - 1099511627776 FROM samples"), 2999);
  assert.is(await count(store, "SELECT min(ts_ms) FROM samples"), -5, "negative int64 survive the fast path");
  assert.is(await count(store, "SELECT count(*) FROM samples WHERE extra->>'steal_pct' = '1.5'"), 4);
  assert.equal(store.resumePoints("agent-a"), [{ epoch: EPOCH, committed_seq: 4 }]);
  store.close();
  // the marks survive a reopen
  const reopened = await IngestStore.open(path);
  assert.equal(reopened.resumePoints("agent-a"), [{ epoch: EPOCH, committed_seq: 4 }]);
  assert.equal((await reopened.commit([telemetry(4, 1)])).fresh, [false]);
  assert.is(await count(reopened, "SELECT sum(frames) FROM ingest_streams"), 4);
  reopened.close();
  const ro = await openReadOnly(path);
  assert.is(Number((await ro.query("SELECT count(*) AS n FROM ingest_frames"))[0]?.["n"]), 4);
  ro.close();
});

test("a failed batch stores nothing and the store keeps working", async () => {
  const store = await IngestStore.open(join(dir, "f.duckdb"));
  await store.commit([telemetry(1, 2)]);
  // make the commit fail inside the transaction: a row already holds frame 3's bookkeeping key
  await store.query(`INSERT INTO ingest_frames VALUES ('agent-a', ${EPOCH}, 3, 'x', 0, 0, 0, 0)`);
  const host = frame({ seq: 2, host_inventory: { hostname: "h", cpus: 2 } });
  try {
    await store.commit([telemetry(3, 5), host]);
    assert.unreachable("commit should fail");
  } catch (err) {
    assert.match(String(err), /nothing of them was stored/);
  }
  assert.is(await count(store, "SELECT count(*) FROM samples"), 2);
  assert.is(store.committedSeq("agent-a", EPOCH), 1);
  await store.query("DELETE FROM ingest_frames WHERE kind = 'x'");
  assert.equal((await store.commit([telemetry(3, 5), host])).fresh, [true, false]);
  assert.is(await count(store, "SELECT count(*) FROM samples"), 7);
  store.close();
});

test("inventory, captures, shadow runs, failures and signatures land in their tables", async () => {
  const store = await IngestStore.open(join(dir, "all.duckdb"));
  const failure = {
    title: "Kernel panic",
    class: "kernel_panic",
    fingerprint: "fp1",
    offset_ms: 1200,
    source: 1,
  };
  const profile = { cpu_load: 1.5, memory_load: 0.5, io_load: 1, duration_s: 60 };
  const res = await store.commit([
    frame({ seq: 1, host_inventory: { hostname: "hv1", cpus: 8, memory_bytes: 2 ** 34, vm_uuids: ["u1"] } }),
    frame({ seq: 2, vm_inventory: { name: "web", uuid: "u1", state: 1, vcpus: 2, memory_mb: 512 } }),
    frame({ seq: 3, vm_inventory: { name: "web", uuid: "u1", state: 3, vcpus: 2, memory_mb: 512 } }),
    frame({ seq: 4, capture_record: { id: "c1", vm_uuid: "u1", status: 1 } }),
    frame({ seq: 5, capture_record: { id: "c1", vm_uuid: "u1", status: 2, pause_ms: 12 } }),
    frame({ seq: 6, failure: { ...failure, shadow_run_id: "r1" } }),
    frame({
      seq: 7,
      shadow_run: { id: "r1", capture_id: "c1", vm_uuid: "u1", profile, outcome: 2, failures: [failure] },
    }),
    frame({
      seq: 8,
      signature_update: { fingerprint: "fp1", title: "Kernel panic", count: 1, profiles: [profile] },
    }),
  ]);
  assert.is(res.newFrames, 8);
  assert.equal(await store.query("SELECT state FROM vms"), [{ state: "paused" }]);
  assert.equal(await store.query("SELECT status, pause_ms FROM captures"), [{ status: "ok", pause_ms: 12n }]);
  assert.is(await count(store, "SELECT count(*) FROM failures"), 1);
  assert.equal(
    await store.query("SELECT outcome, failure_count, profile->>'cpu_load' AS c FROM shadow_runs"),
    [{ outcome: "failed", failure_count: 1, c: "1.5" }],
  );
  assert.equal(await store.query("SELECT count, profiles->>'$[0].duration_s' AS d FROM signatures"), [
    { count: 1n, d: "60" },
  ]);
  assert.equal(await store.query("SELECT hostname, cpus FROM hosts"), [{ hostname: "hv1", cpus: 8 }]);
  store.close();
});

test("production events and failure precursors: stored once, however often they are sent", async () => {
  const store = await IngestStore.open(join(dir, "prod.duckdb"));
  const event = {
    vm_uuid: "u1",
    vm_name: "web",
    ts_ms: 1_700_000_123_000,
    kind: 1,
    fingerprint: "fp1",
    title: "Kernel panic",
    class: "panic",
    line: "[ 200.0] INFO: task svm-writer:123 blocked for more than 120 seconds.",
    pattern: "INFO: task svm-writer:NUM blocked for more than NUM seconds.",
    suppressed: 2,
    precursor_runs_with: 3,
    precursor_runs_without: 1,
  };
  // the same frame twice in one batch, then again (a replay), then the same event in a new epoch
  const f1 = frame({ seq: 1, production_event: event });
  assert.equal((await store.commit([f1, f1])).fresh, [true, false]);
  assert.equal((await store.commit([f1])).fresh, [false]);
  const again = toIngestFrame(
    decodeFrame(
      encodeFrame({ agent_id: "agent-a", epoch: EPOCH + 1, seq: 1, sent_at_ms: 1, production_event: event }),
    ),
    100,
  );
  assert.equal((await store.commit([again])).fresh, [true]);
  await store.commit([
    frame({
      seq: 2,
      production_event: {
        ...event,
        kind: 2,
        pattern: "",
        ts_ms: event.ts_ms + 5,
        suppressed: 0,
        precursor_runs_with: 0,
        precursor_runs_without: 0,
      },
    }),
  ]);
  assert.equal(
    await store.query(
      "SELECT kind, vm_uuid, fingerprint, pattern, suppressed, runs_with, runs_without FROM production_events ORDER BY ts_ms",
    ),
    [
      {
        kind: "precursor",
        vm_uuid: "u1",
        fingerprint: "fp1",
        pattern: event.pattern,
        suppressed: 2,
        runs_with: 3,
        runs_without: 1,
      },
      {
        kind: "failure",
        vm_uuid: "u1",
        fingerprint: "fp1",
        pattern: "",
        suppressed: 0,
        runs_with: 0,
        runs_without: 0,
      },
    ],
  );
  await store.commit([
    frame({
      seq: 3,
      failure: {
        title: "Kernel panic",
        class: "panic",
        fingerprint: "fp1",
        shadow_run_id: "r9",
        precursors: [event.pattern],
      },
    }),
  ]);
  assert.equal(
    await store.query("SELECT precursors->>'$[0]' AS p FROM failures WHERE shadow_run_id = 'r9'"),
    [{ p: event.pattern }],
  );
  store.close();
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
