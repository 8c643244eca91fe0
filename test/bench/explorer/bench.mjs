#!/usr/bin/env node
// Explorer benchmark: baseline vs random vs adaptive on the synthetic evaluators.
// For every family, seed and budget it runs a campaign through explore() and records the distinct
// signatures found and the boundary error (|estimated - true least stress| per found signature).
//
// Usage (after `npx tsc -b shared agent test`):
//   node test/bench/explorer/bench.mjs [--seeds 20] [--first-seed 1] [--budgets 20,50] [--families a,b]
//        [--strategies baseline,random,adaptive] [--batch 4] [--json out.json] [--oracle]
// --oracle runs the campaigns through OracleProcessRunner and oracle.mjs (the line protocol).
// After the main table it prints adaptive against every other strategy but the baseline: ratios,
// share of all signatures, and paired per-seed differences (mean ± standard error); then the ratio
// summed up over the families, pooled and as the geometric mean of the family ratios, with 95%
// bootstrap intervals.
// Strategy `uniform-all-faults` (bench only, not in the default list) is a second uniform sampler,
// literal to "uniform over the bounds": every fault kind injected at a uniform rate in [0, 1],
// where `random` leaves each kind out half the time (docs/explorer.md, search space). It checks
// that the comparison does not hinge on which of the two counts as "random".
// --first-seed picks other evaluator instances: the explorer's constants were chosen on seeds 1-20,
// so `--first-seed 21 --seeds 40` is a held-out check of them (docs/explorer.md).
import { writeFileSync } from "node:fs";
import { DEFAULT_PROFILE_BOUNDS, FAULT_KINDS } from "@shadowvm/shared";
import { Explorer } from "../../../agent/dist/explorer/adaptive-explorer.js";
import { explore } from "../../../agent/dist/explorer/explore.js";
import { Rng } from "../../../agent/dist/explorer/rng.js";
import { FunctionRunner, OracleProcessRunner } from "../../../agent/dist/explorer/runner.js";
import { ProfileSpace } from "../../../agent/dist/explorer/space.js";
import { FAMILIES, makeEvaluator, trueLeastStress } from "./evaluators.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const seeds = Number(opt("seeds", "20"));
const firstSeed = Number(opt("first-seed", "1"));
const budgets = opt("budgets", "20,50").split(",").map(Number);
const families = opt("families", FAMILIES.join(",")).split(",");
const strategies = opt("strategies", "baseline,random,adaptive").split(",");
const batchSize = Number(opt("batch", "4"));
const useOracle = args.includes("--oracle");
const jsonOut = opt("json", "");

const space = new ProfileSpace({ bounds: DEFAULT_PROFILE_BOUNDS, faultKinds: FAULT_KINDS, durationS: 120 });

/** Campaign of `uniform-all-faults`: uniform knobs, every fault kind at a uniform rate. */
async function uniformAllFaults(runner, budget, seed) {
  const rng = new Rng(`uniform-all-faults:${seed}`);
  // Fault coordinates in [0.5, 1] map to "injected, rate uniform over the bounds" (space.ts).
  const profiles = Array.from({ length: budget }, () =>
    space.fromUnit(space.dims.map((d) => (d.kind === "fault" ? 0.5 + rng.random() / 2 : rng.random()))),
  );
  const outcomes = [];
  for (let i = 0; i < budget; i += batchSize)
    outcomes.push(...(await runner.run(profiles.slice(i, i + batchSize))));
  // The explorer only holds the trials, so the boundary is estimated exactly as for the others.
  const holder = new Explorer({ strategy: "random", seed });
  holder.observe(profiles.map((profile, i) => ({ profile, outcome: outcomes[i] })));
  return { signatures_found: holder.signaturesFound(), boundary: holder.boundary({ bootstrap: 0 }) };
}

