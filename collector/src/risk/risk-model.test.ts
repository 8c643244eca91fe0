// When a time to failure is claimed: the line's slope against its noise, and how far ahead of the
// telemetry it rests on. The rest of the model is tested across packages (test/src/risk-model.test.ts).
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  extrapolationFactor,
  fitTrend,
  notHeadingText,
  precursorPrecision,
  reachText,
  timeToBoundary,
} from "./risk-model.js";

/** Points every 2 s over `minutes`, ending now (t in hours, <= 0): level at t = 0 plus slope * t. */
function series(minutes: number, level: number, slopePerH: number, wobble = 0) {
  const n = Math.round((minutes * 60) / 2);
  return fitTrend(
    Array.from({ length: n }, (_, i) => {
      const t = -((n - 1 - i) * 2) / 3600;
      return { t, y: level + slopePerH * t + (i % 2 === 0 ? wobble : -wobble) };
    }),
  )!;
}

test("a leak two minutes from the boundary: on the trend, whatever the short telemetry", () => {
  // The demo's leaking VM at its first risk round: under 2 min of telemetry, +4.6 per hour.
  const trend = series(1.8, 0.32, 4.6, 0.002);
  const reach = timeToBoundary(trend, 0.67, 1, 4);
  assert.equal(reach.basis, "on_trend");
  assert.ok(Math.abs(reach.time_to_failure_h! - 0.35 / 4.6) < 0.002, String(reach.time_to_failure_h));
  assert.ok(Math.abs(reach.span_h - 1.8 / 60) < 0.001, String(reach.span_h));
  assert.match(reachText(reach, 4), /^reached in ~5 min$/);
  // Seconds away: "under 1 min", not "~under 1 min".
  assert.is(
    reachText(timeToBoundary(series(1.8, 0.66, 4.6, 0.002), 0.67, 1, 4), 4),
    "reached in under 1 min",
  );
});

test("a VM settling after boot: a slow rise over 4 min claims no time 9 h ahead", () => {
  // The demo's healthy VM: 0.20 and +0.05 per hour, smooth enough for the rise to be real.
  const trend = series(4.5, 0.2, 0.05, 0.0001);
  const reach = timeToBoundary(trend, 0.67, 1, 4);
  assert.equal(reach.basis, "beyond_telemetry");
  assert.equal(reach.time_to_failure_h, null);
  assert.ok(Math.abs(reach.line_h! - 9.4) < 0.05, String(reach.line_h));
  assert.match(
    reachText(reach, 4),
    /^not claimed: the line reaches it in ~9\.4 h, further ahead than 4x the 4 min of telemetry it rests on$/,
  );
  assert.match(notHeadingText(reach), /^rising, but on this line it reaches the boundary only in ~9\.4 h/);
  // The same rise on six hours of telemetry is a claim: 9.4 h is within 4 x 6 h.
  const long = timeToBoundary(series(360, 0.2, 0.05, 0.0001), 0.67, 1, 4);
  assert.equal(long.basis, "on_trend");
  assert.ok(Math.abs(long.time_to_failure_h! - 9.4) < 0.05, String(long.time_to_failure_h));
  // Within the horizon a time is claimed from short telemetry too: the probability covers it.
  assert.equal(timeToBoundary(trend, 0.67, 12, 4).basis, "on_trend");
  // Never past 10 horizons, however long the telemetry.
  const far = timeToBoundary(series(360, 0.2, 0.05, 0.0001), 0.67, 0.5, 4);
  assert.equal(far.basis, "beyond_horizons");
  assert.match(
    reachText(far, 4),
    /^not claimed: the line reaches it in ~9\.4 h, more than 10 horizons ahead$/,
  );
  assert.match(notHeadingText(far), /only in ~9\.4 h, more than 10 horizons ahead$/);
});

test("a rise within the noise claims no time; flat, falling and already past the boundary", () => {
  // +0.01 per hour on a series that wobbles by 0.05 sample to sample over 10 min.
  const noisy = timeToBoundary(series(10, 0.5, 0.01, 0.05), 0.6, 24, 4);
  assert.equal(noisy.basis, "within_noise");
  assert.equal(noisy.time_to_failure_h, null);
  assert.ok(noisy.slope_error > 0.005, String(noisy.slope_error));
  assert.match(reachText(noisy, 4), /within its noise/);
  assert.equal(notHeadingText(noisy), "not rising toward the boundary beyond its noise");
  // The same slope on a clean series is a rise (10 h to the boundary, within 24 h).
  assert.equal(timeToBoundary(series(10, 0.5, 0.01, 0.0001), 0.6, 24, 4).basis, "on_trend");
  assert.equal(timeToBoundary(series(10, 0.5, 0), 0.6, 24, 4).basis, "not_rising");
  const falling = timeToBoundary(series(10, 0.5, -0.2, 0.001), 0.6, 24, 4);
  assert.equal(falling.basis, "not_rising");
  assert.equal(notHeadingText(falling), "not rising toward the boundary");
  const past = timeToBoundary(series(10, 0.7, -0.2, 0.001), 0.6, 24, 4);
  assert.equal(past.basis, "reached");
  assert.equal(past.time_to_failure_h, 0);
  assert.equal(reachText(past, 4), "already reached");
});

test("the telemetry backs a failure minutes away fully, and 'none within the horizon' by its span", () => {
  const leak = timeToBoundary(series(1.8, 0.32, 4.6, 0.002), 0.67, 1, 4);
  assert.is(extrapolationFactor(leak, 1, 4), 1, "4 x 1.8 min covers the 4.6 min to the boundary");
  const settling = timeToBoundary(series(4.5, 0.2, 0.05, 0.0001), 0.67, 1, 4);
  // No time claimed: the claim "not within the hour" rests on the line 60 min ahead; 4 x 4.5 min = 0.3 of it.
  assert.ok(
    Math.abs(extrapolationFactor(settling, 1, 4) - 0.3) < 0.01,
    String(extrapolationFactor(settling, 1, 4)),
  );
  const past = timeToBoundary(series(10, 0.7, -0.2, 0.001), 0.6, 24, 4);
  assert.is(extrapolationFactor(past, 24, 4), 1, "already past the boundary: nothing to extrapolate");
  const sixHours = extrapolationFactor(timeToBoundary(series(360, 0.4, 0), 0.6, 24, 4), 24, 4);
  assert.ok(sixHours > 0.999, `6 h of telemetry back 24 h: ${sixHours}`);
});

test("a precursor's precision: the share of the shadow runs showing its line that went on to fail", () => {
  assert.is(precursorPrecision(3, 1), 0.75);
  assert.is(precursorPrecision(2, 0), 1);
  assert.is(precursorPrecision(1, 4), 0.2);
  // An older agent sends neither count: not known, weighed as before.
  assert.is(precursorPrecision(0, 0), null);
  assert.is(precursorPrecision(0, 7), null);
});

test.run();
