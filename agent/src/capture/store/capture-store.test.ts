import { spawn } from "node:child_process";
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import {
  chmod,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { CaptureStore, type CaptureStoreOptions } from "./capture-store.js";
import { CaptureStoreError } from "./errors.js";
import { defaultIo, type StoreIo } from "./fs-util.js";
import { formatKeyFile, KEY_FILE_HEADER } from "./key-file.js";

const PAGE = 4096;
const MiB = 1024 * 1024;

// ---- helpers -------------------------------------------------------------------------------

let scratch = "";
test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), "capture-store-test-"));
});
test.after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

let n = 0;
/** A fresh store directory and a key file path in a separate directory. */
function paths(): { dir: string; keyFile: string } {
  n++;
  return { dir: join(scratch, `store-${n}`), keyFile: join(scratch, `keys-${n}`, "capture-store.key") };
}

async function openStore(p: { dir: string; keyFile: string }, extra: Partial<CaptureStoreOptions> = {}) {
  return CaptureStore.open({ ...p, ...extra });
}

/** Deterministic page content: a keystream seeded by (seed, page). */
function randomPage(seed: number, page: number): Buffer {
  const key = createHash("sha256").update(`seed:${seed}`).digest();
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(page, 12);
  return createCipheriv("aes-256-ctr", key, iv).update(Buffer.alloc(PAGE));
}

/**
 * A memory-like image: ~40% zero pages, ~20% text-like pages, the rest random. Pages in
 * `changed` get new content (as if the guest wrote them between two captures).
 */
function memoryImage(pages: number, seed: number, changed: ReadonlySet<number> = new Set()): Buffer {
  const out = Buffer.alloc(pages * PAGE);
  for (let p = 0; p < pages; p++) {
    const kind = randomPage(seed, p)[0] as number;
    const s = changed.has(p) ? seed + 1000 : seed;
    if (kind < 100 && !changed.has(p)) continue; // zero page
    if (kind < 150) {
      const words = randomPage(s, p).toString("base64").replace(/[+/=]/g, " ");
      out.write(words.repeat(2).slice(0, PAGE), p * PAGE, "latin1");
    } else randomPage(s, p).copy(out, p * PAGE);
  }
  return out;
}

/** ~`fraction` of pages, in runs of geometric length, mean 32 pages (dirty memory is clustered). */
function changedPages(pages: number, fraction: number, seed: number): Set<number> {
  const set = new Set<number>();
  let i = 0;
  while (set.size < pages * fraction) {
    const r = randomPage(seed, i++);
    const start = r.readUInt32BE(0) % pages;
    const len = Math.max(1, Math.round(-Math.log((r.readUInt32BE(4) + 1) / 2 ** 32) * 32));
    for (let p = start; p < Math.min(pages, start + len); p++) set.add(p);
  }
  return set;
}

/** Feeds a buffer as a stream of odd-sized reads. */
function streamOf(data: Buffer, piece = 100_003): Readable {
  return Readable.from(
    (function* () {
      for (let off = 0; off < data.length; off += piece) yield data.subarray(off, off + piece);
    })(),
  );
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of stream) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

async function walk(dir: string): Promise<Array<{ path: string; mode: number; dir: boolean }>> {
  const out: Array<{ path: string; mode: number; dir: boolean }> = [];
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const st = await stat(path);
    out.push({ path, mode: st.mode & 0o777, dir: st.isDirectory() });
    if (st.isDirectory()) out.push(...(await walk(path)));
  }
  return out;
}

async function chunkFiles(dir: string): Promise<string[]> {
  return (await walk(join(dir, "chunks"))).filter((e) => !e.dir).map((e) => e.path);
}

async function rejects(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<CaptureStoreError> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, CaptureStoreError, `expected CaptureStoreError, got ${String(err)}`);
    const e = err as CaptureStoreError;
    assert.is(e.code, code, `code of: ${e.message}`);
    if (pattern) assert.match(e.message, pattern);
    return e;
  }
  assert.unreachable(`expected an error with code ${code}`);
  throw new Error("unreachable");
}

