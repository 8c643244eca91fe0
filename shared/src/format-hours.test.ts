import { test } from "uvu";
import * as assert from "uvu/assert";
import { aboutHours, formatHours, formatTimeToFailure } from "./format-hours.js";

test("minutes under an hour, hours up to two days, days after", () => {
  assert.is(formatHours(0.001), "under 1 min");
  assert.is(formatHours(2 / 60), "2 min");
  assert.is(formatHours(0.99), "59 min");
  assert.is(formatHours(1.31), "1.3 h");
  assert.is(formatHours(42.7), "42.7 h");
  assert.is(formatHours(60), "2.5 days");
});

test("a time to failure in a table: none, now, or the duration", () => {
  assert.is(formatTimeToFailure(null), "-");
  assert.is(formatTimeToFailure(0), "now");
  assert.is(formatTimeToFailure(0.04), "2 min");
});

test("an estimate reads '~2 min', but 'under 1 min' without the tilde", () => {
  assert.is(aboutHours(2 / 60), "~2 min");
  assert.is(aboutHours(9.4), "~9.4 h");
  assert.is(aboutHours(0.005), "under 1 min");
});

test.run();
