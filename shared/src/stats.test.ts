import { test } from "uvu";
import * as assert from "uvu/assert";
import { percentile } from "./stats.js";

test("percentile is nearest-rank", () => {
  assert.is(percentile([], 0.5), null);
  assert.is(percentile([5], 0.99), 5);
  assert.is(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), 5);
  assert.is(percentile([10, 1, 9, 2, 8, 3, 7, 4, 6, 5], 0.9), 9);
  assert.is(percentile([1, 2, 3, 100], 0.99), 100);
});

test.run();
