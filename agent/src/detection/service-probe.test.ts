import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { LatencyMonitor, latencyThresholdFromControl, probeOnce, probeStats } from "./service-probe.js";
import type { ProbeSample } from "./types.js";

const sample = (latencyMs: number, extra: Partial<ProbeSample> = {}): ProbeSample => ({
  offsetMs: 0,
  ok: true,
  latencyMs,
  timedOut: false,
  guestRunning: true,
  ...extra,
});

test("latency threshold from the control: p99 x factor, a floor, and no baseline without samples", () => {
  const control = Array.from({ length: 100 }, (_, i) => 10 + (i % 10));
  assert.is(latencyThresholdFromControl(control), 57);
  assert.is(latencyThresholdFromControl(control, { factor: 2, minMs: 0 }), 38);
  assert.is(latencyThresholdFromControl([1, 1, 1, 1, 1]), 50, "the floor");
  assert.throws(() => latencyThresholdFromControl([1, 2]), /at least 5/);
  assert.throws(() => latencyThresholdFromControl([Number.NaN, 1, 1, 1, 1]), /4 successful/);
});

test("latency monitor: median over the window, one breach per episode, ignores what is no latency", () => {
  const m = new LatencyMonitor(100, 3);
  assert.is(m.add(sample(500)), null, "window not full");
  assert.is(m.add(sample(10)), null);
  assert.is(m.add(sample(10, { ok: false })), null, "a refused probe is no latency");
  assert.is(m.add(sample(10, { guestRunning: false })), null, "nor one while the guest is paused");
  assert.ok(m.add(sample(500)), "median of 500,10,500 = 500 > 100");
});

test("latency monitor episodes", () => {
  const m = new LatencyMonitor(100, 3);
  const seq = [10, 10, 10, 200, 200, 200, 200, 10, 10, 300, 300].map((v) => m.add(sample(v)) !== null);
  assert.equal(seq, [false, false, false, false, true, false, false, false, false, false, true]);
  const t = new LatencyMonitor(undefined, 1);
  assert.is(t.add(sample(1e6)), null, "no threshold, no breach");
  const timeouts = new LatencyMonitor(100, 2);
  timeouts.add(sample(300, { ok: false, timedOut: true }));
  assert.is(
    timeouts.add(sample(300, { ok: false, timedOut: true })),
    null,
    "timeouts are unresponsiveness, not latency",
  );
});

test("probeOnce: ok, HTTP error, timeout, refused; stats", async () => {
  const server = createServer((req, res) => {
    if (req.url === "/slow") return; // never answers
    res.writeHead(req.url === "/err" ? 500 : 200).end("x");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const ok = await probeOnce(`${base}/`, 2000);
    assert.ok(ok.ok);
    assert.is(ok.status, 200);
    const err = await probeOnce(`${base}/err`, 2000);
    assert.is(err.ok, false);
    assert.is(err.status, 500);
    const slow = await probeOnce(`${base}/slow`, 100);
    assert.is(slow.timedOut, true);
    assert.is(slow.latencyMs, 100);
    const ac = new AbortController();
    const aborted = probeOnce(`${base}/slow`, 10_000, ac.signal);
    ac.abort();
    assert.is((await aborted).error, "aborted");
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
  const refused = await probeOnce(base, 2000);
  assert.is(refused.ok, false);
  assert.match(refused.error!, /ECONNREFUSED/);
  const stats = probeStats([sample(10), sample(20), sample(30, { ok: false, timedOut: true })]);
  assert.equal(
    {
      sent: stats.sent,
      ok: stats.ok,
      failed: stats.failed,
      timedOut: stats.timedOut,
      p50: stats.p50Ms,
      max: stats.maxMs,
    },
    { sent: 3, ok: 2, failed: 1, timedOut: 1, p50: 10, max: 20 },
  );
});

test.run();
