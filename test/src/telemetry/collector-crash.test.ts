// Fault test: many agents stream while the collector is killed with SIGKILL again and again.
// Every record must end up in the store exactly once: no loss (spool + resend), no duplicate
// (deduplication on (agent_id, epoch, seq), acknowledgement only after the commit).
//
// Real processes: the collector binary (`shadowvm-collector serve`, wss:// with a test CA) and load
// agents (the agent's spool and transport in their own processes, fixtures/load-agent.ts).
// Sizes (defaults = the issue's numbers):
//   SHADOWVM_TEST_TELEMETRY_AGENTS    20      agent processes
//   SHADOWVM_TEST_TELEMETRY_RECORDS   200000  spool records (frames) over all agents
//   SHADOWVM_TEST_TELEMETRY_SAMPLES   5       samples per record
//   SHADOWVM_TEST_TELEMETRY_KILLS     10      SIGKILLs of the collector while they stream
//   SHADOWVM_TEST_TELEMETRY_STREAM_S  40      how long the agents take to append their records
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openReadOnly } from "@shadowvm/collector/store/ingest-store";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createTestPki } from "./fixtures/pki.js";
import { CollectorProcess, killAll, LoadAgent, metricValue, TS_BASE } from "./fixtures/processes.js";

const env = (name: string, dflt: number) => Number(process.env[`SHADOWVM_TEST_TELEMETRY_${name}`] ?? dflt);
const AGENTS = env("AGENTS", 20);
const RECORDS = env("RECORDS", 200_000);
const SAMPLES = env("SAMPLES", 5);
const KILLS = env("KILLS", 10);
const STREAM_S = env("STREAM_S", 40);
const PER_AGENT = Math.ceil(RECORDS / AGENTS);
const BURST_MS = 100;
const BURST = Math.max(1, Math.ceil(PER_AGENT / ((STREAM_S * 1000) / BURST_MS)));

const dir = mkdtempSync(join(tmpdir(), "shadowvm-crash-"));

test.after(async () => {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
});

test(`${AGENTS} agents stream ${PER_AGENT * AGENTS} records while the collector is SIGKILLed ${KILLS} times`, async () => {
  const t0 = Date.now();
  const pki = createTestPki(dir);
  const collector = await CollectorProcess.create({ name: "crash-collector", dir, pki });
  await collector.start();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, collector.createToken(), { mode: 0o600 });

  const agents = Array.from(
    { length: AGENTS },
    (_, i) =>
      new LoadAgent(
        {
          agentId: `crash-agent-${String(i).padStart(2, "0")}`,
          dataDir: join(dir, `agent-${i}`),
          url: collector.url,
          caFile: pki.caFile,
          tokenFile,
          records: PER_AGENT,
          samplesPerRecord: SAMPLES,
          burst: BURST,
          burstIntervalMs: BURST_MS,
          exitWhenDrained: true,
        },
        `crash-agent-${i}`,
      ),
  );

  // Kill the collector only after it has been up a moment and committed something, so each kill
  // lands in the middle of real traffic; restart it at once.
  const kills: { upMs: number; committed: number; pending: number }[] = [];
  for (let k = 0; k < KILLS; k++) {
    const upSince = Date.now();
    const upFor = 1200 + Math.random() * 1500;
    const committed = await waitFor(
      async () => {
        if (Date.now() - upSince < upFor) return false;
        // At least a few hundred frames through this run: the kill lands in real traffic.
        const n = metricValue(await collector.metrics(), "shadowvm_collector_frames_committed_total");
        return n >= 200 ? n : false;
      },
      { timeoutMs: 60_000, what: `collector (run ${k + 1}) to commit frames`, intervalMs: 100 },
    );
    const pending = metricValue(await collector.metrics(), "shadowvm_collector_pending_frames");
    await collector.kill("SIGKILL");
    kills.push({ upMs: Date.now() - upSince, committed, pending });
    await collector.start();
  }
  const appendedWhileKilling = agents.filter((a) => a.appended >= 0).length;
  console.log(
    `kills: ${kills.map((k) => `${(k.upMs / 1000).toFixed(1)}s/${k.committed} committed`).join(", ")}; ` +
      `${appendedWhileKilling}/${AGENTS} agents had finished appending at the last kill`,
  );
  assert.ok(appendedWhileKilling < AGENTS, "the kills happened while agents were still producing");

  await waitFor(
    () =>
      agents.every((a) => a.drained) ||
      (agents.find((a) => a.exited && !a.drained) &&
        Promise.reject(new Error("a load agent exited before draining"))),
    {
      timeoutMs: 180_000,
      what: "every agent to drain its spool",
      intervalMs: 200,
    },
  );
  await waitFor(() => agents.every((a) => a.exited), { timeoutMs: 30_000, what: "load agents to exit" });
  for (const a of agents) assert.is(a.child.exitCode, 0, `${a.args.agentId} exit code`);
  await collector.kill("SIGTERM");

  const db = await openReadOnly(join(collector.dataDir, "shadowvm.duckdb"));
  try {
    const frames = await db.query(
      "SELECT agent_id, count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM ingest_frames GROUP BY agent_id ORDER BY agent_id",
    );
    assert.is(frames.length, AGENTS, "every agent has frames");
    for (const f of frames) {
      assert.equal(
        [Number(f["n"]), Number(f["d"]), Number(f["lo"]), Number(f["hi"])],
        [PER_AGENT, PER_AGENT, 1, PER_AGENT],
        `frames of ${f["agent_id"]}: each seq 1..${PER_AGENT} exactly once`,
      );
    }
    const [s] = await db.query(
      "SELECT count(*) AS n, count(DISTINCT (agent_id, vm_uuid, ts_ms)) AS d, count(DISTINCT (agent_id, ts_ms)) AS r FROM samples",
    );
    assert.is(Number(s?.["n"]), PER_AGENT * AGENTS * SAMPLES, "every sample stored");
    assert.is(Number(s?.["d"]), PER_AGENT * AGENTS * SAMPLES, "no sample stored twice");
    assert.is(Number(s?.["r"]), PER_AGENT * AGENTS, "every record stored");
    for (const a of agents) {
      assert.is(a.acked.size, PER_AGENT, `${a.args.agentId} acknowledged every append`);
    }
    const [range] = await db.query(
      `SELECT min(ts_ms) - ${TS_BASE} AS lo, max(ts_ms) - ${TS_BASE} AS hi FROM samples`,
    );
    assert.equal([Number(range?.["lo"]), Number(range?.["hi"])], [0, PER_AGENT - 1]);
  } finally {
    db.close();
  }
  console.log(`collector-crash: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

test.run();
