#!/usr/bin/env node
// A benchmark evaluator as an oracle program speaking the explorer's line protocol: one JSON
// StressProfile per stdin line in, one {"failed": bool, "signatures": [...]} per stdout line out.
// Usage: node test/bench/explorer/oracle.mjs --family small-islands --instance 3 [--noise-seed 7]
import { createInterface } from "node:readline";
import { Rng } from "../../../agent/dist/explorer/rng.js";
import { FAMILIES, makeEvaluator } from "./evaluators.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const family = opt("family", FAMILIES[0]);
const instance = opt("instance", "1");
const evaluator = makeEvaluator(family, instance);
const noise = new Rng(`noise:${opt("noise-seed", instance)}`);

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (line.trim() === "") continue;
  const profile = JSON.parse(line);
  process.stdout.write(`${JSON.stringify(evaluator.outcome(profile, noise))}\n`);
}
