// campaigns.json: when a VM is next due, and the errors for a history that cannot be read.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { nextCampaignDueMs, readCampaignHistory, writeCampaignHistory } from "./campaign-history.js";

const HOUR = 3600_000;

test("next campaign: interval after the last start, doubled per unfinished campaign, capped", () => {
  const c = { interval_s: 3600, backoff_max_s: 4 * 3600 };
  assert.is(nextCampaignDueMs(undefined, c), 0, "a VM never shadowed is due at once");
  const at = (n: number) => nextCampaignDueMs({ last_started_ms: 1000, unfinished_in_a_row: n }, c) - 1000;
  assert.equal([0, 1, 2, 3, 10].map(at), [HOUR, 2 * HOUR, 4 * HOUR, 4 * HOUR, 4 * HOUR]);
  // A cap below the interval never shortens the interval.
  assert.is(
    nextCampaignDueMs(
      { last_started_ms: 0, unfinished_in_a_row: 2 },
      { interval_s: 3600, backoff_max_s: 60 },
    ),
    HOUR,
  );
});

test("the history round-trips; a missing file is an empty history; a bad one is a clear error", () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-hist-"));
  try {
    const file = join(dir, "sub", "campaigns.json");
    assert.equal(readCampaignHistory(file), {});
    const history = {
      "u-1": { vm_name: "web-1", last_started_ms: 5, unfinished_in_a_row: 2, last_error: "x" },
    };
    writeCampaignHistory(file, history);
    assert.equal(readCampaignHistory(file), history);
    writeFileSync(file, "{not json");
    assert.throws(
      () => readCampaignHistory(file),
      /campaigns\.json cannot be read as the campaign history \(/,
    );
    writeFileSync(file, JSON.stringify({ "u-1": { started: 5 } }));
    assert.throws(
      () => readCampaignHistory(file),
      /is not a campaign history: expected an object of VM uuid -> \{last_started_ms, \.\.\.\} \(entry u-1 has no last_started_ms\)/,
    );
    writeFileSync(file, "[]");
    assert.throws(() => readCampaignHistory(file), /is not a campaign history/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
