#!/usr/bin/env node
// How often the boundary interval (`min_stress_interval`) holds the true least stress, and how wide
// it is: the check that an interval reported to operators means what it says. For every family and
// seed it runs a campaign through explore() with the default bootstrap and scores each found
// signature's interval against the evaluator's noise-free truth (trueLeastStress).
//
// Usage (after `npx tsc -b shared agent`):
//   node test/bench/explorer/intervals.mjs [--seeds 10] [--first-seed 1] [--budgets 12,20,50]
//        [--strategy adaptive] [--families a,b]
import { explore } from "../../../agent/dist/explorer/explore.js";
import { Rng } from "../../../agent/dist/explorer/rng.js";
import { FunctionRunner } from "../../../agent/dist/explorer/runner.js";
import { FAMILIES, makeEvaluator, trueLeastStress } from "./evaluators.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const seeds = Number(opt("seeds", "10"));
const firstSeed = Number(opt("first-seed", "1"));
const budgets = opt("budgets", "12,20,50").split(",").map(Number);
const strategy = opt("strategy", "adaptive");
const families = opt("families", FAMILIES.join(",")).split(",");

const started = Date.now();
console.log(
  `| budget | estimates | interval holds the truth | truth below | truth above | mean width | estimate outside its interval |`,
);
console.log(`|---|---|---|---|---|---|---|`);
for (const budget of budgets) {
  let n = 0;
  let holds = 0;
  let below = 0;
  let above = 0;
  let width = 0;
  let outside = 0;
  for (const family of families) {
    for (let s = firstSeed; s < firstSeed + seeds; s++) {
      const ev = makeEvaluator(family, s);
      const truth = trueLeastStress(ev);
      const noise = new Rng(`noise:${s}`);
      const res = await explore({
        runner: new FunctionRunner((p) => ev.outcome(p, noise)),
        budget,
        strategy,
        seed: s,
      });
      if (res.error) throw new Error(`${family}/${s}: ${res.error.message}`);
      for (const [sig, b] of Object.entries(res.boundary)) {
        const t = truth[sig];
        // The flake signature fires anywhere and has no boundary; unknown names are not the evaluator's.
        if (t === null || t === undefined || sig === "infra-flake" || !b.min_stress_interval) continue;
        const [lo, hi] = b.min_stress_interval;
        n++;
        width += hi - lo;
        if (t < lo) below++;
        else if (t > hi) above++;
        else holds++;
        if (b.min_stress < lo || b.min_stress > hi) outside++;
      }
    }
  }
  const pct = (k) => `${((100 * k) / Math.max(1, n)).toFixed(1)}%`;
  console.log(
    `| ${budget} | ${n} | ${pct(holds)} | ${pct(below)} | ${pct(above)} | ${(width / Math.max(1, n)).toFixed(3)} | ${pct(outside)} |`,
  );
}
console.log(
  `\n${strategy}, ${families.length} families x ${seeds} seeds from ${firstSeed}; ${((Date.now() - started) / 1000).toFixed(0)} s`,
);
