import { test } from "uvu";
import * as assert from "uvu/assert";
import { type AlertRecord, materialChange, precursorAnnotation } from "./alert-dispatcher.js";

// The previous round's alert; each case changes one thing.
const before: AlertRecord = {
  alert_id: "a1",
  vm_uuid: "u1",
  vm_name: "vm-1",
  fingerprint: "fp",
  title: "OOM kill of svm-leak",
  class: "oom",
  severity: "critical",
  status: "firing",
  starts_at_ms: 0,
  ends_at_ms: null,
  updated_at_ms: 0,
  last_sent_at_ms: 0,
  send_count: 1,
  delivered: true,
  probability: 0.85,
  confidence: 0.3,
  confidence_level: "medium",
  time_to_failure_h: 0.2,
  summary: "",
  mitigation: "",
  link: "",
  labels: {},
  annotations: { confidence: "0.30 (medium)", time_to_failure: "~0.2 h" },
  resolved_reason: null,
  last_error: null,
};

test("the confidence level changing is material, its value moving within the level is not", () => {
  assert.ok(materialChange(before, { ...before, confidence: 0.69, confidence_level: "high" }));
  assert.not.ok(materialChange(before, { ...before, confidence: 0.45 }));
});

test("the probability moving by 0.1 or more is material, less is not", () => {
  assert.ok(materialChange(before, { ...before, probability: 0.97 }));
  assert.ok(materialChange(before, { ...before, probability: 0.75 }));
  assert.not.ok(materialChange(before, { ...before, probability: 0.9 }));
});

test("a precursor, a production failure or an unstressed failure appearing or going away is material", () => {
  for (const flag of ["precursor", "observed_in_production", "fails_unstressed"]) {
    const flagged = { ...before, annotations: { ...before.annotations, [flag]: "x" } };
    assert.ok(materialChange(before, flagged), `${flag} appears`);
    assert.ok(materialChange(flagged, before), `${flag} goes away`);
  }
});

test("the precursor annotation says how often the line came before the failure in the shadows", () => {
  const seen = {
    seen_at_ms: Date.UTC(2026, 10, 29, 12),
    line: "[ 81.2] svm-leak: allocation failed",
    pattern: "p",
    count: 2,
  };
  assert.is(
    precursorAnnotation({ ...seen, runs_with: 3, runs_without: 1 }),
    "[ 81.2] svm-leak: allocation failed (seen 2026-11-29T12:00:00.000Z; preceded the failure in 3 of the 4 shadow runs that printed it)",
  );
  // From an agent that does not count: the line and when, as before.
  assert.is(precursorAnnotation(seen), "[ 81.2] svm-leak: allocation failed (seen 2026-11-29T12:00:00.000Z)");
});

test("the time to failure and other figures moving each round are not", () => {
  const later = {
    ...before,
    updated_at_ms: 5000,
    time_to_failure_h: 0.1,
    annotations: { ...before.annotations, time_to_failure: "~0.1 h" },
  };
  assert.not.ok(materialChange(before, later));
});

test.run();
