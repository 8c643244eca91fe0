import { test } from "uvu";
import * as assert from "uvu/assert";
import { Rng } from "./rng.js";

test("same seed, same stream; numbers and strings both seed", () => {
  const a = new Rng(7);
  const b = new Rng(7);
  assert.equal(
    Array.from({ length: 10 }, () => a.random()),
    Array.from({ length: 10 }, () => b.random()),
  );
  assert.is(new Rng("vm-1").random(), new Rng("vm-1").random());
  assert.is.not(new Rng("vm-1").random(), new Rng("vm-2").random());
});

test("uniform in [0,1) with the right mean and no short cycles", () => {
  const r = new Rng(1);
  let sum = 0;
  const seen = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    const x = r.random();
    assert.ok(x >= 0 && x < 1);
    sum += x;
    seen.add(x);
  }
  assert.ok(Math.abs(sum / 100_000 - 0.5) < 0.005);
  assert.ok(seen.size > 99_990);
});

test("state round-trips, so a resumed explorer continues the same stream", () => {
  const a = new Rng(3);
  a.random();
  const b = Rng.fromState(a.state());
  assert.is(a.random(), b.random());
});

test("beta draws have the Beta mean", () => {
  const r = new Rng(5);
  let s = 0;
  for (let i = 0; i < 20_000; i++) s += r.beta(2, 6);
  assert.ok(Math.abs(s / 20_000 - 0.25) < 0.01);
});

test("sample: k distinct indices, every index equally likely", () => {
  const r = new Rng(9);
  const hits = new Array<number>(12).fill(0);
  for (let i = 0; i < 12_000; i++) {
    const s = r.sample(12, 3);
    assert.is(new Set(s).size, 3);
    for (const j of s) {
      assert.ok(Number.isInteger(j) && j >= 0 && j < 12);
      hits[j]!++;
    }
  }
  // Each index is drawn in a quarter of the samples: 3000 of 12 000, give or take sampling noise.
  for (const h of hits) assert.ok(Math.abs(h - 3000) < 200, String(h));
  assert.equal(r.sample(3, 5).sort(), [0, 1, 2]);
  assert.equal(r.sample(4, 0), []);
});

test.run();
