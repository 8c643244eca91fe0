import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { main } from "../cli/main.js";
import { compactDatabase } from "./compact.js";
import { IngestStore } from "./ingest-store.js";
import { MIGRATIONS } from "./migrations.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-compact-"));

/** A collector database in which most rows were deleted: 2 M samples written, 1.8 M deleted. */
async function bloated(name: string): Promise<string> {
  const path = join(dir, name, "shadowvm.duckdb");
  const store = await IngestStore.open(path);
  await store.query(
    `INSERT INTO samples (agent_id, scope, vm_uuid, ts_ms, cpu_usage, memory_used_bytes)
     SELECT 'a', 2, 'vm-' || (i % 50), i, random(), (random() * 1e9)::UBIGINT FROM range(2000000) t(i)`,
  );
  await store.query("INSERT INTO ingest_streams VALUES ('a', 7, 42, 42, 0)");
  await store.query("CHECKPOINT");
  await store.query("DELETE FROM samples WHERE ts_ms < 1800000");
  store.close();
  return path;
}

const files = (d: string) => readdirSync(d).sort();

test("compaction shrinks the file, keeps every row, and the collector opens and writes the result", async () => {
  const path = await bloated("ok");
  const before = statSync(path).size;
  const result = await compactDatabase(path);
  assert.is(result.bytes_before, before);
  assert.ok(result.bytes_after < before * 0.5, `${result.bytes_after} < half of ${before}`);
  assert.is(statSync(path).size, result.bytes_after);
  assert.is(result.rows["samples"], 200_000);
  assert.is(result.rows["schema_version"], MIGRATIONS.length);
  assert.equal(files(join(dir, "ok")), ["shadowvm.duckdb"], "no copy or write-ahead log left");

  const store = await IngestStore.open(path);
  assert.is(store.schemaVersion, MIGRATIONS.at(-1)!.version);
  assert.is(store.committedSeq("a", 7), 42, "the dedupe marks survive");
  const [n] = await store.query("SELECT count(*) AS n FROM samples WHERE ts_ms >= 1800000");
  assert.is(Number(n?.["n"]), 200_000);
  const [idx] = await store.query(
    "SELECT count(*) AS n FROM duckdb_indexes() WHERE index_name = 'production_events_vm'",
  );
  assert.is(Number(idx?.["n"]), 1, "the index is copied");
  await store.query("SELECT * FROM risk_current"); // the view is copied
  await store.query("INSERT INTO ingest_streams VALUES ('a', 7, 43, 43, 1)").then(
    () => assert.unreachable("the primary key is copied"),
    (err: Error) => assert.match(err.message, /constraint|duplicate/i),
  );
  store.close();
});

test("a full disk is refused before anything is written; the original is unchanged", async () => {
  const path = await bloated("full");
  const before = statSync(path).size;
  const err = await compactDatabase(path, { freeBytes: () => 1024 }).then(
    () => undefined,
    (e: Error) => e.message,
  );
  assert.match(err ?? "", /the copy needs up to \d+ bytes free in .*, and 1024 are/);
  assert.is(statSync(path).size, before);
  assert.equal(files(join(dir, "full")), ["shadowvm.duckdb"]);
});

test("a database a running collector holds is refused, and so is a missing one", async () => {
  const path = await bloated("busy");
  // Another process holds the database open, as a running collector does.
  const holder = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { IngestStore } from ${JSON.stringify(new URL("./ingest-store.js", import.meta.url).href)};
       await IngestStore.open(${JSON.stringify(path)}); console.log("open"); setInterval(() => {}, 1000);`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on("data", (d: Buffer) => d.toString().includes("open") && resolve());
      holder.once("exit", (code) => reject(new Error(`holder exited ${code}`)));
    });
    const err = await compactDatabase(path).then(
      () => undefined,
      (e: Error) => e.message,
    );
    assert.match(err ?? "", /a running collector holds it; stop the collector first/);
  } finally {
    holder.kill();
  }
  const missing = await compactDatabase(join(dir, "nowhere.duckdb")).then(
    () => undefined,
    (e: Error) => e.message,
  );
  assert.match(missing ?? "", /no collector database at .*nowhere\.duckdb/);
});

test("CLI: compact prints the sizes; bad usage exits 2", async () => {
  await bloated("cli");
  let out = "";
  let err = "";
  const io = { out: (t: string) => (out += t), err: (t: string) => (err += t) };
  assert.is(await main(["compact", "--data-dir", join(dir, "cli")], io, {}), 0, err);
  assert.match(out, /compacted .*shadowvm\.duckdb: [\d.]+ MiB -> [\d.]+ MiB, \d+ rows in \d+ tables checked/);
  assert.is(await main(["compact", "now", "--data-dir", join(dir, "cli")], io, {}), 2);
  assert.match(err, /compact takes no arguments/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
