#!/usr/bin/env node
// Capture-store benchmark: stores a synthetic memory image + disk image, then second captures
// in which ~5% of the 4 KiB pages changed, and reports put/restore throughput, stored bytes
// per GiB of input, and each second capture's new_bytes.
//
// Usage (after `npx tsc -b shared agent`):
//   node test/bench/capture-store-bench.mjs [--memory-mib 256] [--disk-mib 64] [--change 0.05]
//        [--dir /tmp/x] [--keep] [--no-fsync] [--chunker min,avg,max (KiB)]
//
// Synthetic data (deterministic, generated to files first so generation is not timed):
//   memory: 4 KiB pages, 40% zero, 30% text-like (words from a 64-word list: compresses ~4x),
//           30% random (incompressible).
//   disk:   64 KiB clusters, 45% unallocated (zero); allocated clusters have the same page mix.
// Second captures, one per dirty-page model (each removed again before the next):
//   scattered    single pages anywhere (worst case for any chunking)
//   runs-1-32    runs of 1-32 pages, uniform (mean 16.5 pages = 66 KiB)
//   runs-geo-32  runs of geometric length, mean 32 pages (128 KiB)
//   runs-geo-64  runs of geometric length, mean 64 pages (256 KiB)
// Changed pages get new content of their kind (a changed zero page becomes a text page).
import { createCipheriv, createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

const { CaptureStore } = await import(
  new URL("../../agent/dist/capture/store/index.js", import.meta.url).href
);

const { values: args } = parseArgs({
  allowPositionals: false,
  options: {
    "memory-mib": { type: "string", default: "256" },
    "disk-mib": { type: "string", default: "64" },
    change: { type: "string", default: "0.05" },
    dir: { type: "string" },
    keep: { type: "boolean", default: false },
    "no-fsync": { type: "boolean", default: false },
    // min,avg,max chunk size in KiB for the (new) store, e.g. 16,64,256; default: the store's
    chunker: { type: "string" },
  },
});

const PAGE = 4096;
const BLOCK = 1024 * 1024;
const MiB = 1024 * 1024;
const memMiB = Number(args["memory-mib"]);
const diskMiB = Number(args["disk-mib"]);
const changeFraction = Number(args.change);

const WORDS = (
  "the of and to in is was for on that with as by at from this be are it or an have not which " +
  "kernel page memory cache buffer socket thread process file inode dentry request response " +
  "error warning info debug json user admin session token value count index table query"
)
  .split(" ")

  .map((w) => Buffer.from(`${w} `));

function keystream(label, index, length) {
  const key = createHash("sha256").update(label).digest();
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(index, 8);
  return createCipheriv("aes-256-ctr", key, iv).update(Buffer.alloc(length));
}

function textPage(rnd, out, at) {
  let pos = at;
  const end = at + PAGE;
  let i = 0;
  while (pos < end) {
    const w = WORDS[rnd[i++ % rnd.length] % WORDS.length];
    pos += w.copy(out, pos, 0, Math.min(w.length, end - pos));
  }
}

/**
 * Writes an image of `mib` MiB. kind(page) is stable across versions; pages in `changed` take
 * their content from the version's keystream instead of the base one.
 */
async function writeImage(path, name, mib, clusterZeros, changed, version) {
  const ws = createWriteStream(path, { highWaterMark: 4 * MiB });
  const pagesPerBlock = BLOCK / PAGE;
  for (let b = 0; b < mib; b++) {
    const out = Buffer.alloc(BLOCK);
    const base = keystream(`${name}:data`, b, BLOCK);
    const kinds = keystream(`${name}:kind`, b, pagesPerBlock * 2);
    let alt = null;
    for (let i = 0; i < pagesPerBlock; i++) {
      const page = b * pagesPerBlock + i;
      const isChanged = changed.has(page);
      if (isChanged && !alt) alt = keystream(`${name}:v${version}`, b, BLOCK);
      const rnd = (isChanged ? alt : base).subarray(i * PAGE, (i + 1) * PAGE);
      const k = kinds[i];
      const zero = clusterZeros ? kinds[pagesPerBlock + (i >> 4)] < 115 : k < 102;
      if (zero && !isChanged) continue;
      if (zero || k < 179) textPage(rnd, out, i * PAGE);
      else rnd.copy(out, i * PAGE);
    }
    if (!ws.write(out)) await new Promise((r) => ws.once("drain", r));
  }
  await new Promise((resolve, reject) => ws.end((err) => (err ? reject(err) : resolve())));
}

const MODELS = {
  scattered: () => 1,
  "runs-1-32": (u) => 1 + Math.floor(u * 32),
  "runs-geo-32": (u) => Math.max(1, Math.round(-Math.log(1 - u) * 32)),
  "runs-geo-64": (u) => Math.max(1, Math.round(-Math.log(1 - u) * 64)),
};

function changedPages(pages, fraction, model, seed) {
  const set = new Set();
  const rnd = keystream(`changes:${model}:${seed}`, 0, 16 * pages + 64);
  let i = 0;
  while (set.size < pages * fraction) {
    const start = rnd.readUInt32BE((i * 8) % (rnd.length - 8)) % pages;
    const u = rnd.readUInt32BE((i * 8 + 4) % (rnd.length - 8)) / 2 ** 32;
    i++;
    const len = MODELS[model](u);
    for (let p = start; p < Math.min(pages, start + len) && set.size < pages * fraction; p++) set.add(p);
  }
  return set;
}

async function sha256File(path) {
  const h = createHash("sha256");
  for await (const b of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(b);
  return h.digest("hex");
}

async function dirBytes(dir) {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath ?? e.path, e.name))).size;
  }
  return total;
}

