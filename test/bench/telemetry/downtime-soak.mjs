#!/usr/bin/env node
// Soak: the collector down for 5 minutes while real agents (`shadowvm-agent serve`) keep sampling;
// then they drain their spools to zero and the store holds every frame once. This is the
// collector-downtime fault test (test/src/telemetry/collector-downtime.test.ts) with the issue's
// full downtime, which is too long for the regular test run.
//
// Usage (after `npx tsc -b shared agent collector test`):
//   node test/bench/telemetry/downtime-soak.mjs [--downtime 300] [--agents 5] [--interval 0.1]
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const testFile = fileURLToPath(new URL("../../dist/telemetry/collector-downtime.test.js", import.meta.url));
const started = Date.now();
const r = spawnSync(process.execPath, ["--enable-source-maps", testFile], {
  stdio: "inherit",
  env: {
    ...process.env,
    SHADOWVM_TEST_DOWNTIME_S: opt("downtime", "300"),
    SHADOWVM_TEST_DOWNTIME_AGENTS: opt("agents", "5"),
    SHADOWVM_TEST_DOWNTIME_INTERVAL: opt("interval", "0.1"),
  },
});
console.log(`downtime soak: exit ${r.status}, ${((Date.now() - started) / 1000).toFixed(0)} s`);
process.exit(r.status ?? 1);
