import { Counter, Registry } from "prom-client";
import { test } from "uvu";
import * as assert from "uvu/assert";
import type { SampleColumns } from "./ingest-frame.js";
import { FUTURE_TOLERANCE_MS, SampleClockCheck } from "./sample-clock.js";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 29, 12);

function samples(...ts: number[]): SampleColumns {
  return {
    n: ts.length,
    scope: new Uint8Array(ts.length).fill(2),
    vmUuid: ts.map(() => "vm-1"),
    ts: Float64Array.from(ts),
    cpu: new Float64Array(ts.length),
    counters: new Float64Array(0),
    extra: ts.map(() => null),
  };
}

function setup(retentionDays: number) {
  let now = NOW;
  const warnings: { fields: Record<string, unknown>; message: string }[] = [];
  const counter = new Counter({
    name: "t_out_of_window_total",
    help: "t",
    labelNames: ["reason"],
    registers: [new Registry()],
  });
  const check = new SampleClockCheck({
    retentionDays,
    logger: {
      warn: ((fields: Record<string, unknown>, message: string) =>
        warnings.push({ fields, message })) as never,
    },
    counter,
    now: () => now,
  });
  const count = async (reason: string) =>
    (await counter.get()).values.find((v) => v.labels["reason"] === reason)?.value ?? 0;
  return { check, warnings, count, advance: (ms: number) => (now += ms) };
}

test("samples inside the window pass silently", async () => {
  const { check, warnings, count } = setup(30);
  check.check("a", samples(NOW - 29 * DAY, NOW, NOW + FUTURE_TOLERANCE_MS));
  assert.is(warnings.length, 0);
  assert.is(await count("past_retention"), 0);
  assert.is(await count("future"), 0);
});

test("samples older than the retention are counted, and the operator told once an hour per agent", async () => {
  const { check, warnings, count, advance } = setup(30);
  check.check("a", samples(Date.UTC(2001, 8, 9), NOW - 31 * DAY, NOW));
  assert.is(await count("past_retention"), 2);
  assert.is(warnings.length, 1);
  assert.match(
    warnings[0]!.message,
    /agent a sent samples timestamped before the retention \(retention\.samples_days: 30\).*check that host's clock/,
  );
  assert.is(warnings[0]!.fields["oldest"], "2001-09-09T00:00:00.000Z");
  assert.is(warnings[0]!.fields["samples"], 2);
  check.check("a", samples(NOW - 40 * DAY));
  assert.is(await count("past_retention"), 3, "counted every time");
  assert.is(warnings.length, 1, "told once within the hour");
  check.check("b", samples(NOW - 40 * DAY));
  assert.is(warnings.length, 2, "another agent is told apart");
  advance(3_600_000);
  check.check("a", samples(NOW - 40 * DAY));
  assert.is(warnings.length, 3, "told again an hour later");
});

test("samples ahead of the collector's clock are counted; without a retention nothing is too old", async () => {
  const { check, warnings, count } = setup(0);
  check.check("a", samples(Date.UTC(2001, 0, 1), NOW + FUTURE_TOLERANCE_MS + 1, NOW + DAY));
  assert.is(await count("past_retention"), 0);
  assert.is(await count("future"), 2);
  assert.is(warnings.length, 1);
  assert.match(warnings[0]!.message, /more than 10 min ahead of the collector's clock/);
  assert.is(warnings[0]!.fields["newest"], new Date(NOW + DAY).toISOString());
});

test.run();