const rows = [];
const started = Date.now();
for (const family of families) {
  for (let s = firstSeed; s < firstSeed + seeds; s++) {
    const ev = makeEvaluator(family, s);
    const truth = trueLeastStress(ev);
    for (const strategy of strategies) {
      for (const budget of budgets) {
        const noise = new Rng(`noise:${s}`);
        const runner = useOracle
          ? new OracleProcessRunner(
              `node ${new URL("./oracle.mjs", import.meta.url).pathname} --family ${family} --instance ${s} --noise-seed ${s}`,
            )
          : new FunctionRunner((p) => ev.outcome(p, noise));
        const t0 = Date.now();
        const res =
          strategy === "uniform-all-faults"
            ? await uniformAllFaults(runner, budget, s)
            : await explore({ runner, budget, strategy, seed: s, batchSize, boundaryBootstrap: 0 });
        await runner.close?.();
        if (res.error) throw new Error(`${family}/${s}/${strategy}: ${res.error.message}`);
        const real = res.signatures_found.filter((x) => ev.signatures.includes(x));
        const errors = {};
        // Signed errors (value - truth) of the estimate, the model's crossing and the least stress seen,
        // for diagnosing bias in the --json output.
        const signed = {};
        for (const sig of real) {
          const b = res.boundary[sig];
          const t = truth[sig];
          // The flake signature fires anywhere: it has no boundary.
          if (!b || t === null || t === undefined || sig === "infra-flake") continue;
          errors[sig] = Math.abs(b.min_stress - t);
          signed[sig] = {
            estimate: b.min_stress - t,
            model: b.model_min_stress === null ? null : b.model_min_stress - t,
            observed: b.observed_min_stress - t,
          };
        }
        rows.push({
          family,
          seed: s,
          strategy,
          budget,
          found: real.length,
          total: ev.signatures.length,
          errors,
          signed,
          ms: Date.now() - t0,
        });
      }
    }
  }
  process.stderr.write(`${family} done (${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
}

const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "-");
/**
 * Boundary error of a strategy: mean |estimated - true least stress| over the signatures that every
 * compared strategy found in the same campaign (paired, so finding harder signatures is not
 * penalized). Baseline finds too few to pair; its error is over its own finds.
 */
function boundaryErrors(sel, st) {
  const paired = strategies.filter((x) => x !== "baseline");
  const errs = [];
  for (const r of sel.filter((x) => x.strategy === st)) {
    const peers = sel.filter(
      (x) => x.family === r.family && x.seed === r.seed && paired.includes(x.strategy),
    );
    for (const [sig, e] of Object.entries(r.errors)) {
      if (st === "baseline" || peers.every((p) => sig in p.errors)) errs.push(e);
    }
  }
  return errs;
}
const lines = [];
lines.push(
  `| evaluator (signatures) | budget | ${strategies.map((s) => `${s} found`).join(" | ")} | ${strategies.map((s) => `${s} bnd err`).join(" | ")} |`,
);
lines.push(`|---|---|${strategies.map(() => "---").join("|")}|${strategies.map(() => "---").join("|")}|`);
const summary = {};
for (const family of [...families, "ALL"]) {
  for (const budget of budgets) {
    const sel = rows.filter((r) => (family === "ALL" || r.family === family) && r.budget === budget);
    const total = mean(sel.filter((r) => r.strategy === strategies[0]).map((r) => r.total));
    const found = strategies.map((st) => mean(sel.filter((r) => r.strategy === st).map((r) => r.found)));
    const berr = strategies.map((st) => mean(boundaryErrors(sel, st)));
    summary[`${family}@${budget}`] = {
      total,
      ...Object.fromEntries(strategies.map((st, i) => [st, { found: found[i], boundary_error: berr[i] }])),
    };
    lines.push(
      `| ${family} (${fmt(total, 1)}) | ${budget} | ${found.map((f) => fmt(f)).join(" | ")} | ${berr.map((e) => fmt(e, 3)).join(" | ")} |`,
    );
  }
}
console.log(lines.join("\n"));

/**
 * Adaptive against each other strategy, per family: the ratio of mean signatures found per budget,
 * adaptive's share of all signatures at the largest budget, and the paired per-seed difference
 * (adaptive - other on the same evaluator instance), mean ± standard error.
 */
function pairedTable(other) {
  const out = [];
  const big = Math.max(...budgets);
  out.push(
    `| family (adaptive vs ${other}) | ${budgets.map((b) => `ratio @${b}`).join(" | ")} | share @${big} | ${budgets.map((b) => `diff @${b}`).join(" | ")} |`,
  );
  out.push(`|---|${budgets.map(() => "---").join("|")}|---|${budgets.map(() => "---").join("|")}|`);
  for (const family of [...families, "ALL"]) {
    const pick = (st, b) =>
      rows.filter((r) => (family === "ALL" || r.family === family) && r.strategy === st && r.budget === b);
    const ratios = budgets.map((b) =>
      fmt(mean(pick("adaptive", b).map((r) => r.found)) / mean(pick(other, b).map((r) => r.found))),
    );
    const share = mean(pick("adaptive", big).map((r) => r.found / r.total));
    const diffs = budgets.map((b) => {
      const others = pick(other, b);
      const d = pick("adaptive", b).map(
        (r) => r.found - others.find((o) => o.family === r.family && o.seed === r.seed).found,
      );
      const m = mean(d);
      const se = Math.sqrt(d.reduce((acc, x) => acc + (x - m) ** 2, 0) / (d.length - 1) / d.length);
      return `${m >= 0 ? "+" : ""}${fmt(m)} ± ${fmt(se)}`;
    });
    out.push(`| ${family} | ${ratios.join(" | ")} | ${fmt(100 * share, 1)}% | ${diffs.join(" | ")} |`);
  }
  return out.join("\n");
}

/**
 * Adaptive's ratio to `other` summed up over the families two ways, with 95% bootstrap intervals
 * (2000 resamples of the seeds within each family, paired: a resampled seed brings both campaigns).
 * Pooled (the ALL row) weighs a family by its number of signatures; the geometric mean of the
 * per-family ratios, the usual summary of ratios over a benchmark suite, weighs every family alike.
 * Which one a target means is the reader's call, so both are printed.
 */
function summaryRatios(other) {
  const out = [`| adaptive vs ${other} | ${budgets.map((b) => `@${b}`).join(" | ")} |`];
  out.push(`|---|${budgets.map(() => "---").join("|")}|`);
  const cells = { pooled: [], geometric: [] };
  for (const b of budgets) {
    const found = (family, st) => {
      const bySeed = new Map();
      for (const r of rows)
        if (r.family === family && r.strategy === st && r.budget === b) bySeed.set(r.seed, r.found);
      return bySeed;
    };
    const perFamily = families.map((family) => ({ a: found(family, "adaptive"), o: found(family, other) }));
    const ratios = (pick) => {
      let logSum = 0;
      let a = 0;
      let o = 0;
      for (const f of perFamily) {
        const seedsUsed = pick([...f.a.keys()]);
        const fa = seedsUsed.reduce((acc, seed) => acc + f.a.get(seed), 0);
        const fo = seedsUsed.reduce((acc, seed) => acc + f.o.get(seed), 0);
        logSum += Math.log(fa / fo);
        a += fa;
        o += fo;
      }
      return { pooled: a / o, geometric: Math.exp(logSum / perFamily.length) };
    };
    const point = ratios((k) => k);
    const rng = new Rng(`bench-bootstrap:${b}`);
    const resamples = Array.from({ length: 2000 }, () => ratios((k) => k.map(() => k[rng.int(k.length)])));
    for (const kind of ["pooled", "geometric"]) {
      const sorted = resamples.map((r) => r[kind]).sort((x, y) => x - y);
      const q = (p) => sorted[Math.floor(p * (sorted.length - 1))];
      // A resample where `other` found nothing in some family has no finite ratio.
      const bound = (x) => (x === Number.POSITIVE_INFINITY ? "unbounded" : fmt(x));
      cells[kind].push(`${fmt(point[kind], 3)} (${bound(q(0.025))}-${bound(q(0.975))})`);
    }
  }
  out.push(`| signatures pooled over the families | ${cells.pooled.join(" | ")} |`);
  out.push(`| geometric mean of the family ratios | ${cells.geometric.join(" | ")} |`);
  return out.join("\n");
}
if (strategies.includes("adaptive"))
  for (const other of strategies.filter((s) => s !== "adaptive" && s !== "baseline"))
    console.log(`\n${pairedTable(other)}\n\n${summaryRatios(other)}`);
const ms = Object.fromEntries(
  strategies.map((st) => [st, mean(rows.filter((r) => r.strategy === st).map((r) => r.ms))]),
);
console.log(
  `\nmean ms per campaign: ${JSON.stringify(Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, Math.round(v)])))}`,
);
console.log(
  `total ${((Date.now() - started) / 1000).toFixed(0)} s, ${rows.length} campaigns${useOracle ? " via OracleProcessRunner" : ""}`,
);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ args, rows, summary }, null, 2));