const mb = (bytes) => bytes / 1e6;
const fmt = (x, d = 1) => x.toFixed(d);

async function capture(store, vm, memPath, diskPath, metadata) {
  const t0 = performance.now();
  const w = await store.beginCapture({ vm, metadata });
  const memSize = (await stat(memPath)).size;
  await w.addStream("memory", createReadStream(memPath, { highWaterMark: BLOCK }), { totalBytes: memSize });
  await w.addFile("disk:vda", diskPath);
  await w.addBuffer("config.json", JSON.stringify({ vm, memory_mib: memMiB }));
  const info = await w.commit();
  const secs = (performance.now() - t0) / 1000;
  const input = info.parts.reduce((s, p) => s + p.size, 0);
  return { info, secs, input };
}

const root = args.dir ?? (await mkdtemp(join(tmpdir(), "capture-store-bench-")));
await mkdir(root, { recursive: true });
const data = join(root, "data");
await mkdir(data, { recursive: true });
const storeDir = join(root, "store");
const keyFile = join(root, "key", "capture-store.key");

console.log(
  `capture-store benchmark: memory ${memMiB} MiB, disk ${diskMiB} MiB, ${changeFraction * 100}% pages changed`,
);
console.log(`command: node test/bench/capture-store-bench.mjs ${process.argv.slice(2).join(" ")}`.trim());
console.log(`node ${process.version}, fsync ${args["no-fsync"] ? "off" : "on"}, dir ${root}`);

const memPages = (memMiB * MiB) / PAGE;
const diskPages = (diskMiB * MiB) / PAGE;
let t = performance.now();
await writeImage(join(data, "mem-1.img"), "mem", memMiB, false, new Set(), 1);
await writeImage(join(data, "disk-1.img"), "disk", diskMiB, true, new Set(), 1);
console.log(`generated base images in ${fmt((performance.now() - t) / 1000)} s`);

const chunker = args.chunker
  ? (([minSize, avgSize, maxSize]) => ({ minSize, avgSize, maxSize }))(
      args.chunker.split(",").map((k) => Number(k) * 1024),
    )
  : undefined;
