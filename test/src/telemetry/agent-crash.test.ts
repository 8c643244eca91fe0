// Fault test: an agent killed with SIGKILL while it is spooling (and sending) loses nothing it had
// acknowledged to its caller, restarts cleanly on the same spool (same epoch, seq continues, no
// record reused or skipped) and drains it. Real processes: the collector binary and a load agent
// (the agent's spool and transport, fixtures/load-agent.ts), killed and restarted three times.
//   SHADOWVM_TEST_AGENT_KILLS   3     kills while appending
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Spool } from "@shadowvm/agent/spool/spool";
import { openReadOnly } from "@shadowvm/collector/store/ingest-store";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createTestPki } from "./fixtures/pki.js";
import { CollectorProcess, killAll, LoadAgent, type LoadAgentArgs, TS_BASE } from "./fixtures/processes.js";

const KILLS = Number(process.env["SHADOWVM_TEST_AGENT_KILLS"] ?? 3);
const ID_STRIDE = 1_000_000;
const dir = mkdtempSync(join(tmpdir(), "shadowvm-agent-crash-"));

test.after(async () => {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
});

test(`an agent SIGKILLed ${KILLS} times while spooling loses nothing it acknowledged`, async () => {
  const t0 = Date.now();
  const pki = createTestPki(dir);
  const collector = await CollectorProcess.create({ name: "agent-crash-collector", dir, pki });
  await collector.start();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, collector.createToken(), { mode: 0o600 });
  const base: Omit<LoadAgentArgs, "records" | "firstRecord"> = {
    agentId: "crash-me",
    dataDir: join(dir, "agent"),
    url: collector.url,
    caFile: pki.caFile,
    tokenFile,
    samplesPerRecord: 3,
    burst: 100,
    burstIntervalMs: 10,
  };

  const acknowledged = new Set<number>();
  for (let k = 0; k < KILLS; k++) {
    // Each incarnation appends its own id range, fast, and is killed in the middle of it.
    const agent = new LoadAgent({ ...base, records: 50_000, firstRecord: k * ID_STRIDE }, `agent-crash-${k}`);
    const target = 2000 + Math.floor(Math.random() * 3000);
    await waitFor(
      () => agent.acked.size >= target || (agent.exited && Promise.reject(new Error("load agent exited"))),
      {
        timeoutMs: 60_000,
        what: `${target} acknowledged appends`,
        intervalMs: 10,
      },
    );
    await agent.kill();
    assert.is(agent.appended, -1, "killed while still appending");
    for (const id of agent.acked) acknowledged.add(id);
  }

  // Restart without producing: the spool must open cleanly and drain.
  const last = new LoadAgent({ ...base, records: 0, exitWhenDrained: true }, "agent-crash-drain");
  await waitFor(() => last.exited, { timeoutMs: 60_000, what: "the restarted agent to drain and exit" });
  assert.is(last.child.exitCode, 0, "drained and exited cleanly");
  await collector.kill("SIGTERM");

  const spool = await Spool.open({
    dir: join(base.dataDir, "spool"),
    agentId: base.agentId,
    maxBytes: 1 << 30,
  });
  const stats = spool.stats();
  await spool.close();
  assert.is(stats.pendingFrames, 0, "nothing left in the spool");
  assert.is(stats.deadLetters, 0, "no corrupt or refused records");

  const db = await openReadOnly(join(collector.dataDir, "shadowvm.duckdb"));
  try {
    const streams = await db.query(
      "SELECT epoch, committed_seq FROM ingest_streams WHERE agent_id = 'crash-me'",
    );
    assert.is(streams.length, 1, "one epoch: the spool was reopened, not recreated");
    const [f] = await db.query(
      "SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM ingest_frames WHERE agent_id = 'crash-me'",
    );
    const n = Number(f?.["n"]);
    assert.equal(
      [Number(f?.["d"]), Number(f?.["lo"]), Number(f?.["hi"])],
      [n, 1, n],
      "seqs 1..n, none twice, no gap",
    );
    assert.is(n, stats.nextSeq - 1, "every seq the spool handed out reached the store");
    const rows = await db.query(
      `SELECT DISTINCT ts_ms - ${TS_BASE} AS id FROM samples WHERE agent_id = 'crash-me' ORDER BY 1`,
    );
    const stored = new Set(rows.map((r) => Number(r["id"])));
    const lost = [...acknowledged].filter((id) => !stored.has(id));
    assert.equal(lost.slice(0, 10), [], `${lost.length} acknowledged records missing from the store`);
    const [dup] = await db.query(
      "SELECT count(*) AS n, count(DISTINCT (vm_uuid, ts_ms)) AS d FROM samples WHERE agent_id = 'crash-me'",
    );
    assert.is(Number(dup?.["n"]), Number(dup?.["d"]), "no sample stored twice");
    assert.is(Number(dup?.["n"]), n * 3, "3 samples per record");
    console.log(
      `agent-crash: ${acknowledged.size} acknowledged appends over ${KILLS} kills, ${n} records stored ` +
        `(${n - acknowledged.size} were durable but not yet reported when killed), ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  } finally {
    db.close();
  }
});

test.run();
