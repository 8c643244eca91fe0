#!/usr/bin/env node
// The README's test command. Runs, in order: the linter/formatter check, the TypeScript build
// (test files are type-checked with the code), then every compiled uvu test file in its own
// process, and ends with the line `N passed, N failed` that CI reads.
//
// Usage: node scripts/run-tests.mjs [substring...]   only test files whose path contains one of them
// Env:   SHADOWVM_TEST_TIMEOUT_S  per-file deadline (default 1200 s; QEMU under TCG is slow)
//        SHADOWVM_TEST_JOBS       unit test files run in parallel (default 2); files under test/
//                                 (end-to-end, real QEMU) always run one at a time.
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { stripVTControlCharacters } from "node:util";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const filters = process.argv.slice(2);
const timeoutMs = Number(process.env.SHADOWVM_TEST_TIMEOUT_S ?? 1200) * 1000;
const jobs = Math.max(1, Number(process.env.SHADOWVM_TEST_JOBS ?? 2));
const logDir = join(root, "test-artifacts", "logs");
mkdirSync(logDir, { recursive: true });

let passed = 0;
let failed = 0;
const failures = [];

let runs = 0;
/** What runs now (test files, the lint and build steps): each one's function to stop it in order. */
const running = new Set();
/** Set by SIGINT/SIGTERM: no further file starts. */
let interrupted;

function run(cmd, args, opts = {}) {
  const startedAt = Date.now();
  // Inherited by everything the test starts; finds what it left running (reapLeftovers).
  const runId = `${process.pid}.${++runs}`;
  // A temporary directory of its own (TMPDIR), removed when it ends: what a test that crashed
  // before its cleanup left there goes too. 0755: QEMU under libvirt runs as another user.
  const scratch = join(tmpdir(), `svm-test-${runId}`);
  mkdirSync(scratch, { recursive: true });
  chmodSync(scratch, 0o755);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? root,
      env: {
        ...process.env,
        FORCE_COLOR: "0",
        NO_COLOR: "1",
        ...opts.env,
        SHADOWVM_TEST_RUN: runId,
        TMPDIR: scratch,
      },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
    });
    child.stderr.on("data", (d) => {
      output += d;
    });
    let killTimer;
    // SIGTERM first: what a test started in its own process group (the main job stops its
    // agent, collector, Alertmanager and VMs on SIGTERM) gets to clean up; SIGKILL after 60 s.
    const stop = (why) => {
      if (killTimer) return;
      output += `\n[run-tests] ${why}; stopping the test process group\n`;
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
      killTimer = setTimeout(() => {
        output += "\n[run-tests] still running 60 s after SIGTERM; killing the test process group\n";
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
      }, 60_000);
    };
    running.add(stop);
    const deadlineMs = opts.timeoutMs ?? timeoutMs;
    const timer = setTimeout(() => stop(`deadline of ${deadlineMs / 1000}s passed`), deadlineMs);
    // Reaped when the test's own process exits: a leftover that holds its output pipe open would
    // otherwise keep "close" from ever firing.
    let leftovers = Promise.resolve([]);
    child.on("exit", () => {
      leftovers = reapLeftovers(`SHADOWVM_TEST_RUN=${runId}`);
    });
    child.on("close", async (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      const left = await leftovers;
      try {
        rmSync(scratch, { recursive: true, force: true });
      } catch (err) {
        output += `\n[run-tests] could not remove the test's TMPDIR ${scratch}: ${err.message}\n`;
      }
      running.delete(stop);
      resolve({ code, signal, output, leftovers: left, seconds: (Date.now() - startedAt) / 1000 });
    });
  });
}

/**
 * What a test left running after its process ended (a VM, a daemon, in any process group or
 * session): every test must clean up what it starts, and one that died before its cleanup (a crash,
 * the deadline) must not leave QEMUs behind for the next file. Found by the marker in the
 * environment every process the test started inherits. A process still on its way out gets a few
 * seconds; what is left then is killed and returned for the report.
 */
