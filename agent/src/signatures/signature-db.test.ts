import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { failureFingerprint, type StressProfile, shadowvm } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { SignatureDb, type SignatureRecord } from "./signature-db.js";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "svm-sigdb-"));
  dirs.push(d);
  return d;
}

const profile = (cpu: number): StressProfile => ({
  cpu_load: cpu,
  memory_load: 0.5,
  io_load: 0,
  net_latency_ms: 0,
  net_loss_pct: 0,
  faults: [{ kind: "nmi", rate: 1, at_s: 5 }],
  duration_s: 60,
});

const oom = {
  title: "kernel panic: System is deadlocked on memory",
  class: "oom",
  fingerprint: failureFingerprint("kernel panic: System is deadlocked on memory", "oom"),
  frame: null,
};
const nmi = {
  title: "NMI received for unknown reason",
  class: "nmi",
  fingerprint: failureFingerprint("NMI received for unknown reason", "nmi"),
  frame: null,
};

test("records roll up per fingerprint: first/last seen, count, VMs and deduplicated profiles", async () => {
  const db = await SignatureDb.open(join(tempDir(), "sig"));
  const updates: SignatureRecord[] = [];
  db.on("update", (r) => updates.push(r));
  await db.recordRun({ vm: "vm-a", failures: [oom, nmi], finishedAtMs: 1000, profile: profile(1) });
  await db.recordRun({ vm: "vm-b", failures: [oom], finishedAtMs: 3000, profile: profile(1) });
  await db.recordRun({
    vm: "vm-a",
    failures: [oom],
    finishedAtMs: 2000,
    profile: profile(2),
    shadowRunId: "r3",
  });
  const r = (await db.get(oom.fingerprint))!;
  assert.is(r.title, oom.title);
  assert.is(r.class, "oom");
  assert.is(r.count, 3);
  assert.is(r.first_seen_ms, 1000);
  assert.is(r.last_seen_ms, 3000);
  assert.equal(r.vms, ["vm-b", "vm-a"], "most recently hit last, no duplicates");
  assert.equal(
    r.profiles.map((p) => p.cpu_load),
    [1, 2],
    "profiles deduplicated by content",
  );
  assert.is(r.last_shadow_run_id, "r3");
  assert.is((await db.get(nmi.fingerprint))!.count, 1);
  assert.is(updates.length, 4, "one update event per changed signature per write");
  assert.equal((await db.list()).map((x) => x.fingerprint).sort(), [oom.fingerprint, nmi.fingerprint].sort());
  await db.close();
});

test("VM and profile lists are bounded, dropping the least recently hit", async () => {
  const db = await SignatureDb.open(join(tempDir(), "sig"), { maxVms: 3, maxProfiles: 2 });
  for (let i = 0; i < 6; i++) {
    await db.recordRun({ vm: `vm-${i}`, failures: [nmi], profile: profile(i), finishedAtMs: i });
  }
  const r = (await db.get(nmi.fingerprint))!;
  assert.equal(r.vms, ["vm-3", "vm-4", "vm-5"]);
  assert.is(r.vms_dropped, 3);
  assert.equal(
    r.profiles.map((p) => p.cpu_load),
    [4, 5],
  );
  assert.is(r.profiles_dropped, 4);
  await db.close();
});

test("change feed: one queued update per signature (the newest), ack by seq keeps later changes", async () => {
  const db = await SignatureDb.open(join(tempDir(), "sig"));
  await db.recordRun({ vm: "vm-a", failures: [oom], finishedAtMs: 10 });
  await db.recordRun({ vm: "vm-a", failures: [nmi], finishedAtMs: 20 });
  await db.recordRun({ vm: "vm-b", failures: [oom], finishedAtMs: 30 });
  let pending = await db.pendingUpdates();
  assert.equal(
    pending.map((p) => p.update.fingerprint),
    [nmi.fingerprint, oom.fingerprint],
    "oom moved behind nmi: its newest change is the latest",
  );
  const oomUpdate = pending[1]!.update;
  assert.is(oomUpdate.count, 2);
  assert.equal(oomUpdate.vms, ["vm-a", "vm-b"]);
  // The update is a valid wire message.
  const wire = shadowvm.v1.SignatureUpdate.decode(
    shadowvm.v1.SignatureUpdate.encode(shadowvm.v1.SignatureUpdate.create(oomUpdate)).finish(),
  );
  assert.is(wire.fingerprint, oom.fingerprint);
  assert.is(Number(wire.count), 2);

  const sentUpTo = pending[1]!.seq;
  // oom changes again after it was read but before the ack
  await db.recordRun({ vm: "vm-c", failures: [oom], finishedAtMs: 40, profile: profile(1) });
  assert.is(await db.ackUpdates(sentUpTo), 1, "only nmi's entry is acknowledged; oom has a newer one");
  pending = await db.pendingUpdates();
  assert.equal(
    pending.map((p) => [p.update.fingerprint, p.update.count]),
    [[oom.fingerprint, 3]],
  );
  assert.is(pending[0]!.update.profiles!.length, 1);
  assert.is(await db.ackUpdates(pending[0]!.seq), 1);
  assert.equal(await db.pendingUpdates(), []);
  await db.close();
});

