import { test } from "uvu";
import * as assert from "uvu/assert";
import { formatBytes, formatTable } from "./table.js";

test("columns are as wide as their widest cell", () => {
  const out = formatTable(
    ["NAME", "STATE"],
    [
      ["demo-production", "running"],
      ["a", "paused"],
    ],
  );
  assert.is(out, "NAME             STATE\ndemo-production  running\na                paused");
});

test("bytes use binary units", () => {
  assert.is(formatBytes(268435456), "256M");
  assert.is(formatBytes(1536), "1.5K");
  assert.is(formatBytes(12), "12B");
  assert.is(formatBytes(64 * 1024 ** 3), "64G");
});

test.run();