const store = await CaptureStore.open({ dir: storeDir, keyFile, fsync: !args["no-fsync"], chunker });
const c = store.chunker;
console.log(
  `chunker: min ${c.minSize / 1024} KiB, avg (mask) ${c.avgSize / 1024} KiB, max ${c.maxSize / 1024} KiB`,
);
const first = await capture(store, "bench-vm", join(data, "mem-1.img"), join(data, "disk-1.img"), {
  pause_ms: 0,
});
const storeAfterFirst = await dirBytes(storeDir);
console.log("");
console.log(
  `capture 1 (all new): ${fmt(mb(first.input))} MB in ${fmt(first.secs, 2)} s = ${fmt(mb(first.input) / first.secs)} MB/s; ` +
    `stored_bytes ${fmt(mb(first.info.stored_bytes))} MB = ${fmt(first.info.stored_bytes / (first.input / 2 ** 30) / MiB)} MiB per GiB of input; ` +
    `store files ${fmt(mb(storeAfterFirst))} MB; mean chunk ${fmt(first.input / first.info.parts.reduce((n, p) => n + p.chunk_count, 0) / 1024)} KiB`,
);

const rows = [];
for (const model of Object.keys(MODELS)) {
  const memChanged = changedPages(memPages, changeFraction, model, 1);
  const diskChanged = changedPages(diskPages, changeFraction, model, 2);
  const memPath = join(data, `mem-2-${model}.img`);
  const diskPath = join(data, `disk-2-${model}.img`);
  t = performance.now();
  await writeImage(memPath, "mem", memMiB, false, memChanged, 2);
  await writeImage(diskPath, "disk", diskMiB, true, diskChanged, 2);
  const gen = (performance.now() - t) / 1000;
  const second = await capture(store, "bench-vm", memPath, diskPath, { model });
  const changedBytes = (memChanged.size + diskChanged.size) * PAGE;
  rows.push({
    model,
    changedPct: (100 * changedBytes) / second.input,
    newPctStored: (100 * second.info.new_bytes) / second.info.stored_bytes,
    newPctInput: (100 * second.info.new_bytes) / second.input,
    newMB: mb(second.info.new_bytes),
    putMBs: mb(second.input) / second.secs,
    gen,
    id: second.info.id,
    input: second.input,
  });
  if (model !== "runs-geo-32") {
    await store.remove(second.info.id);
    await rm(memPath);
    await rm(diskPath);
  }
}

console.log("");
console.log("second capture (one per dirty-page model):");
console.log("  model         changed  new_bytes  new/stored  new/input  put MB/s");
for (const r of rows) {
  console.log(
    `  ${r.model.padEnd(13)} ${fmt(r.changedPct).padStart(6)}%  ${fmt(r.newMB).padStart(6)} MB  ${fmt(r.newPctStored).padStart(8)}%  ${fmt(r.newPctInput).padStart(8)}%  ${fmt(r.putMBs).padStart(8)}`,
  );
}

// Restore the kept second capture (runs-geo-32) and check it against its source files.
const kept = rows.find((r) => r.model === "runs-geo-32");
t = performance.now();
await store.restorePart(kept.id, "memory", join(data, "restored-mem.img"), { overwrite: true });
await store.restorePart(kept.id, "disk:vda", join(data, "restored-disk.img"), { overwrite: true });
const restoreSecs = (performance.now() - t) / 1000;
const same =
  (await sha256File(join(data, "restored-mem.img"))) ===
    (await sha256File(join(data, "mem-2-runs-geo-32.img"))) &&
  (await sha256File(join(data, "restored-disk.img"))) ===
    (await sha256File(join(data, "disk-2-runs-geo-32.img")));
t = performance.now();
const v = await store.verify(kept.id);
const verifySecs = (performance.now() - t) / 1000;
const storeBytes = await dirBytes(storeDir);
const totalInput = first.input + kept.input;

console.log("");
console.log(
  `restore (memory + disk to files): ${fmt(mb(kept.input))} MB in ${fmt(restoreSecs, 2)} s = ${fmt(mb(kept.input) / restoreSecs)} MB/s; identical: ${same}`,
);
console.log(`verify: ${fmt(mb(v.bytes_checked) / verifySecs)} MB/s, ok: ${v.ok}`);
console.log(
  `store after 2 captures: ${fmt(mb(storeBytes))} MB for ${fmt(mb(totalInput))} MB of input = ${fmt(storeBytes / (totalInput / 2 ** 30) / MiB)} MiB per GiB`,
);
console.log(`peak RSS: ${fmt(process.resourceUsage().maxRSS / 1024)} MiB`);

await store.close();
if (!args.keep && !args.dir) await rm(root, { recursive: true, force: true });