test("survives close and reopen: records, queued updates and sequence numbers", async () => {
  const dir = join(tempDir(), "sig");
  let db = await SignatureDb.open(dir);
  await db.recordRun({ vm: "vm-a", failures: [oom, nmi], finishedAtMs: 100, profile: profile(1) });
  const before = await db.pendingUpdates();
  await db.ackUpdates(before[0]!.seq);
  await db.close();

  db = await SignatureDb.open(dir);
  assert.is((await db.get(oom.fingerprint))!.count, 1);
  assert.equal((await db.get(nmi.fingerprint))!.profiles, [profile(1)]);
  const after = await db.pendingUpdates();
  assert.equal(
    after.map((p) => p.seq),
    [before[1]!.seq],
    "the unacknowledged update is still queued",
  );
  await db.recordRun({ vm: "vm-b", failures: [oom], finishedAtMs: 200 });
  const next = await db.pendingUpdates();
  assert.ok(next[next.length - 1]!.seq > before[1]!.seq, "sequence numbers continue after a restart");
  assert.is((await db.get(oom.fingerprint))!.count, 2);
  await db.close();
});

test("concurrent records are serialised: no lost counts", async () => {
  const db = await SignatureDb.open(join(tempDir(), "sig"));
  await Promise.all(
    Array.from({ length: 25 }, (_, i) =>
      db.recordRun({ vm: `vm-${i % 5}`, failures: [oom], finishedAtMs: i }),
    ),
  );
  const r = (await db.get(oom.fingerprint))!;
  assert.is(r.count, 25);
  assert.is(r.vms.length, 5);
  assert.is((await db.pendingUpdates()).length, 1);
  await db.close();
});

test("precursors per fingerprint: counted per run, bounded, listed for the VM's signatures", async () => {
  const dir = join(tempDir(), "sig");
  const db = await SignatureDb.open(dir, { maxPrecursors: 3 });
  const hung = "INFO: task svm-writer:NUM blocked for more than NUM seconds.";
  const io = "blk_update_request: I/O error, dev vda, sector NUM";
  await db.recordRun({ vm: "vm-a", failures: [{ ...oom, precursors: [hung, io] }], finishedAtMs: 10 });
  await db.recordRun({ vm: "vm-a", failures: [{ ...oom, precursors: [hung, hung] }], finishedAtMs: 20 });
  await db.recordRun({
    vm: "vm-b",
    failures: [{ ...nmi, precursors: ["a b c", "d e f", "g h i", "j k l"] }],
  });
  let r = (await db.get(oom.fingerprint))!;
  assert.equal(r.precursors, [
    { pattern: hung, count: 2, last_seen_ms: 20 },
    { pattern: io, count: 1, last_seen_ms: 10 },
  ]);
  const n = (await db.get(nmi.fingerprint))!;
  assert.is(n.precursors!.length, 3);
  assert.is(n.precursors_dropped, 1);
  // a run without precursors keeps them
  await db.recordRun({ vm: "vm-a", failures: [oom], finishedAtMs: 30 });
  r = (await db.get(oom.fingerprint))!;
  assert.is(r.precursors!.length, 2);
  assert.equal(
    (await db.precursorsFor(["vm-a"])).map((m) => [m.pattern, m.fingerprint, m.count]),
    [
      [hung, oom.fingerprint, 2],
      [io, oom.fingerprint, 1],
    ],
  );
  assert.equal(await db.precursorsFor(["vm-c", ""]), []);
  assert.is((await db.precursorsFor(["vm-b", "vm-a"])).length, 5);
  // A clean run of vm-a that showed `hung` (and a line no signature has): `hung` warned of the
  // OOM in 2 of 3 runs now; vm-b's signature is not vm-a's, so its counts stay.
  let fired = 0;
  db.on("precursors", () => fired++);
  await db.ackUpdates(Number.MAX_SAFE_INTEGER);
  assert.is(await db.recordCleanRun({ vm: "vm-a", consolePatterns: [hung, "a b c", "unrelated"] }), 1);
  assert.is(fired, 1);
  assert.equal(
    (await db.precursorsFor(["vm-a"])).map((m) => [m.pattern, m.count, m.without]),
    [
      [hung, 2, 1],
      [io, 1, 0],
    ],
  );
  assert.is(
    (await db.get(nmi.fingerprint))!.precursors!.find((p) => p.pattern === "a b c")?.without,
    undefined,
  );
  assert.is(await db.recordCleanRun({ vm: "vm-c", consolePatterns: [hung] }), 0, "not this signature's VM");
  assert.is(fired, 1, "nothing changed, no event");
  assert.equal(await db.pendingUpdates(), [], "the collector's signature record does not change");
  // Seen before a failure again: the count rises, the runs without stay.
  await db.recordRun({ vm: "vm-a", failures: [{ ...oom, precursors: [hung] }], finishedAtMs: 40 });
  assert.equal((await db.get(oom.fingerprint))!.precursors![0], {
    pattern: hung,
    count: 3,
    last_seen_ms: 40,
    without: 1,
  });
  // one process, one database: a second open() joins the first; the last close() closes it
  const again = await SignatureDb.open(dir);
  assert.is(again, db);
  await again.close();
  assert.is((await db.get(oom.fingerprint))!.count, 4, "still open for the first opener");
  await db.close();
  const reopened = await SignatureDb.open(dir);
  assert.is(reopened === db, false);
  assert.is((await reopened.get(oom.fingerprint))!.precursors!.length, 2, "precursors survive a reopen");
  await reopened.close();
});

test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test.run();
