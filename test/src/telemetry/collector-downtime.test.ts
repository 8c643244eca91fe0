// Fault test: the collector is down for a while (killed with SIGKILL); real agents
// (`shadowvm-agent serve`) keep sampling into their spools, then drain them to zero once it is
// back, and the store ends up with every frame of every agent exactly once (seqs 1..n without
// gaps; what was not acknowledged yet when the agents stopped is still in their spools).
//   SHADOWVM_TEST_DOWNTIME_S        20   collector downtime (the 5-minute run is
//                                        test/bench/telemetry/downtime-soak.mjs)
//   SHADOWVM_TEST_DOWNTIME_AGENTS   5    agent processes
//   SHADOWVM_TEST_DOWNTIME_INTERVAL 0.1  telemetry interval of the agents, seconds
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Spool } from "@shadowvm/agent/spool/spool";
import { openReadOnly } from "@shadowvm/collector/store/ingest-store";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createTestPki } from "./fixtures/pki.js";
import { AgentServeProcess, CollectorProcess, killAll } from "./fixtures/processes.js";

const DOWNTIME_S = Number(process.env["SHADOWVM_TEST_DOWNTIME_S"] ?? 20);
const AGENTS = Number(process.env["SHADOWVM_TEST_DOWNTIME_AGENTS"] ?? 5);
const INTERVAL_S = Number(process.env["SHADOWVM_TEST_DOWNTIME_INTERVAL"] ?? 0.1);
const dir = mkdtempSync(join(tmpdir(), "shadowvm-downtime-"));

test.after(async () => {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
});

test(`collector down ${DOWNTIME_S} s: ${AGENTS} agents spool, then drain to zero`, async () => {
  const t0 = Date.now();
  const pki = createTestPki(dir);
  const collector = await CollectorProcess.create({ name: "downtime-collector", dir, pki });
  await collector.start();
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, collector.createToken(), { mode: 0o600 });
  const agents = await Promise.all(
    Array.from({ length: AGENTS }, (_, i) =>
      AgentServeProcess.create({
        name: `downtime-agent-${i}`,
        dir,
        agentId: `downtime-${i}`,
        collectorUrl: collector.url,
        caFile: pki.caFile,
        tokenFile,
        intervalS: INTERVAL_S,
      }),
    ),
  );
  await Promise.all(agents.map((a) => a.start()));
  await waitFor(
    async () =>
      (await Promise.all(agents.map((a) => a.metric("shadowvm_agent_frames_acked_total")))).every(
        (n) => n > 0,
      ),
    { timeoutMs: 30_000, what: "every agent to enroll and get frames acknowledged", intervalMs: 100 },
  );

  await collector.kill("SIGKILL");
  const downAt = Date.now();
  // While it is down: nothing is acknowledged, the spools grow.
  const pendingAtStart = await Promise.all(
    agents.map((a) => a.metric("shadowvm_agent_spool_pending_frames")),
  );
  await waitFor(() => Date.now() - downAt >= DOWNTIME_S * 1000, {
    timeoutMs: DOWNTIME_S * 1000 + 5000,
    what: "the downtime to pass",
    intervalMs: 200,
  });
  const pendingAtEnd = await Promise.all(agents.map((a) => a.metric("shadowvm_agent_spool_pending_frames")));
  const expected = (DOWNTIME_S / INTERVAL_S) * 0.5;
  pendingAtEnd.forEach((p, i) => {
    assert.ok(
      p >= expected,
      `agent ${i} spooled while the collector was down: ${p} pending (expected >= ${expected})`,
    );
    assert.ok(p > (pendingAtStart[i] ?? 0));
  });
  for (const a of agents) assert.is(await a.metric("shadowvm_agent_collector_connected"), 0);

  await collector.start();
  const upAt = Date.now();
  await waitFor(
    async () => {
      const pending = await Promise.all(agents.map((a) => a.metric("shadowvm_agent_spool_pending_frames")));
      return pending.every((p) => p <= 1) && pending;
    },
    { timeoutMs: 60_000, what: "every spool to drain", intervalMs: 50 },
  );
  const drainS = (Date.now() - upAt) / 1000;
  for (const a of agents) {
    assert.is(await a.metric("shadowvm_agent_spool_dropped_records_total"), 0, "nothing dropped");
    assert.is(await a.stop("SIGTERM"), 0, "agent stops cleanly");
  }
  await collector.kill("SIGTERM");

  const db = await openReadOnly(join(collector.dataDir, "shadowvm.duckdb"));
  try {
    for (const a of agents) {
      const id = a.options.agentId;
      const spool = await Spool.open({ dir: join(a.dataDir, "spool"), agentId: id, maxBytes: 1 << 30 });
      const stats = spool.stats();
      const firstPending = spool.firstPendingSeq();
      await spool.close();
      const [f] = await db.query(
        "SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM ingest_frames WHERE agent_id = $1",
        [id],
      );
      const n = Number(f?.["n"]);
      assert.equal(
        [Number(f?.["d"]), Number(f?.["lo"]), Number(f?.["hi"])],
        [n, 1, n],
        `${id}: seqs 1..n once each`,
      );
      // Whatever was not acknowledged when the agent stopped is still spooled: the spool holds
      // firstPending..nextSeq-1 and the store 1..n, together every seq handed out (they may overlap
      // by frames committed whose Ack had not arrived yet: those would be resent and deduplicated).
      if (stats.pendingFrames === 0) assert.is(n, stats.nextSeq - 1, `${id}: every seq handed out is stored`);
      else {
        assert.is(
          stats.pendingFrames,
          stats.nextSeq - firstPending!,
          `${id}: the spool's records are contiguous`,
        );
        assert.ok(
          firstPending! <= n + 1,
          `${id}: no gap between the store (1..${n}) and the spool (${firstPending}..)`,
        );
      }
      const [s] = await db.query("SELECT count(*) AS n FROM samples WHERE agent_id = $1 AND scope = 1", [id]);
      assert.ok(
        Number(s?.["n"]) >= DOWNTIME_S / INTERVAL_S,
        `${id}: host samples from the downtime are stored`,
      );
    }
  } finally {
    db.close();
  }
  console.log(
    `collector-downtime: ${DOWNTIME_S} s down, up to ${Math.max(...pendingAtEnd)} frames spooled per agent, ` +
      `drained in ${drainS.toFixed(1)} s; test took ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
});

test.run();
