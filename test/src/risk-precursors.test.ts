// Precursor matching and production failures in the risk engine, on constructed histories committed
// through the real store: the same VM and evidence with and without a precursor seen on its
// production console, an old precursor (outside risk.precursor_window_h), a precursor of another
// signature, a VM without telemetry, a production FAILURE event (observed in production), and
// precursors weighed by how far they warned in the shadows (precision: runs with the failure among
// the runs that showed the line).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { collectorConfigSchema, IngestStore } from "@shadowvm/collector";
import {
  currentRisk,
  queryable,
  type RiskAssessment,
  RiskEngine,
} from "@shadowvm/collector/risk/risk-engine";
import { withPrecursor } from "@shadowvm/collector/risk/risk-model";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { HANG, History, noise, OOM } from "./risk-history.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-risk-pre-"));
const config = collectorConfigSchema.parse({});
const H = 3_600_000;
const LINE = "[ 8123.456789] svm-writer[812]: allocation of 4096 kB failed, retrying";
const PATTERN = "svm-writer[NUM]: allocation of NUM failed, retrying";

const find = (all: RiskAssessment[], vm: string, fp = OOM.fingerprint) =>
  all.find((a) => a.vm_name === vm && a.fingerprint === fp);

test("the combination rule", () => {
  assert.equal(withPrecursor(0.2, 0.5, 0, 0), { probability: 0.2, confidence: 0.5, level: "medium" });
  const r = withPrecursor(0.2, 0.5, 0.3, 0.2);
  assert.ok(Math.abs(r.probability - 0.44) < 1e-12);
  assert.ok(Math.abs(r.confidence - 0.6) < 1e-12);
  assert.is(r.level, "high");
  assert.is(withPrecursor(0.9, 0.1, 1, 1).probability, 1);
});