async function simpleCapture(store: CaptureStore, vm: string, data: Buffer, metadata = {}) {
  const w = await store.beginCapture({ vm, metadata });
  await w.addStream("memory", streamOf(data));
  await w.addBuffer("config.json", JSON.stringify({ vm }));
  return w.commit();
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

// ---- key file ------------------------------------------------------------------------------

test("creates a 0600 key file outside the store and reuses it", async () => {
  const p = paths();
  const logs: string[] = [];
  const logger = { warn: (_o: unknown, msg: string) => logs.push(msg), info() {}, error() {} };
  const store = await openStore(p, { logger: logger as never });
  assert.ok(store.keyFileCreated);
  assert.ok(
    logs.some((l) => l.includes(p.keyFile)),
    "the creation is logged with the path",
  );
  const text = await readFile(p.keyFile, "utf8");
  assert.is(text.split("\n")[0], KEY_FILE_HEADER);
  assert.match(text, /^[0-9a-f]{64}$/m);
  assert.is((await stat(p.keyFile)).mode & 0o777, 0o600);
  const info = await simpleCapture(store, "vm1", randomBytes(300_000));
  await store.close();

  const again = await openStore(p);
  assert.not.ok(again.keyFileCreated);
  assert.ok((await again.verify(info.id)).ok);
  await again.close();
});

test("refuses a key file inside the store, a readable key file, and a missing key", async () => {
  const p = paths();
  await rejects(openStore({ dir: p.dir, keyFile: join(p.dir, "key") }), "key_in_store");
  const store = await openStore(p);
  await store.close();
  await chmod(p.keyFile, 0o644);
  await rejects(openStore(p), "key_insecure", /chmod 600/);
  await chmod(p.keyFile, 0o600);
  await rename(p.keyFile, `${p.keyFile}.bak`);
  // A new key would make every capture unreadable: never created for an existing store.
  await rejects(openStore(p), "key_missing", /restore the key file/);
  await writeFile(p.keyFile, "not a key\n", { mode: 0o600 });
  await rejects(openStore(p), "key_invalid");
});

// ---- round trip ----------------------------------------------------------------------------

test("round trip of multi-MiB random and zero-heavy parts (stream, file, buffer)", async () => {
  const p = paths();
  const store = await openStore(p);
  const random = randomBytes(5 * MiB + 777);
  const zeroHeavy = Buffer.alloc(12 * MiB);
  randomBytes(300_000).copy(zeroHeavy, 3 * MiB);
  randomBytes(5000).copy(zeroHeavy, 12 * MiB - 5000);
  const image = memoryImage(1024, 1);
  const diskPath = join(scratch, "disk.img");
  await writeFile(diskPath, zeroHeavy);
  const config = JSON.stringify({ name: "vm1", memory_mib: 1024 });

  const w = await store.beginCapture({ vm: "vm1", metadata: { pause_ms: 42 } });
  const progress: number[] = [];
  await w.addStream("memory", streamOf(Buffer.concat([image, random])));
  await w.addFile("disk:vda", diskPath, { onProgress: (pr) => progress.push(pr.bytesRead) });
  await w.addBuffer("config.json", config);
  await w.addBuffer("empty", Buffer.alloc(0));
  w.setMetadata({ qemu: "9.0" });
  const info = await w.commit();

  assert.is(info.vm, "vm1");
  assert.equal(info.metadata, { pause_ms: 42, qemu: "9.0" });
  assert.equal(
    info.parts.map((x) => [x.name, x.size]),
    [
      ["memory", image.length + random.length],
      ["disk:vda", zeroHeavy.length],
      ["config.json", config.length],
      ["empty", 0],
    ],
  );
  assert.is(info.parts[1]?.sha256, sha(zeroHeavy));
  assert.is(progress.at(-1), zeroHeavy.length);
  // Zeros dedupe to one chunk and compress; random data does not compress.
  assert.ok(info.stored_bytes < random.length + image.length * 0.75 + 400_000, `stored ${info.stored_bytes}`);
  assert.is(info.new_bytes, info.stored_bytes);

  assert.ok((await readAll(await store.openPart(info.id, "memory"))).equals(Buffer.concat([image, random])));
  assert.is((await readAll(await store.openPart(info.id, "config.json"))).toString(), config);
  assert.is((await readAll(await store.openPart(info.id, "empty"))).length, 0);
  const dest = join(scratch, "restored-disk.img");
  const r = await store.restorePart(info.id, "disk:vda", dest);
  assert.is(r.bytes, zeroHeavy.length);
  assert.is(r.sha256, sha(zeroHeavy));
  assert.ok((await readFile(dest)).equals(zeroHeavy));
  const st = await stat(dest);
  assert.is(st.mode & 0o777, 0o600);
  assert.ok(st.blocks * 512 < zeroHeavy.length / 2, "zero chunks are left as holes");
  await rejects(store.restorePart(info.id, "disk:vda", dest), "invalid_argument", /exists/);
  await rejects(store.openPart(info.id, "disk:vdb"), "not_found", /disk:vda/);

  assert.equal(await store.get(info.id), info);
  assert.equal(
    (await store.list()).map((c) => c.id),
    [info.id],
  );
  const v = await store.verify(info.id);
  assert.ok(v.ok, JSON.stringify(v.problems));
  assert.is(v.bytes_checked, image.length + random.length + zeroHeavy.length + config.length);
  await store.close();
});

test("every store file is 0600 and every directory 0700; chunks hold no plaintext", async () => {
  const p = paths();
  const store = await openStore(p);
  const text = Buffer.from("SECRET-PAGE-CONTENT ".repeat(20_000));
  const w = await store.beginCapture({ vm: "vm1" });
  await w.addStream("memory", streamOf(text));
  // Checked mid-capture too: temporary files follow the same rule.
  const during = await walk(p.dir);
  await w.commit();
  const after = await walk(p.dir);
  for (const e of [...during, ...after]) assert.is(e.mode, e.dir ? 0o700 : 0o600, e.path);
  assert.ok(after.some((e) => e.path.includes("/chunks/") && !e.dir));
  for (const f of await chunkFiles(p.dir)) assert.not.ok((await readFile(f)).includes("SECRET-PAGE"));
  await store.close();
});

test("chunk ids are keyed: the same data gets different ids under another key", async () => {
  const data = memoryImage(512, 7);
  const a = paths();
  const b = paths();
  const sa = await openStore(a);
  const sb = await openStore(b);
  await simpleCapture(sa, "vm1", data);
  await simpleCapture(sb, "vm1", data);
  const names = async (dir: string) => new Set((await chunkFiles(dir)).map((f) => f.split("/").pop()));
  const na = await names(a.dir);
  const nb = await names(b.dir);
  assert.ok(na.size > 3);
  assert.is([...na].filter((x) => nb.has(x)).length, 0);
  // Nor is any id the plain SHA-256 of a page or of the zero chunk.
  assert.not.ok(na.has(sha(Buffer.alloc(256 * 1024))));
  await sa.close();
  await sb.close();
});

// ---- dedupe --------------------------------------------------------------------------------

test("a second capture of mostly the same memory adds little; other VMs dedupe too", async () => {
  const p = paths();
  // A fixed key: the key seeds the chunker, so a random one would make the ratio (of only a few
  // dozen dirty runs) vary from run to run. Over keys 0x01..0x08 it ranged 0.16-0.21.
  await mkdir(join(p.keyFile, ".."), { recursive: true });
  await writeFile(p.keyFile, formatKeyFile(Buffer.alloc(32, 7)), {
    mode: 0o600,
  });
  const store = await openStore(p);
  const pages = 8192; // 32 MiB
  const first = memoryImage(pages, 3);
  const second = memoryImage(pages, 3, changedPages(pages, 0.05, 99));
  const c1 = await simpleCapture(store, "vm1", first);
  const c2 = await simpleCapture(store, "vm1", second);
  const ratio = c2.new_bytes / c1.stored_bytes;
  assert.ok(ratio < 0.25, `second capture added ${(ratio * 100).toFixed(1)}% of the first's bytes`);
  assert.ok(c2.stored_bytes > c1.stored_bytes * 0.9, "stored_bytes counts shared chunks too");
  // The same image captured from another VM: only the tiny config part is new.
  const c3 = await simpleCapture(store, "vm2", first);
  assert.ok(c3.new_bytes < 200, `vm2 added ${c3.new_bytes} bytes`);
  for (const c of [c1, c2, c3]) assert.ok((await store.verify(c.id)).ok);
  assert.ok((await readAll(await store.openPart(c2.id, "memory"))).equals(second));
  await store.close();
});

test("memory stays bounded while streaming a part much larger than the pipeline", async () => {
  const p = paths();
  const store = await openStore(p);
  const total = 192 * MiB;
  const noise = randomBytes(64 * 1024);
  // Generated lazily: zeros with a random 64 KiB block every 8 MiB (fast to chunk and store).
  const source = Readable.from(
    (function* () {
      for (let off = 0; off < total; off += MiB) {
        const b = Buffer.alloc(MiB);
        if (off % (8 * MiB) === 0) noise.copy(b, 0);
        b.writeUInt32BE(off, 100); // every 8 MiB block distinct
        yield b;
      }
    })(),
  );
  const w = await store.beginCapture({ vm: "vm1" });
  const base = process.memoryUsage().rss;
  let peak = base;
  const info = await w.addStream("memory", source, {
    onProgress: () => {
      peak = Math.max(peak, process.memoryUsage().rss);
    },
  });
  await w.commit();
  assert.is(info.size, total);
  const growth = (peak - base) / MiB;
  assert.ok(growth < 96, `RSS grew by ${growth.toFixed(0)} MiB while storing ${total / MiB} MiB`);
  await store.close();
});

test("parts can be added concurrently", async () => {
  const p = paths();
  const store = await openStore(p);
  const a = memoryImage(1024, 21);
  const b = randomBytes(3 * MiB);
  const w = await store.beginCapture({ vm: "vm1" });
  await Promise.all([w.addStream("memory", streamOf(a)), w.addStream("disk:vda", streamOf(b, 65536))]);
  const info = await w.commit();
  assert.equal(
    info.parts.map((x) => x.name),
    ["memory", "disk:vda"],
  );
  assert.ok((await readAll(await store.openPart(info.id, "memory"))).equals(a));
  assert.ok((await readAll(await store.openPart(info.id, "disk:vda"))).equals(b));
  await store.close();
});

// ---- damage and wrong keys -----------------------------------------------------------------

test("a wrong key fails verify and restore with a clear error, and refuses writes", async () => {
  const p = paths();
  const store = await openStore(p);
  const info = await simpleCapture(store, "vm1", memoryImage(256, 5));
  await store.close();
  const other = paths();
  await (await openStore(other)).close(); // creates another store, and with it another key
  const wrong = await openStore({ dir: p.dir, keyFile: other.keyFile });
  assert.not.ok(wrong.keyMatches);
  const v = await wrong.verify(info.id);
  assert.not.ok(v.ok);
  assert.is(v.problems[0]?.code, "wrong_key");
  assert.match(v.problems[0]?.message ?? "", /fingerprint/);
  await rejects(
    wrong.restorePart(info.id, "memory", join(scratch, "wk.img")),
    "wrong_key",
    new RegExp(info.id),
  );
  await rejects(wrong.openPart(info.id, "memory"), "wrong_key");
  await rejects(wrong.beginCapture({ vm: "vm1" }), "wrong_key");
  await rejects(wrong.gc(), "wrong_key");
  await wrong.close();
  assert.is((await chunkFiles(p.dir)).length > 0, true);
});

test("a flipped bit in a stored chunk fails verify and restore, naming capture, part and chunk", async () => {
  const p = paths();
  const store = await openStore(p);
  const data = randomBytes(2 * MiB);
  const info = await simpleCapture(store, "vm1", data);
  const files = await chunkFiles(p.dir);
  const victim = files[files.length >> 1] as string;
  const bytes = await readFile(victim);
  const at = 20 + ((bytes.length - 40) >> 1);
  bytes[at] = (bytes[at] as number) ^ 0x04;
  await writeFile(victim, bytes);
  const victimId = victim.split("/").pop() as string;

  const v = await store.verify(info.id);
  assert.not.ok(v.ok);
  assert.is(v.problems.length, 1, JSON.stringify(v.problems));
  const pr = v.problems[0];
  assert.is(pr?.code, "chunk_corrupt");
  assert.is(pr?.chunk_id, victimId);
  assert.ok(pr?.part === "memory" || pr?.part === "config.json");
  assert.match(pr?.message ?? "", /GCM/);

  const dest = join(scratch, "flip.img");
  const e = await rejects(store.restorePart(info.id, pr?.part as string, dest), "chunk_corrupt");
  assert.match(
    e.message,
    new RegExp(`capture ${info.id} part "${pr?.part}" chunk #\\d+ \\(id ${victimId.slice(0, 16)}\\)`),
  );
  await stat(dest).then(
    () => assert.unreachable("no destination file after a failed restore"),
    () => {},
  );
  assert.is(
    (await readdir(scratch)).filter((f) => f.includes("restore-tmp")).length,
    0,
    "no partial restore left",
  );
  // The stream form fails too (after emitting only authenticated chunks).
  await rejects(readAll(await store.openPart(info.id, pr?.part as string)), "chunk_corrupt");
  await store.close();
});

test("a missing chunk and a part hash mismatch are reported", async () => {
  const p = paths();
  const store = await openStore(p);
  const info = await simpleCapture(store, "vm1", randomBytes(MiB));
  const files = await chunkFiles(p.dir);
  await rm(files[0] as string);
  const v = await store.verify(info.id);
  assert.not.ok(v.ok);
  assert.equal(
    v.problems.map((x) => x.code),
    ["chunk_missing"],
  );
  await store.close();
});

test("a damaged chunk shared by two parts is reported for each part", async () => {
  const p = paths();
  const store = await openStore(p);
  const data = randomBytes(300_000);
  const w = await store.beginCapture({ vm: "vm1" });
  await w.addBuffer("disk:a", data);
  await w.addBuffer("disk:b", data);
  const info = await w.commit();
  const victim = (await chunkFiles(p.dir))[0] as string;
  const bytes = await readFile(victim);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
  await writeFile(victim, bytes);
  const v = await store.verify(info.id);
  assert.equal(
    v.problems.map((x) => [x.code, x.part]),
    [
      ["chunk_corrupt", "disk:a"],
      ["chunk_corrupt", "disk:b"],
    ],
  );
  await rejects(
    store.restorePart(info.id, "disk:a", join(scratch, "no-such-dir", "x.img")),
    "io",
    /cannot create a file next to/,
  );
  await store.close();
});

test("a truncated manifest fails get, verify and restore; GC refuses to run; remove works", async () => {
  const p = paths();
  const store = await openStore(p);
  const good = await simpleCapture(store, "vm1", randomBytes(MiB));
  const bad = await simpleCapture(store, "vm1", randomBytes(MiB));
  const mpath = join(p.dir, "manifests", `${bad.id}.manifest`);
  await truncate(mpath, (await stat(mpath)).size - 10);

  await rejects(store.get(bad.id), "manifest_truncated", new RegExp(`capture ${bad.id}`));
  const v = await store.verify(bad.id);
  assert.is(v.problems[0]?.code, "manifest_truncated");
  await rejects(store.restorePart(bad.id, "memory", join(scratch, "trunc.img")), "manifest_truncated");
  const scan = await store.scan();
  assert.equal(
    scan.captures.map((c) => c.id),
    [good.id],
  );
  assert.equal(
    scan.damaged.map((d) => d.id),
    [bad.id],
  );
  await rejects(store.gc(), "gc_unsafe", new RegExp(bad.id));
  const before = (await chunkFiles(p.dir)).length;
  const r = await store.remove(bad.id);
  assert.ok(r.gc.ran);
  assert.ok((await chunkFiles(p.dir)).length < before, "the removed capture's chunks were collected");
  assert.ok((await store.verify(good.id)).ok);

  // Header-level truncation, and a manifest renamed to another id (AAD binds the id).
  await truncate(join(p.dir, "manifests", `${good.id}.manifest`), 20);
  await rejects(store.get(good.id), "manifest_truncated");
  const c = await simpleCapture(store, "vm1", randomBytes(1000));
  await rename(
    join(p.dir, "manifests", `${c.id}.manifest`),
    join(p.dir, "manifests", "cap-renamed.manifest"),
  );
  await rejects(store.get("cap-renamed"), "manifest_corrupt", /renamed|authentication/);
  await store.close();
});

// ---- retention and GC ----------------------------------------------------------------------

test("retention by count keeps the newest N per VM, then GC frees exclusive chunks", async () => {
  const p = paths();
  const store = await openStore(p);
  const shared = randomBytes(MiB);
  const ids: Record<string, string[]> = { a: [], b: [] };
  for (let i = 0; i < 3; i++) {
    for (const vm of ["a", "b"]) {
      const c = await simpleCapture(store, vm, Buffer.concat([shared, randomBytes(512 * 1024)]));
      ids[vm]?.push(c.id);
    }
  }
  const chunksBefore = (await chunkFiles(p.dir)).length;
  const r = await store.applyRetention({ keepPerVm: 2 });
  assert.equal(r.removed.map((x) => x.id).sort(), [ids["a"]?.[0], ids["b"]?.[0]].sort());
  assert.ok(r.removed.every((x) => x.reason === "count"));
  assert.ok(r.gc.ran && r.gc.deleted_chunks > 0);
  assert.is((await chunkFiles(p.dir)).length, chunksBefore - r.gc.deleted_chunks);
  assert.ok(r.total_bytes_after < r.total_bytes_before);
  const left = await store.list();
  assert.is(left.length, 4);
  for (const c of left) assert.ok((await store.verify(c.id)).ok, c.id);
  await store.close();
});

test("retention by bytes removes the oldest first, keeping each VM's newest", async () => {
  const p = paths();
  const store = await openStore(p);
  const caps = [];
  for (let i = 0; i < 4; i++) caps.push(await simpleCapture(store, "a", randomBytes(MiB)));
  const lone = await simpleCapture(store, "b", randomBytes(MiB));
  const each = caps[0]?.stored_bytes as number;
  // Room for ~2.5 captures: the two oldest of "a" must go; "b" has only its newest.
  const r = await store.applyRetention({ maxTotalBytes: Math.floor(each * 3.5) });
  assert.equal(
    r.removed.map((x) => x.id),
    [caps[0]?.id, caps[1]?.id],
  );
  assert.ok(r.removed.every((x) => x.reason === "bytes"));
  assert.ok(r.total_bytes_after <= each * 3.5 && !r.over_budget);
  assert.equal((await store.list()).map((c) => c.id).sort(), [caps[2]?.id, caps[3]?.id, lone.id].sort());
  // A budget nothing can meet stops at each VM's newest capture and says so.
  const tight = await store.applyRetention({ maxTotalBytes: 1 });
  assert.equal(
    tight.removed.map((x) => x.id),
    [caps[2]?.id],
  );
  assert.ok(tight.over_budget);
  let total = 0;
  for (const f of await chunkFiles(p.dir)) total += (await stat(f)).size;
  assert.ok(total <= each * 2 + 4096, "unreferenced chunks are gone from disk");
  await store.close();
});

test("GC never deletes a chunk that a capture being written relies on", async () => {
  const p = paths();
  const store = await openStore(p);
  const data = memoryImage(2048, 11);
  const old = await simpleCapture(store, "vm1", data);
  // Its chunks become garbage, and a new capture of the same data dedupes against them while
  // GC runs concurrently.
  await store.remove(old.id, { gc: false });
  const w = await store.beginCapture({ vm: "vm1" });
  const adding = w.addStream("memory", streamOf(data, 64 * 1024));
  const gcs = [store.gc(), store.gc()];
  await adding;
  await Promise.all(gcs);
  const info = await w.commit();
  await store.gc();
  const v = await store.verify(info.id);
  assert.ok(v.ok, JSON.stringify(v.problems.slice(0, 3)));
  await store.close();
});

// ---- crashes and failures ------------------------------------------------------------------

test("recover() after a crash mid-capture removes the partial capture and its chunks", async () => {
  const p = paths();
  const store = await openStore(p);
  const kept = await simpleCapture(store, "vm1", randomBytes(MiB));
  const chunksBefore = (await chunkFiles(p.dir)).sort();
  await store.close();

  // A child process writes part of a capture and is killed (SIGKILL: no clean-up runs).
  const index = fileURLToPath(new URL("./index.js", import.meta.url));
  const script = `
    const { CaptureStore } = await import(${JSON.stringify(index)});
    const { randomBytes } = await import("node:crypto");
    const store = await CaptureStore.open(${JSON.stringify(p)});
    const w = await store.beginCapture({ vm: "vm1" });
    await w.addBuffer("memory", randomBytes(3 * 1024 * 1024));
    process.stdout.write("added\\n");
    process.kill(process.pid, "SIGKILL");`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  const signal = await new Promise((resolve) => child.on("close", (_c, s) => resolve(s)));
  assert.is(signal, "SIGKILL");
  assert.match(out, /added/);
  const work = await readdir(join(p.dir, "work"));
  assert.is(work.length, 1, "the crash left a working directory");
  assert.ok((await chunkFiles(p.dir)).length > chunksBefore.length, "and unreferenced chunks");

  // The dead process's lock is stale and taken over.
  const again = await openStore(p);
  const r = await again.recover();
  assert.equal(r.removed_work_dirs, work);
  assert.ok(r.gc.ran && r.gc.deleted_chunks > 0);
  assert.equal((await chunkFiles(p.dir)).sort(), chunksBefore);
  assert.equal(await readdir(join(p.dir, "work")), []);
  assert.ok((await again.verify(kept.id)).ok);
  await again.close();
});

/** A write primitive that fails with ENOSPC once `budget` bytes of `what` were written. */
function fullDiskIo(budget: number, what: string): StoreIo & { failures: number } {
  let written = 0;
  const io = {
    failures: 0,
    write(fd: number, data: Uint8Array, kind: Parameters<StoreIo["write"]>[2]) {
      if (kind === what || what === "any") {
        if (written + data.length > budget) {
          io.failures++;
          throw Object.assign(new Error("ENOSPC: no space left on device, write"), {
            code: "ENOSPC",
            errno: -28,
          });
        }
        written += data.length;
      }
      defaultIo.write(fd, data, kind);
    },
  };
  return io;
}

test("ENOSPC while writing chunks aborts the capture cleanly (simulated via injected write)", async () => {
  const p = paths();
  const first = await openStore(p);
  const kept = await simpleCapture(first, "vm1", randomBytes(MiB));
  await first.close();
  const chunksBefore = (await chunkFiles(p.dir)).sort();

  const io = fullDiskIo(2 * MiB, "chunk");
  const store = await openStore(p, { io });
  const w = await store.beginCapture({ vm: "vm1" });
  const e = await rejects(w.addStream("memory", streamOf(randomBytes(6 * MiB))), "no_space", /aborted/);
  assert.is(e.captureId, w.id);
  assert.is(e.part, "memory");
  assert.ok(io.failures > 0);
  assert.is(w.status, "aborted");
  await rejects(w.commit(), "aborted", /no space/);
  assert.equal(await readdir(join(p.dir, "work")), [], "no working directory left");
  assert.equal((await chunkFiles(p.dir)).sort(), chunksBefore, "the chunks it had written were removed");
  assert.ok((await store.verify(kept.id)).ok);
  await store.close();
});

test("ENOSPC while writing the manifest aborts the capture cleanly", async () => {
  const p = paths();
  const store = await openStore(p, { io: fullDiskIo(0, "manifest") });
  const w = await store.beginCapture({ vm: "vm1" });
  await w.addStream("memory", streamOf(randomBytes(MiB)));
  await rejects(w.commit(), "no_space");
  assert.equal(await readdir(join(p.dir, "manifests")), []);
  assert.equal(await readdir(join(p.dir, "work")), []);
  assert.equal(await chunkFiles(p.dir), []);
  await store.close();
});

test("ENOSPC on a real, small file system (set SHADOWVM_TEST_SMALL_FS to a tiny tmpfs)", async () => {
  const small = process.env["SHADOWVM_TEST_SMALL_FS"];
  if (!small) return; // optional: needs a mount (e.g. mount -t tmpfs -o size=8m tmpfs /mnt/x)
  const p = { dir: join(small, `store-${process.pid}`), keyFile: join(scratch, "small-fs.key") };
  const store = await openStore(p);
  const w = await store.beginCapture({ vm: "vm1" });
  await rejects(w.addStream("memory", streamOf(randomBytes(64 * MiB))), "no_space");
  assert.equal(await chunkFiles(p.dir), []);
  assert.equal(await readdir(join(p.dir, "work")), []);
  const ok = await simpleCapture(store, "vm1", randomBytes(MiB));
  assert.ok((await store.verify(ok.id)).ok, "the store still works once space is back");
  await store.close();
  await rm(p.dir, { recursive: true, force: true });
});

test("a failing source aborts the capture and leaves nothing behind", async () => {
  const p = paths();
  const store = await openStore(p);
  const w = await store.beginCapture({ vm: "vm1" });
  const source = Readable.from(
    (async function* () {
      yield randomBytes(2 * MiB);
      throw new Error("QEMU migration stream closed");
    })(),
  );
  await rejects(w.addStream("memory", source), "source_error", /QEMU migration stream closed/);
  assert.equal(await readdir(join(p.dir, "work")), []);
  assert.equal(await chunkFiles(p.dir), []);
  assert.equal(await store.list(), []);
  await store.close();
});

// ---- API behaviour -------------------------------------------------------------------------

test("progress callbacks and the bandwidth cap", async () => {
  const p = paths();
  const store = await openStore(p);
  const data = randomBytes(MiB);
  const file = join(scratch, "bw.img");
  await writeFile(file, data);
  const w = await store.beginCapture({ vm: "vm1" });
  const seen: Array<{ bytesRead: number; totalBytes: number | undefined }> = [];
  const t0 = Date.now();
  await w.addFile("disk:vda", file, {
    maxBytesPerSecond: 4 * MiB,
    onProgress: (pr) => seen.push({ bytesRead: pr.bytesRead, totalBytes: pr.totalBytes }),
  });
  const ms = Date.now() - t0;
  assert.ok(ms >= 200, `1 MiB at 4 MiB/s took ${ms} ms`);
  assert.ok(seen.length >= 2);
  assert.ok(
    seen.every((s, i) => s.totalBytes === MiB && (i === 0 || s.bytesRead >= (seen[i - 1]?.bytesRead ?? 0))),
  );
  assert.is(seen.at(-1)?.bytesRead, MiB);
  await w.commit();
  await store.close();
});

test("ids, states, locking and read-only opens", async () => {
  const p = paths();
  const store = await openStore(p);
  await rejects(openStore(p), "locked", /this process/);
  const w = await store.beginCapture({ vm: "vm1", id: "nightly-1" });
  await rejects(w.commit(), "invalid_state", /without parts/);
  await rejects(w.addBuffer("bad\nname", "x"), "invalid_argument");
  await w.addBuffer("config.json", "{}");
  await rejects(w.addBuffer("config.json", "{}"), "invalid_argument", /already has/);
  await rejects(store.beginCapture({ vm: "vm1", id: "nightly-1" }), "capture_exists");
  await w.commit();
  await rejects(w.addBuffer("x", "y"), "invalid_state");
  await rejects(store.beginCapture({ vm: "vm1", id: "nightly-1" }), "capture_exists");
  await rejects(store.beginCapture({ vm: "vm1", id: "../escape" }), "invalid_argument");
  await rejects(store.get("nope"), "not_found");
  await rejects(store.remove("nope"), "not_found");

  const ro = await openStore(p, { readOnly: true });
  assert.ok((await ro.verify("nightly-1")).ok);
  await rejects(ro.beginCapture({ vm: "vm1" }), "read_only");
  await rejects(ro.applyRetention({ keepPerVm: 0 }), "read_only");
  await ro.close();

  const a = await store.beginCapture({ vm: "vm1" });
  await a.addBuffer("memory", randomBytes(100_000));
  await a.abort();
  assert.is(a.status, "aborted");
  assert.equal(
    (await store.list()).map((c) => c.id),
    ["nightly-1"],
  );
  await store.close();
  await rejects(
    openStore({ dir: join(scratch, "not-a-store-parent"), keyFile: p.keyFile }, { readOnly: true }),
    "not_found",
  );
  await mkdir(join(scratch, "full-dir"), { recursive: true });
  await writeFile(join(scratch, "full-dir", "something"), "x");
  await rejects(
    openStore({ dir: join(scratch, "full-dir"), keyFile: join(scratch, "k2", "key") }),
    "store_format",
  );
});

test.run();