async function reapLeftovers(marker, graceMs = 5000) {
  const deadline = Date.now() + graceMs;
  let left = markedProcesses(marker);
  while (left.size > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    left = markedProcesses(marker);
  }
  for (const pid of left.keys()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  return [...left].map(([pid, cmdline]) => `${pid} ${cmdline}`);
}

/** Live processes whose environment holds `marker`, with their command lines. */
function markedProcesses(marker) {
  const found = new Map();
  let pids;
  try {
    pids = readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch {
    return found; // no /proc: nothing to check with
  }
  for (const pid of pids) {
    try {
      // A zombie's environment reads empty: it has ended already.
      if (!readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(marker)) continue;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
      found.set(Number(pid), cmdline.slice(0, 160));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** Per file or step: its counts and how long it took (the suite must stay under 30 minutes in CI). */
function record(name, ok, count, output, seconds) {
  const logFile = join(logDir, `${name.replace(/[^\w.-]+/g, "_")}.log`);
  writeFileSync(logFile, output);
  // A file that failed without a failing test (a crash, a leftover process) counts as one failure.
  const fileFailed = ok ? count.failed : Math.max(1, count.failed);
  passed += count.passed;
  failed += fileFailed;
  const status = fileFailed === 0 ? "ok  " : "FAIL";
  console.log(`${status} ${name}  (${count.passed} passed, ${fileFailed} failed)  ${seconds.toFixed(0)} s`);
  if (status === "FAIL") {
    failures.push(name);
    const tail = output.split("\n").slice(-60).join("\n");
    console.log(tail.replace(/^/gm, "     | "));
    console.log(`     full log: ${relative(root, logFile)}`);
  }
}

/** uvu prints "Total: N / Passed: N / Skipped: N" at the end of a file's run. */
function uvuCounts(output) {
  const clean = stripVTControlCharacters(output);
  const totals = [...clean.matchAll(/Total:\s+(\d+)/g)].map((m) => Number(m[1]));
  const passes = [...clean.matchAll(/Passed:\s+(\d+)/g)].map((m) => Number(m[1]));
  const skips = [...clean.matchAll(/Skipped:\s+(\d+)/g)].map((m) => Number(m[1]));
  if (totals.length === 0) return null;
  const total = totals.at(-1);
  const pass = passes.at(-1) ?? 0;
  const skip = skips.at(-1) ?? 0;
  return { passed: pass, failed: total - pass - skip };
}

function findTests(dir, out = []) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (entry === "node_modules") continue;
    const full = join(dir, entry);
    if (statSync(full).isDirectory()) findTests(full, out);
    else if (entry.endsWith(".test.js")) out.push(full);
  }
  return out;
}

async function step(name, cmd, args) {
  const res = await run(cmd, args, { timeoutMs: 600_000 });
  record(
    name,
    res.code === 0,
    { passed: res.code === 0 ? 1 : 0, failed: res.code === 0 ? 0 : 1 },
    res.output,
    res.seconds,
  );
  return res.code === 0;
}

async function runFile(file) {
  const name = relative(root, file);
  const res = await run(process.execPath, ["--enable-source-maps", file]);
  const counts = uvuCounts(res.output);
  const problems = [];
  if (!counts) problems.push(`no uvu summary (exit ${res.code ?? res.signal})`);
  if (res.leftovers.length > 0)
    problems.push(
      `the test left ${res.leftovers.length} process(es) running (killed now):${res.leftovers.map((l) => `\n  ${l}`).join("")}`,
    );
  const output = [res.output, ...problems.map((p) => `[run-tests] ${p}`)].join("\n");
  record(
    name,
    res.code === 0 && problems.length === 0,
    counts ?? { passed: 0, failed: 1 },
    output,
    res.seconds,
  );
}

// Interrupted (Ctrl-C, or a CI job being stopped): the test files run in process groups of their
// own and would not get the signal, and would go on running, VMs and all. Stop them the way the
// deadline does; the files end, are cleaned up after, reported, and no further file starts.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = sig;
    console.log(`\n[run-tests] ${sig}: stopping ${running.size} running test file(s), starting no more`);
    for (const stop of running) stop(`the test run got ${sig}`);
  });
}

const started = Date.now();
await step("lint (biome check)", join(root, "node_modules/.bin/biome"), ["check", "."]);
const built = await step("build + typecheck (tsc -b)", join(root, "node_modules/.bin/tsc"), [
  "-b",
  "shared",
  "agent",
  "collector",
  "test",
]);

if (built) {
  const matches = (f) => filters.length === 0 || filters.some((s) => f.includes(s));
  const unit = ["shared", "agent", "collector"]
    .flatMap((p) => findTests(join(root, p, "dist")))
    .filter(matches)
    .sort();
  const e2e = findTests(join(root, "test", "dist"))
    .filter(matches)
    .sort();
  const queue = [...unit];
  await Promise.all(
    Array.from({ length: jobs }, async () => {
      for (let f = queue.shift(); f && !interrupted; f = queue.shift()) await runFile(f);
    }),
  );
  for (const f of e2e) if (!interrupted) await runFile(f);
}

const secs = ((Date.now() - started) / 1000).toFixed(0);
if (interrupted) {
  console.log(
    `\n[run-tests] interrupted by ${interrupted}: the files after the last one reported did not run`,
  );
  failed = Math.max(1, failed);
}
if (failures.length) console.log(`\nfailed: ${failures.join(", ")}`);
console.log(`\nduration: ${secs}s`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
