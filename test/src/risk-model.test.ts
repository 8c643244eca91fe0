// Risk computation on constructed histories: the pure model, then the engine over a real DuckDB
// store fed with real frames (inventory, shadow runs with failures, telemetry with the operating
// point): a clear trend toward a known boundary, little evidence, contradictory evidence, no
// telemetry, fleet correlation, a healthy VM, and the stored history.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { collectorConfigSchema, IngestStore } from "@shadowvm/collector";
import { main } from "@shadowvm/collector/cli/main";
import {
  currentRisk,
  queryable,
  type RiskAssessment,
  RiskEngine,
  riskHistory,
} from "@shadowvm/collector/risk/risk-engine";
import {
  confidenceOf,
  crossingProbability,
  estimateBoundary,
  fitTrend,
  normalCdf,
  type RunPoint,
  timeToBoundary,
} from "@shadowvm/collector/risk/risk-model";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { HANG, History, noise, OOM } from "./risk-history.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-risk-"));
const config = collectorConfigSchema.parse({});

const run = (id: string, memory_load: number, failed: boolean, cpu_load = 1): RunPoint => ({
  run_id: id,
  values: { cpu_load, memory_load, io_load: 0.5 },
  failed,
});

test("normal CDF", () => {
  assert.ok(Math.abs(normalCdf(0) - 0.5) < 1e-7);
  assert.ok(Math.abs(normalCdf(1.959964) - 0.975) < 1e-6);
  assert.ok(Math.abs(normalCdf(-1) - 0.158655) < 1e-6);
});

test("the boundary's uncertainty shrinks as runs accumulate, and memory dominates", () => {
  const few = estimateBoundary([run("a", 0.3, false), run("b", 0.9, true)]);
  const many = estimateBoundary([
    ...[0.3, 0.5, 0.6, 0.7, 0.75, 0.8].map((m, i) => run(`p${i}`, m, false, 1 + (i % 3) * 0.3)),
    ...[0.85, 0.9, 0.95].map((m, i) => run(`f${i}`, m, true, 1 + (i % 2) * 0.4)),
  ]);
  assert.equal(few.dominant?.dimension, "memory_load");
  assert.equal(many.dominant?.dimension, "memory_load");
  assert.ok(
    many.dominant!.uncertainty < few.dominant!.uncertainty / 5,
    `${many.dominant!.uncertainty} vs ${few.dominant!.uncertainty}`,
  );
  assert.ok(Math.abs(many.dominant!.boundary - 0.825) < 1e-9);
  assert.equal(many.dominant!.contradicting, 0);
  assert.equal(many.dominant!.discrimination, 1);
  // cpu_load does not separate failing from passing runs.
  const cpu = many.dimensions.find((d) => d.dimension === "cpu_load")!;
  assert.ok(cpu.discrimination < 0.8 && cpu.contradicting > 0);
});

test("a line toward the boundary: probability and time to failure", () => {
  const trend = fitTrend(
    Array.from({ length: 60 }, (_, i) => ({ t: -6 + i / 10, y: 0.6 + 0.0125 * (-6 + i / 10) })),
  )!;
  assert.ok(Math.abs(trend.slope - 0.0125) < 1e-9 && Math.abs(trend.level - 0.6) < 1e-9);
  const c = crossingProbability(trend, 0.825, 0.01, 24);
  assert.ok(c.probability > 0.99);
  const reach = timeToBoundary(trend, 0.825, 24, 4);
  assert.equal(reach.basis, "on_trend");
  assert.ok(Math.abs(reach.time_to_failure_h! - 18) < 1e-6, String(reach.time_to_failure_h));
  const short = crossingProbability(trend, 0.825, 0.01, 6);
  assert.ok(short.probability < 0.01, `6 h horizon: ${short.probability}`);
  const flat = fitTrend(Array.from({ length: 60 }, (_, i) => ({ t: -6 + i / 10, y: 0.4 })))!;
  assert.equal(timeToBoundary(flat, 0.825, 24, 4).time_to_failure_h, null);
});

