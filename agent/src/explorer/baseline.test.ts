import { test } from "uvu";
import * as assert from "uvu/assert";
import { baselineToStressProfile, generateStressProfile, type ProductionVmData } from "./baseline.js";
import { Rng } from "./rng.js";

const vm: ProductionVmData = { average_cpu_usage: 0.5, average_memory_usage: 0.6, average_disk_io: 0.4 };
const N = 40_000;

function draws(data: ProductionVmData, n = N) {
  const out = [];
  // Many seeds, a few draws each: checks the generator, not one stream.
  for (let s = 0; s < n / 4; s++) {
    const rng = new Rng(s);
    for (let i = 0; i < 4; i++) out.push(generateStressProfile(data, rng));
  }
  return out;
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test("base levels are 1.2x / 1.1x / 1.3x of the averages, varied uniformly by +-0.2 / 0.1 / 0.15", () => {
  const d = draws(vm);
  const cpu = d.map((p) => p.cpu_load);
  const mem = d.map((p) => p.memory_load);
  const io = d.map((p) => p.io_load);
  assert.ok(Math.abs(mean(cpu) - 0.6) < 0.005, `cpu mean ${mean(cpu)}`);
  assert.ok(Math.abs(mean(mem) - 0.66) < 0.003, `mem mean ${mean(mem)}`);
  assert.ok(Math.abs(mean(io) - 0.52) < 0.004, `io mean ${mean(io)}`);
  assert.ok(Math.min(...cpu) >= 0.4 - 1e-12 && Math.max(...cpu) <= 0.8 + 1e-12);
  assert.ok(Math.min(...mem) >= 0.56 - 1e-12 && Math.max(...mem) <= 0.76 + 1e-12);
  assert.ok(Math.min(...io) >= 0.37 - 1e-12 && Math.max(...io) <= 0.67 + 1e-12);
  // Uniform, not clustered: the extremes are reached and the variance is (2a)^2/12.
  assert.ok(Math.min(...cpu) < 0.402 && Math.max(...cpu) > 0.798);
  const v = mean(cpu.map((x) => (x - 0.6) ** 2));
  assert.ok(Math.abs(v - 0.4 ** 2 / 12) < 0.0005, `cpu variance ${v}`);
});

test("loads are clamped at zero, as max(0, ...) in the pseudocode", () => {
  const d = draws({ average_cpu_usage: 0.05, average_memory_usage: 0, average_disk_io: 0 }, 8000);
  assert.ok(d.every((p) => p.cpu_load >= 0 && p.memory_load >= 0 && p.io_load >= 0));
  // base cpu 0.06, variation -0.2..0.2: P(clamped) = 0.14 / 0.4 = 35%.
  const zeroCpu = d.filter((p) => p.cpu_load === 0).length / d.length;
  assert.ok(Math.abs(zeroCpu - 0.35) < 0.03, `clamped share ${zeroCpu}`);
  const zeroMem = d.filter((p) => p.memory_load === 0).length / d.length;
  assert.ok(Math.abs(zeroMem - 0.5) < 0.03, `clamped share ${zeroMem}`);
});

test("memory corruption ~10%, latency spike ~5%, independent; fault_injected when either", () => {
  const d = draws(vm);
  const corr = d.filter((p) => p.memory_corruption).length / d.length;
  const spike = d.filter((p) => p.network_latency_spike).length / d.length;
  const both = d.filter((p) => p.memory_corruption && p.network_latency_spike).length / d.length;
  assert.ok(Math.abs(corr - 0.1) < 0.006, `corruption ${corr}`);
  assert.ok(Math.abs(spike - 0.05) < 0.005, `spike ${spike}`);
  assert.ok(Math.abs(both - 0.005) < 0.002, `both ${both}`);
  assert.ok(d.every((p) => p.fault_injected === (p.memory_corruption || p.network_latency_spike)));
});

test("the same seed gives the same profiles; another seed does not", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const pa = Array.from({ length: 5 }, () => generateStressProfile(vm, a));
  const pb = Array.from({ length: 5 }, () => generateStressProfile(vm, b));
  const pc = Array.from({ length: 5 }, () => generateStressProfile(vm, c));
  assert.equal(pa, pb);
  assert.not.equal(pa, pc);
});

test("consumes exactly five draws in the pseudocode's order", () => {
  const seq = [0.5, 0.75, 0.25, 0.05, 0.01, 0.99];
  let i = 0;
  const p = generateStressProfile(vm, { random: () => seq[i++]! });
  assert.is(i, 5);
  assert.ok(Math.abs(p.cpu_load - 0.6) < 1e-12); // variation 0 at u=0.5
  assert.ok(Math.abs(p.memory_load - (0.66 + 0.05)) < 1e-12); // -0.1 + 0.2*0.75
  assert.ok(Math.abs(p.io_load - (0.52 - 0.075)) < 1e-12); // -0.15 + 0.3*0.25
  assert.ok(p.memory_corruption && p.network_latency_spike && p.fault_injected);
});

test("maps onto StressProfile: network knobs 0, rolled faults as fault specs", () => {
  const raw = {
    cpu_load: 0.7,
    memory_load: 1.2,
    io_load: 0.5,
    fault_injected: true,
    memory_corruption: true,
    network_latency_spike: true,
  };
  const p = baselineToStressProfile(raw, { durationS: 100 });
  assert.is(p.net_latency_ms, 0);
  assert.is(p.net_loss_pct, 0);
  assert.is(p.duration_s, 100);
  assert.is(p.memory_load, 1, "memory_load is a share of RAM");
  assert.equal(p.faults, [
    { kind: "memory_error", rate: 0.5, at_s: 50 },
    { kind: "net_latency_spike", rate: 0.5, at_s: 50, duration_s: 10 },
  ]);
  const none = baselineToStressProfile(
    { ...raw, network_latency_spike: false },
    { durationS: 60, faultKinds: [] },
  );
  assert.equal(none.faults, []);
});

test.run();
