import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { explore } from "./explore.js";
import { OracleError, OracleProcessRunner, parseOutcome } from "./runner.js";

const dir = mkdtempSync(join(tmpdir(), "explorer-oracle-"));

/** Writes an oracle program: `answer(profile, n)` returns the line to print (or null for none). */
function oracle(name: string, body: string): string {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(
    file,
    `import { createInterface } from "node:readline";
let n = 0;
const answer = ${body};
for await (const line of createInterface({ input: process.stdin })) {
  n++;
  const out = answer(JSON.parse(line), n);
  if (out === "EXIT") process.exit(3);
  if (out !== null) process.stdout.write(out + "\\n");
}`,
  );
  return `${JSON.stringify(process.execPath)} ${JSON.stringify(file)}`;
}

const good = oracle(
  "good",
  `(p) => JSON.stringify({ failed: p.cpu_load > 1, signatures: p.cpu_load > 1 ? ["cpu-hog"] : [] })`,
);

async function runBroken(cmd: string, timeoutMs = 5000) {
  // Two batches of 4: the oracle breaks on the 6th profile.
  return explore({
    runner: new OracleProcessRunner(cmd, { timeoutMs }),
    budget: 8,
    batchSize: 4,
    strategy: "random",
    seed: 1,
    boundaryBootstrap: 0,
  });
}

test("speaks the line protocol: profiles in, outcomes out, process started once", async () => {
  const counter = oracle("counter", `(p, n) => JSON.stringify({ failed: false, signatures: ["n" + n] })`);
  const runner = new OracleProcessRunner(counter);
  const a = await runner.run([profile(0.5), profile(1.5)]);
  const b = await runner.run([profile(0.5)]);
  await runner.close();
  // One process for both batches: its line counter kept going.
  assert.equal(
    a.map((o) => o.signatures[0]),
    ["n1", "n2"],
  );
  assert.equal(b[0]!.signatures, ["n3"]);

  const goodRunner = new OracleProcessRunner(good);
  const res = await explore({ runner: goodRunner, budget: 12, strategy: "random", seed: 3 });
  await goodRunner.close();
  assert.is(res.trials.length, 12);
  assert.is(res.error, undefined);
  for (const t of res.trials) assert.is(t.outcome.failed, t.profile.cpu_load > 1);
});

test("not JSON: clear error with the line, earlier trials kept", async () => {
  const res = await runBroken(
    oracle("garbage", `(p, n) => n === 6 ? "Traceback: boom" : '{"failed":false,"signatures":[]}'`),
  );
  assert.ok(res.error);
  assert.match(res.error!.message, /answer 6 is not JSON/);
  assert.match(res.error!.message, /Traceback: boom/);
  assert.is(res.error!.line, "Traceback: boom");
  assert.is(res.trials.length, 5, "4 of the first batch + 1 of the second");
});

test("missing or ill-typed field: names the field and the line", async () => {
  const res = await runBroken(
    oracle("nofield", `(p, n) => n === 6 ? '{"signatures":[]}' : '{"failed":false,"signatures":[]}'`),
  );
  assert.match(res.error!.message, /answer 6 is invalid: field "failed" is missing; line: .*signatures/);
  assert.is(res.trials.length, 5);

  const res2 = await runBroken(
    oracle(
      "badtype",
      `(p, n) => n === 2 ? '{"failed":"yes","signatures":[]}' : '{"failed":false,"signatures":[]}'`,
    ),
  );
  assert.match(res2.error!.message, /field "failed" must be a boolean, got "yes"/);
  assert.is(res2.trials.length, 1);

  assert.match(String(parseOutcome({ failed: true, signatures: ["a", 3] })), /strings only, got 3/);
  assert.match(String(parseOutcome([1])), /not a JSON object/);
});

test("process dies: exit code and stderr in the error, earlier trials kept", async () => {
  const dies = oracle(
    "dies",
    `(p, n) => { if (n === 7) { console.error("out of memory"); return "EXIT"; } return '{"failed":true,"signatures":["x"]}'; }`,
  );
  const res = await runBroken(dies);
  assert.match(res.error!.message, /exited with code 3/);
  assert.match(res.error!.message, /out of memory/);
  assert.match(res.error!.message, /after 2 of 4 answers/);
  assert.is(res.trials.length, 6);
  assert.equal(res.signatures_found, ["x"]);
});

test("oracle that exits at once, or cannot be started", async () => {
  const res = await runBroken("exit 0");
  assert.match(res.error!.message, /exited with code 0/);
  assert.is(res.trials.length, 0);
  const res2 = await runBroken("/nonexistent/oracle-binary");
  assert.match(res2.error!.message, /exited with code 127/);
});

test("timeout: names the profile that got no answer", async () => {
  const silent = oracle("silent", `(p, n) => n >= 3 ? null : '{"failed":false,"signatures":[]}'`);
  const started = Date.now();
  const res = await runBroken(silent, 300);
  assert.match(res.error!.message, /no answer for profile 3 within 300 ms/);
  assert.is(res.trials.length, 2);
  assert.ok(Date.now() - started < 5000);
});

test("a broken runner refuses further batches; the error carries completed outcomes", async () => {
  const runner = new OracleProcessRunner(
    oracle("once", `(p, n) => n === 1 ? '{"failed":false,"signatures":[]}' : "nope"`),
  );
  const err = await runner.run([profile(1), profile(1)]).catch((e) => e);
  assert.instance(err, OracleError);
  assert.is((err as OracleError).completed.length, 1);
  const again = await runner.run([profile(1)]).catch((e) => e);
  assert.match((again as Error).message, /unusable after an earlier error/);
});

function profile(cpu: number) {
  return {
    cpu_load: cpu,
    memory_load: 0.5,
    io_load: 1,
    net_latency_ms: 0,
    net_loss_pct: 0,
    faults: [],
    duration_s: 60,
  };
}

test.run();