test("confidence: little evidence is low, contradictions lower it, fleet evidence halves it", () => {
  const base = {
    runs: 12,
    failing: 3,
    boundary_uncertainty: 0.015,
    contradicting: 0,
    forecast_error: 0.006,
    samples: 72,
    fleet_factor: 1,
    extrapolation: 1,
  };
  const good = confidenceOf(base);
  assert.equal(good.level, "high");
  assert.equal(confidenceOf({ ...base, runs: 1, failing: 1, boundary_uncertainty: 0.26 }).level, "low");
  assert.ok(confidenceOf({ ...base, contradicting: 4 }).value < good.value / 2);
  assert.ok(Math.abs(confidenceOf({ ...base, fleet_factor: 0.5 }).value - good.value / 2) < 1e-12);
  assert.ok(Math.abs(confidenceOf({ ...base, extrapolation: 0.3 }).value - good.value * 0.3) < 1e-12);
});

let store: IngestStore;

test.before(async () => {
  store = await IngestStore.open(join(dir, "shadowvm.duckdb"));
});

test.after(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const find = (all: RiskAssessment[], vm: string, fp = OOM.fingerprint) =>
  all.find((a) => a.vm_name === vm && a.fingerprint === fp);

test("engine on constructed histories", async () => {
  const h = new History();
  const image = { image: "debian-12-web", kernel: "6.1.0-18" };
  h.vm("u-web1", "web-1", { labels: image, memory_mb: 2048 })
    .vm("u-web2", "web-2", { labels: { image: "debian-12-web" } })
    .vm("u-few", "few-1")
    .vm("u-contra", "contra-1")
    .vm("u-notel", "notel-1")
    .vm("u-calm", "calm-1")
    .vm("u-db", "db-1", { labels: { image: "debian-12-db" } });
  // web-1: 12 runs; OOM from memory_load 0.85 up, clean at 0.8 and below (cpu and io vary).
  const loads = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];
  loads.forEach((m, i) => {
    const load = { memory_load: m, cpu_load: 1 + (i % 3) * 0.3, io_load: 0.5 + (i % 4) * 0.4 };
    h.run("u-web1", "web-1", `w${i}`, load, m >= 0.85 ? OOM : undefined);
  });

  // A run failing with another signature says nothing about OOM (left out of its boundary).
  h.run("u-web1", "web-1", "w-hang", { memory_load: 0.4, io_load: 2.5 }, HANG);
  // Production memory: 0.525 six hours ago, 0.6 now, +0.0125/h: reaches 0.825 in 18 h.
  h.telemetry("u-web1", (t, i) => ({ memory: 0.6 + 0.0125 * t + noise(i) }));
  // few-1: a single failing run, same trend.
  h.run("u-few", "few-1", "f0", { memory_load: 0.9 }, OOM);
  h.telemetry("u-few", (t, i) => ({ memory: 0.6 + 0.0125 * t + noise(i) }));
  // contra-1: the same loads both fail and pass.
  [
    [0.85, true],
    [0.9, true],
    [0.85, false],
    [0.9, false],
    [0.95, false],
    [0.5, false],
  ].forEach(([m, f], i) => {
    h.run("u-contra", "contra-1", `c${i}`, { memory_load: m as number }, f ? OOM : undefined);
  });
  h.telemetry("u-contra", (t, i) => ({ memory: 0.6 + 0.0125 * t + noise(i) }));
  // notel-1: well explored, but no telemetry at all.
  loads.forEach((m, i) => {
    h.run("u-notel", "notel-1", `n${i}`, { memory_load: m }, m >= 0.85 ? OOM : undefined);
  });
  // calm-1: the same boundary, production flat at 0.35.
  loads.forEach((m, i) => {
    h.run("u-calm", "calm-1", `q${i}`, { memory_load: m }, m >= 0.85 ? OOM : undefined);
  });
  h.telemetry("u-calm", (_t, i) => ({ memory: 0.35 + noise(i) }));
  // web-2 (same image as web-1, never shadowed) grows like web-1; db-1 (other image) too.
  h.telemetry("u-web2", (t, i) => ({ memory: 0.6 + 0.0125 * t + noise(i) }));
  h.telemetry("u-db", (t, i) => ({ memory: 0.6 + 0.0125 * t + noise(i) }));
  await h.commit(store);

  const conn = await store.connectReader();
  const engine = new RiskEngine(queryable(conn), config.risk);
  const t0 = performance.now();
  const all = await engine.compute();
  const ms = performance.now() - t0;
  console.log(`risk round over ${all.length} assessments: ${ms.toFixed(0)} ms`);

  const web1 = find(all, "web-1")!;
  assert.ok(web1, "web-1 assessed");
  assert.equal(web1.status, "assessed");
  assert.equal(web1.source, "own");
  assert.equal(web1.dimension, "memory_load");
  assert.ok(Math.abs(web1.boundary - 0.825) < 1e-9, String(web1.boundary));
  assert.ok(web1.probability! > 0.9, `p=${web1.probability}`);
  assert.ok(Math.abs(web1.time_to_failure_h! - 18) < 1.5, `ttf=${web1.time_to_failure_h}`);
  assert.equal(web1.confidence_level, "high", web1.explanation);
  assert.equal(web1.runs, 12, "the HANG run is left out of the OOM boundary");
  assert.equal(web1.failing_runs, 3);
  assert.equal(web1.run_ids.sort(), ["w10", "w11", "w9"]);
  assert.match(web1.explanation, /memory_load dominates/);
  assert.match(web1.mitigations[0]!.action, /raise web-1's memory from 2048 MiB to at least \d+ MiB/);
  assert.match(web1.mitigations[1]!.because, /grows ~\d+ MiB\/h/);
  // The HANG signature is assessed separately (io_load dominates; forecastable, low I/O: low risk).
  const hang = find(all, "web-1", HANG.fingerprint)!;
  assert.equal(hang.dimension, "io_load");
  assert.ok(hang.probability! < 0.05, `hang p=${hang.probability}`);
  // Low and flat: no change now, and what to do with the disk if it starts rising.
  assert.match(hang.mitigations[0]!.action, /^no change needed now/);
  assert.match(hang.mitigations[0]!.because, /disk/);

  const few = find(all, "few-1")!;
  assert.equal(few.status, "assessed");
  assert.equal(few.confidence_level, "low", `few: ${few.confidence}`);
  assert.ok(few.confidence < web1.confidence / 2);

  const contra = find(all, "contra-1")!;
  assert.equal(contra.confidence_level, "low", `contra: ${contra.confidence}`);
  assert.equal(contra.contradicting_runs, 3);
  assert.match(contra.explanation, /3 passing run\(s\) at or above it/);

  const notel = find(all, "notel-1")!;
  assert.equal(notel.status, "no_telemetry");
  assert.equal(notel.probability, null);
  assert.match(notel.explanation, /No risk claimed: 0 operating-point sample\(s\)/);

  const calm = find(all, "calm-1")!;
  assert.ok(calm.probability! < 0.01, `calm p=${calm.probability}`);
  assert.equal(calm.time_to_failure_h, null);
  assert.is(calm.mitigations.length, 1);
  assert.match(calm.mitigations[0]!.action, /^no change needed now: calm-1's memory_load/);
  assert.ok(
    calm.mitigations.every((m) => !/leak/.test(m.action)),
    "a flat VM's noise is not called a leak",
  );

  const web2 = find(all, "web-2")!;
  assert.equal(web2.source, "fleet");
  assert.equal(
    web2.fleet_peers.map((p) => `${p.vm_name}:${p.label}=${p.value}`),
    ["web-1:image=debian-12-web"],
  );
  assert.ok(web2.probability! > 0.9);
  assert.ok(web2.confidence < web1.confidence * 0.6 && web2.confidence > 0, `fleet ${web2.confidence}`);
  assert.match(web2.explanation, /shadows of web-1 \(image=debian-12-web\)/);
  assert.equal(find(all, "db-1"), undefined, "no evidence for another image");

  // Stored with history: two rounds, the current one is the latest.
  const now = Date.now();
  await engine.store(conn, { at_ms: now - 60_000, trigger: "test", duration_ms: ms }, all);
  await engine.store(conn, { at_ms: now, trigger: "test", duration_ms: ms }, await engine.compute(now));
  const db = queryable(conn);
  const current = await currentRisk(db);
  assert.equal(current.length, all.length);
  assert.ok(current.every((a) => a.computed_at_ms === now));
  assert.equal(current[0]!.probability !== null && current[0]!.probability > 0.9, true, "highest first");
  const history = await riskHistory(db, { vm: "u-web1", fingerprint: OOM.fingerprint });
  assert.equal(
    history.map((a) => a.computed_at_ms),
    [now, now - 60_000],
  );
  assert.equal(history[0]!.mitigations.length, web1.mitigations.length);
  // A VM is found by name as by UUID; filters and pages narrow the current round.
  assert.equal(
    (await riskHistory(db, { vm: "web-1", fingerprint: OOM.fingerprint })).map((a) => a.computed_at_ms),
    [now, now - 60_000],
  );
  const web1Now = await currentRisk(db, { vm: "web-1" });
  assert.ok(web1Now.length >= 2 && web1Now.every((a) => a.vm_uuid === "u-web1"));
  assert.equal(
    (await currentRisk(db, { vm: "web-1", class: "oom" })).map((a) => a.fingerprint),
    [OOM.fingerprint],
  );
  const pages = [
    ...(await currentRisk(db, { limit: 2 })),
    ...(await currentRisk(db, { limit: 100, offset: 2 })),
  ];
  assert.equal(
    pages.map((a) => `${a.vm_uuid}/${a.fingerprint}`),
    current.map((a) => `${a.vm_uuid}/${a.fingerprint}`),
  );
  conn.closeSync();
});

test("runs that cannot tell CPU from memory: the dimension production heads for is assessed", async () => {
  const store = await IngestStore.open(join(dir, "tied.duckdb"));
  try {
    const h = new History();
    h.vm("u-tied", "tied-1").vm("u-tied-calm", "tied-calm-1");
    // As in a small real campaign: the failing runs raised CPU and memory together, the passing
    // ones neither, so either knob alone separates them (the dominant one by tightness is CPU).
    const runs: [number, number, boolean][] = [
      [1.5, 1.0, true],
      [1.5, 1.0, true],
      [1.3, 0.9, true],
      [1.0, 0.21, false],
      [1.0, 0.23, false],
      [1.2, 0.54, false],
      [1.0, 0.57, false],
      [1.0, 0.24, false],
    ];
    for (const vm of ["tied-1", "tied-calm-1"]) {
      runs.forEach(([cpu_load, memory_load, failed], i) => {
        h.run(
          `u-${vm.replace(/-1$/, "")}`,
          vm,
          `${vm}-${i}`,
          { cpu_load, memory_load },
          failed ? OOM : undefined,
        );
      });
    }
    // tied-1's memory climbs toward the memory boundary (0.735) while its CPU stays low.
    h.telemetry("u-tied", (t, i) => ({ memory: 0.6 + 0.02 * t + noise(i), cpu: 0.1 + noise(i) }));
    h.telemetry("u-tied-calm", (_t, i) => ({ memory: 0.3 + noise(i), cpu: 0.1 + noise(i) }));
    await h.commit(store);
    const conn = await store.connectReader();
    try {
      const all = await new RiskEngine(queryable(conn), config.risk).compute();
      const tied = all.find((a) => a.vm_uuid === "u-tied")!;
      assert.equal(tied.dimension, "memory_load", tied.explanation);
      assert.ok(tied.probability! > 0.5, `p=${tied.probability}`);
      assert.match(tied.explanation, /cannot tell memory_load from cpu_load/);
      assert.match(tied.explanation, /the one production is likeliest to cross/);
      // The same evidence with flat production: nothing to cross, no risk.
      const calm = all.find((a) => a.vm_uuid === "u-tied-calm")!;
      assert.ok(calm.probability! < 0.01, `calm p=${calm.probability}`);
    } finally {
      conn.closeSync();
    }
  } finally {
    await store.close();
  }
});

test("a slow rise over minutes of telemetry claims no time to failure a day ahead; over hours it does", async () => {
  const store = await IngestStore.open(join(dir, "reach.duckdb"));
  try {
    const h = new History();
    h.vm("u-fresh", "fresh-1").vm("u-seasoned", "seasoned-1");
    const loads = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0];
    for (const [uuid, name] of [
      ["u-fresh", "fresh-1"],
      ["u-seasoned", "seasoned-1"],
    ] as const) {
      loads.forEach((m, i) => {
        h.run(uuid, name, `${name}-${i}`, { memory_load: m }, m >= 0.85 ? OOM : undefined);
      });
      // +0.03 per hour from 0.2: the line reaches the boundary (0.825) in about 21 h, past a 12 h
      // horizon; fresh-1 has 5 minutes of telemetry (one sample every 2 s), seasoned-1 6 hours.
      const short = uuid === "u-fresh";
      h.telemetry(uuid, (t, i) => ({ memory: 0.2 + 0.03 * t + noise(i, 0.0001) }), {
        points: short ? 150 : 72,
        spanH: short ? 5 / 60 : 6,
      });
    }
    await h.commit(store);
    const conn = await store.connectReader();
    try {
      const risk = collectorConfigSchema.parse({ risk: { horizon_h: 12 } }).risk;
      const all = await new RiskEngine(queryable(conn), risk).compute();
      const fresh = all.find((a) => a.vm_uuid === "u-fresh")!;
      assert.equal(fresh.time_to_failure_h, null, fresh.explanation);
      assert.equal((fresh.detail["reach"] as { basis: string }).basis, "beyond_telemetry");
      assert.match(
        fresh.explanation,
        /not claimed: the line reaches it in ~2\d\.\d h, further ahead than 4x the 5 min of telemetry/,
      );
      assert.match(
        fresh.mitigations[0]!.action,
        /^no change needed now: fresh-1's memory_load is at 20\.0 % and rising/,
      );
      const seasoned = all.find((a) => a.vm_uuid === "u-seasoned")!;
      // 21 h is within 4 x 5.9 h.
      assert.ok(Math.abs(seasoned.time_to_failure_h! - 0.625 / 0.03) < 0.5, seasoned.explanation);
      assert.equal((seasoned.detail["reach"] as { basis: string }).basis, "on_trend");
      // "No failure within 12 h" from 5 minutes of telemetry is a weak claim; from 6 hours it is not.
      assert.equal(fresh.confidence_level, "low", `fresh confidence ${fresh.confidence}`);
      assert.equal(seasoned.confidence_level, "high", `seasoned confidence ${seasoned.confidence}`);
    } finally {
      conn.closeSync();
    }
  } finally {
    await store.close();
  }
});

test("a run counts for its primary failure; its consequences are no signatures of their own", async () => {
  const store = await IngestStore.open(join(dir, "primary.duckdb"));
  try {
    const h = new History();
    h.vm("u-mce", "mce-1");
    const PANIC = { title: "QEMU: guest panicked", class: "panic", fingerprint: "f-panic" };
    [0.3, 0.5, 0.7, 0.8, 0.9, 0.95].forEach((m, i) => {
      h.run(
        "u-mce",
        "mce-1",
        `m${i}`,
        { memory_load: m },
        m >= 0.8 ? OOM : undefined,
        m >= 0.8 ? [PANIC] : [],
      );
    });
    h.telemetry("u-mce", (t, i) => ({ memory: 0.6 + 0.0125 * t + noise(i) }));
    await h.commit(store);
    const conn = await store.connectReader();
    try {
      const all = await new RiskEngine(queryable(conn), config.risk).compute();
      assert.equal(
        all.filter((a) => a.vm_uuid === "u-mce").map((a) => a.fingerprint),
        [OOM.fingerprint],
      );
      const oom = all.find((a) => a.vm_uuid === "u-mce")!;
      assert.is(oom.failing_runs, 3);
    } finally {
      conn.closeSync();
    }
  } finally {
    await store.close();
  }
});

test("a VM whose unstressed controls fail the same way on two captures in a row fails now; captures apart do not", async () => {
  const store = await IngestStore.open(join(dir, "unstressed.duckdb"));
  const control = { cpu_load: 0, memory_load: 0, io_load: 0 };
  const LOCKUP = {
    title: "watchdog: BUG: soft lockup in ext4_writepages",
    class: "lockup",
    fingerprint: "f-lockup",
  };
  const APIC = {
    title: "BUG: unable to handle kernel paging request in native_apic_mem_write",
    class: "oops",
    fingerprint: "f-apic",
  };
  try {
    const h = new History();
    // doomed-1: shadowed (OOM above memory 0.8, production flat at 0.3), and its controls
    // failed with a lockup on two captures of one campaign.
    h.vm("u-doomed", "doomed-1");
    for (const [i, m] of [0.3, 0.5, 0.85, 0.9].entries())
      h.run("u-doomed", "doomed-1", `d${i}`, { memory_load: m }, m >= 0.8 ? OOM : undefined);
    h.run("u-doomed", "doomed-1", "d-c1", control, LOCKUP, [], { control: true, capture: "cap-a" });
    h.run("u-doomed", "doomed-1", "d-c2", control, LOCKUP, [], { control: true, capture: "cap-b" });
    h.telemetry("u-doomed", (_t, i) => ({ memory: 0.3 + noise(i) }));
    // unlucky-1: a capture whose control crashed (the capture's fault), then a healthy control ...
    h.vm("u-unlucky", "unlucky-1");
    h.run("u-unlucky", "unlucky-1", "u-c1", control, APIC, [], { control: true, capture: "cap-c" });
    h.run("u-unlucky", "unlucky-1", "u-c2", control, undefined, [], { control: true, capture: "cap-d" });
    // ... and the same glitch in the next day's campaign: two captures, but not in a row.
    h.run("u-unlucky", "unlucky-1", "u-c3", control, APIC, [], {
      control: true,
      capture: "cap-e",
      campaign: "c2",
    });
    h.run("u-unlucky", "unlucky-1", "u-c4", control, undefined, [], {
      control: true,
      capture: "cap-f",
      campaign: "c2",
    });
    h.run("u-unlucky", "unlucky-1", "u1", { memory_load: 0.9 }, OOM, [], { capture: "cap-d" });
    h.run("u-unlucky", "unlucky-1", "u2", { memory_load: 0.4 }, undefined, [], { capture: "cap-d" });
    h.telemetry("u-unlucky", (_t, i) => ({ memory: 0.3 + noise(i) }));
    // ghost-1: no inventory yet and no conclusive run, only its two failing controls.
    h.run("u-ghost", "ghost-1", "g-c1", control, LOCKUP, [], { control: true, capture: "cap-g" });
    h.run("u-ghost", "ghost-1", "g-c2", control, LOCKUP, [], { control: true, capture: "cap-h" });
    await h.commit(store);
    const conn = await store.connectReader();
    try {
      const all = await new RiskEngine(queryable(conn), config.risk).compute();
      const doomed = all.filter((a) => a.vm_uuid === "u-doomed");
      const lockup = doomed.find((a) => a.fingerprint === LOCKUP.fingerprint);
      assert.ok(
        lockup,
        `an assessment for the signature only the controls showed: ${JSON.stringify(doomed.map((a) => a.title))}`,
      );
      assert.is(lockup.status, "assessed");
      assert.is(lockup.probability, 1);
      assert.is(lockup.time_to_failure_h, 0);
      assert.is(lockup.confidence_level, "high");
      assert.is(lockup.fails_unstressed, true);
      assert.match(
        lockup.explanation,
        /^Fails without stress: doomed-1's unstressed control shadows failed with "watchdog: BUG: soft lockup/,
      );
      assert.match(lockup.explanation, /on 2 separate live captures \(control runs d-c1, d-c2,/);
      assert.match(lockup.mitigations[0]!.action, /^restart doomed-1 /);
      // The stressed OOM keeps its own assessment (production far below its boundary).
      const oom = doomed.find((a) => a.fingerprint === OOM.fingerprint)!;
      assert.ok(oom.probability !== null && oom.probability < 0.1, `OOM P ${oom.probability}`);
      assert.not.ok(oom.fails_unstressed);

      const unlucky = all.filter((a) => a.vm_uuid === "u-unlucky");
      assert.equal(
        unlucky.map((a) => a.fingerprint),
        [OOM.fingerprint],
        "crashing controls of captures apart are no signature of the VM",
      );
      assert.not.ok(unlucky[0]!.fails_unstressed);

      const ghost = all.filter((a) => a.vm_uuid === "u-ghost");
      assert.equal(
        ghost.map((a) => [a.vm_name, a.title, a.probability, a.fails_unstressed]),
        [["ghost-1", LOCKUP.title, 1, true]],
        "a VM known only from its failing controls is assessed too",
      );

      // Stored and read back: the mark survives (it lives in the detail).
      const engine = new RiskEngine(queryable(conn), config.risk);
      await engine.store(conn, { at_ms: Date.now(), trigger: "test", duration_ms: 1 }, all);
      const stored = (await currentRisk(queryable(conn))).find((a) => a.fingerprint === LOCKUP.fingerprint);
      assert.is(stored?.fails_unstressed, true);
      assert.is(stored?.probability, 1);
    } finally {
      conn.closeSync();
    }
  } finally {
    await store.close();
  }
});

test("shadowvm-collector risk prints the current round", async () => {
  store.close(); // the CLI opens the database read-only, as when no collector runs
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (t: string) => out.push(t), err: (t: string) => err.push(t) };
  const env = { SHADOWVM_COLLECTOR__TLS__REQUIRED: "false" };
  assert.equal(await main(["risk", "--data-dir", dir], io, env), 0, err.join("\n"));
  const table = out.join("\n");
  assert.match(table, /VM\s+SIGNATURE\s+CLASS\s+STATUS\s+P\(FAIL\)/);
  assert.match(table, /web-1 .* oom .* assessed .* 1\.00 .* high /);
  // The time to failure reads as a duration (about 18 h), not a bare number of hours.
  assert.match(table, /web-1 .* high \d\.\d\d\s+1\d\.\d h\s+memory_load/);
  assert.match(table, /notel-1 .* no_telemetry .* - /);
  out.length = 0;
  assert.equal(
    await main(["risk", "--data-dir", dir, "--vm", "u-web1", "--json"], io, env),
    0,
    err.join("\n"),
  );
  const rows = JSON.parse(out.join("\n")) as RiskAssessment[];
  assert.equal(rows.length, 4, "two rounds x two signatures");
  assert.ok(rows.every((r) => r.vm_uuid === "u-web1"));

  // A data dir where no collector has run: said plainly, and nothing is created there.
  const empty = mkdtempSync(join(tmpdir(), "shadowvm-risk-empty-"));
  err.length = 0;
  assert.equal(await main(["risk", "--data-dir", empty], io, env), 1);
  assert.match(
    err.join("\n"),
    /no collector database at .*shadowvm\.duckdb: expected the data_dir of a collector that has run/,
  );
  assert.equal(readdirSync(empty), []);
  rmSync(empty, { recursive: true });
});

test.run();
