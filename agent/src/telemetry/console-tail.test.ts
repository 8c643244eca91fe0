// ConsoleTail on real files: start at the end, appends and partial lines, truncation, rotation,
// a huge line without newlines (bounded), binary bytes, a file that appears later.
import { appendFileSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ConsoleTail } from "./console-tail.js";

const root = mkdtempSync(join(tmpdir(), "svm-tail-"));
let n = 0;
function setup(content?: string, options = {}) {
  const path = join(root, `c${++n}.log`);
  if (content !== undefined) writeFileSync(path, content);
  const lines: string[] = [];
  const events: string[] = [];
  const tail = new ConsoleTail(
    path,
    (l) => lines.push(l),
    options,
    (e) => events.push(e),
  );
  return { path, lines, events, tail };
}

test("starts at the end; appends and partial lines come out as whole lines", async () => {
  const t = setup("boot line 1\nboot line 2\n");
  assert.is(await t.tail.poll(), 0);
  appendFileSync(t.path, "first\nsec");
  assert.is(await t.tail.poll(), 1);
  appendFileSync(t.path, "ond\r\nthird\n");
  await t.tail.poll();
  assert.equal(t.lines, ["first", "second", "third"]);
  assert.equal(t.events, ["opened"]);
  await t.tail.close();
});

test("truncation restarts at 0; rotation finishes the old file, then reads the new one from its start", async () => {
  const t = setup("");
  await t.tail.poll();
  appendFileSync(t.path, "aaaaaaaaaa\nbbbbbbbbbb\n");
  await t.tail.poll();
  truncateSync(t.path, 0);
  appendFileSync(t.path, "after truncate\n");
  await t.tail.poll();
  assert.equal(t.lines, ["aaaaaaaaaa", "bbbbbbbbbb", "after truncate"]);
  assert.ok(t.events.includes("truncated"));
  // logrotate: rename, the writer adds a last line to the old file, a new file appears
  renameSync(t.path, `${t.path}.1`);
  appendFileSync(`${t.path}.1`, "last of old\nno newline at the end");
  await t.tail.poll(); // old file gone from the path: its rest is read
  writeFileSync(t.path, "new 1\nnew 2\n");
  await t.tail.poll();
  assert.equal(t.lines.slice(3), ["last of old", "no newline at the end", "new 1", "new 2"]);
  assert.ok(t.events.includes("rotated"));
  await t.tail.close();
});

test("a huge line without newlines is bounded, and the lines after it still come", async () => {
  const t = setup("", { maxLineBytes: 4096, maxReadBytes: 1 << 20 });
  await t.tail.poll();
  appendFileSync(t.path, Buffer.alloc(5 * 1024 * 1024, 0x41));
  appendFileSync(t.path, "\nshort\n");
  const before = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 10 && t.lines.length < 2; i++) await t.tail.poll();
  assert.is(t.lines.length, 2);
  assert.is(t.lines[0]!.length, 4096);
  assert.is(t.lines[1], "short");
  assert.is(t.tail.droppedBytes, 5 * 1024 * 1024 - 4096);
  assert.ok(process.memoryUsage().arrayBuffers - before < 4 * 1024 * 1024, "no buffer of the line's size");
  await t.tail.close();
});

test("binary bytes: split on \\n as bytes, decoded with replacement characters", async () => {
  const t = setup("");
  await t.tail.poll();
  appendFileSync(t.path, Buffer.from([0xff, 0xfe, 0x00, 0x41, 0x0a, 0xe2, 0x82]));
  await t.tail.poll();
  appendFileSync(t.path, Buffer.from([0xac, 0x0a])); // a UTF-8 sequence split across reads
  await t.tail.poll();
  assert.equal(t.lines, ["\ufffd\ufffd\u0000A", "€"]);
  await t.tail.close();
});

test("a file that does not exist yet is read from its start when it appears", async () => {
  const t = setup();
  assert.is(await t.tail.poll(), 0);
  writeFileSync(t.path, "created later\n");
  await t.tail.poll();
  assert.equal(t.lines, ["created later"]);
  await t.tail.close();
});

test.after(() => rmSync(root, { recursive: true, force: true }));

test.run();
