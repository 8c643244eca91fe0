import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ConsoleFollower } from "./console-follower.js";

test("follows appends in order, waits for a missing file, rereads a truncated one", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-follow-"));
  const file = join(dir, "console.log");
  const chunks: string[] = [];
  let truncations = 0;
  const follower = new ConsoleFollower(file, (c) => chunks.push(c.toString()), {
    pollMs: 30,
    readBytes: 7,
    onTruncate: () => truncations++,
  });
  try {
    follower.start();
    await follower.drain();
    assert.is(follower.bytes, 0, "no file yet");
    writeFileSync(file, "line one\nline t");
    await waitFor(() => follower.bytes === 15, { timeoutMs: 5000, what: "first write" });
    appendFileSync(file, "wo\n");
    await follower.drain();
    assert.is(chunks.join(""), "line one\nline two\n");
    assert.ok(
      chunks.every((c) => c.length <= 7),
      "reads are bounded",
    );
    writeFileSync(file, "new\n");
    await waitFor(() => truncations === 1 && chunks.join("").endsWith("new\n"), {
      timeoutMs: 5000,
      what: "reread after truncation",
    });
    for (let i = 0; i < 100; i++) appendFileSync(file, `${i}\n`);
    await follower.stop();
    assert.ok(chunks.join("").endsWith("98\n99\n"), "stop() drains first");
  } finally {
    await follower.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