test("precursors raise P and confidence within the window; a production failure is observed", async () => {
  const store = await IngestStore.open(join(dir, "risk.duckdb"));
  const h = new History();
  // Five VMs with the same shadow evidence (OOM from memory_load 0.85) and a flat production
  // memory of 0.6: a small P on its own.
  const loads = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];
  for (const vm of ["plain", "warned", "old-warning", "other-sig", "notel", "failed", "precise", "noisy"]) {
    h.vm(`u-${vm}`, vm);
    loads.forEach((m, i) => {
      h.run(`u-${vm}`, vm, `${vm}-${i}`, { memory_load: m }, m >= 0.85 ? OOM : undefined);
    });
    h.run(`u-${vm}`, vm, `${vm}-hang`, { memory_load: 0.3, io_load: 2.5 }, HANG);
    if (vm !== "notel") h.telemetry(`u-${vm}`, (_t, i) => ({ memory: 0.6 + noise(i) }));
  }
  h.production("u-warned", "warned", "precursor", OOM, LINE, 2 * H, PATTERN);
  h.production("u-warned", "warned", "precursor", OOM, LINE.replace("812", "813"), 1 * H, PATTERN);
  h.production("u-old-warning", "old-warning", "precursor", OOM, LINE, 30 * H, PATTERN);
  h.production(
    "u-other-sig",
    "other-sig",
    "precursor",
    HANG,
    "[ 1.0] INFO: task svm-writer:1 blocked",
    1 * H,
    "x",
  );
  h.production("u-notel", "notel", "precursor", OOM, LINE, 1 * H, PATTERN);
  // 3 of the 4 shadow runs that showed the line failed with OOM; 1 of 5 for the noisy one.
  h.production("u-precise", "precise", "precursor", OOM, LINE, 1 * H, PATTERN, { with: 3, without: 1 });
  h.production("u-noisy", "noisy", "precursor", OOM, LINE, 1 * H, PATTERN, { with: 1, without: 4 });
  h.production(
    "u-failed",
    "failed",
    "failure",
    OOM,
    "[ 9.0] Out of memory: Killed process 77 (httpd)",
    3 * H,
  );
  await h.commit(store);

  const conn = await store.connectReader();
  const engine = new RiskEngine(queryable(conn), config.risk);
  const now = Date.now();
  const all = await engine.compute(now);

  const plain = find(all, "plain")!;
  assert.is(plain.status, "assessed");
  assert.ok(plain.probability! < 0.05, `plain p=${plain.probability}`);
  assert.is(plain.precursor ?? null, null);
  assert.not.ok(plain.observed_in_production);
  assert.not.match(plain.explanation, /Precursor/);

  // With a precursor: P' = 1 - (1 - P)(1 - 0.3), C' = 1 - (1 - C)(1 - 0.2); the explanation names
  // the newest line and when it was seen.
  const warned = find(all, "warned")!;
  const expected = withPrecursor(plain.probability!, plain.confidence, 0.3, 0.2);
  assert.ok(
    Math.abs(warned.probability! - expected.probability) < 1e-9,
    `${warned.probability} vs ${expected.probability}`,
  );
  assert.ok(Math.abs(warned.confidence - expected.confidence) < 1e-9);
  assert.is(warned.confidence_level, expected.level);
  assert.ok(warned.probability! > plain.probability! + 0.25);
  assert.is(warned.precursor?.count, 2);
  assert.is(warned.precursor?.pattern, PATTERN);
  assert.is(warned.precursor?.probability_before, plain.probability);
  assert.match(
    warned.explanation,
    /Precursor seen on warned's production console at \d{4}-\d\d-\d\dT[\d:]+Z \(1\.0 h ago\)/,
  );
  assert.ok(warned.explanation.includes(JSON.stringify(LINE.replace("812", "813"))), warned.explanation);
  assert.match(warned.explanation, /P raised from 0\.\d\d to 0\.\d\d, confidence from/);
  // The HANG assessment of the same VM is untouched.
  const warnedHang = find(all, "warned", HANG.fingerprint)!;
  assert.is(warnedHang.precursor ?? null, null);

  // Outside the 24 h window, or for another signature: no effect.
  assert.is(find(all, "old-warning")!.probability, plain.probability);
  assert.is(find(all, "other-sig")!.probability, plain.probability);
  const otherHang = find(all, "other-sig", HANG.fingerprint)!;
  assert.ok(otherHang.precursor, "the HANG precursor applies to the HANG assessment");

  // Weighed by its precision in the shadows: both weights times 3/4.
  const precise = find(all, "precise")!;
  const scaled = withPrecursor(plain.probability!, plain.confidence, 0.3 * 0.75, 0.2 * 0.75);
  assert.ok(Math.abs(precise.probability! - scaled.probability) < 1e-9, `${precise.probability}`);
  assert.ok(Math.abs(precise.confidence - scaled.confidence) < 1e-9);
  assert.ok(precise.probability! < warned.probability!, "less than a precursor of unknown precision");
  assert.is(precise.precursor?.precision, 0.75);
  assert.match(precise.explanation, /in 3 of the 4 shadow runs that showed it \(precision 0\.75\): P raised/);
  // Under risk.precursor_min_precision (0.25): not counted, no flag, and the explanation says why.
  const noisy = find(all, "noisy")!;
  // (each VM's telemetry is written at its own instant: equal to plain's up to rounding)
  assert.ok(Math.abs(noisy.probability! - plain.probability!) < 1e-6, `${noisy.probability}`);
  assert.ok(Math.abs(noisy.confidence - plain.confidence) < 1e-6);
  assert.is(noisy.precursor, null);
  assert.equal((noisy.detail["precursor"] as { counted: boolean; precision: number }).counted, false);
  assert.match(
    noisy.explanation,
    /in 1 of the 5 shadow runs that showed it \(precision 0\.20\): not counted/,
  );

  // No telemetry: still no probability claimed, and said so.
  const notel = find(all, "notel")!;
  assert.is(notel.status, "no_telemetry");
  assert.is(notel.probability, null);
  assert.match(notel.explanation, /no probability is claimed without a forecast/);

  // A real failure on the production console.
  const failed = find(all, "failed")!;
  assert.ok(failed.observed_in_production);
  assert.is(failed.status, "assessed", "the status values stay");
  assert.match(
    failed.explanation,
    /^Observed in production: "Out of memory: Killed process" on failed's console at .* \(3\.0 h ago\)/,
  );
  assert.is(find(all, "failed", HANG.fingerprint)!.observed_in_production, false);

  // Stored and read back: the fields come back from the detail JSON.
  await engine.store(conn, { at_ms: now, trigger: "test", duration_ms: 1 }, all);
  const current = await currentRisk(queryable(conn));
  const back = (vm: string) => current.find((a) => a.vm_name === vm && a.fingerprint === OOM.fingerprint)!;
  assert.ok(back("failed").observed_in_production);
  assert.is(back("warned").precursor?.pattern, PATTERN);
  assert.is(back("plain").precursor, null);
  assert.is(back("precise").precursor?.runs_without, 1);
  assert.is(back("noisy").precursor, null, "an uncounted precursor raises no flag when read back");
  assert.is(back("plain").observed_in_production, false);
  conn.closeSync();
  store.close();
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
