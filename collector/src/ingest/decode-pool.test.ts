import { encodeFrame, silentLogger } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { InlineDecoder, WorkerDecoder } from "./decode-pool.js";
import { peekStreamPosition } from "./ingest-frame.js";

const frames = [
  encodeFrame({
    agent_id: "a",
    epoch: 7,
    seq: 1,
    sent_at_ms: 5,
    telemetry_batch: {
      samples: [
        { scope: 1, ts_ms: 10, cpu_usage: 1.5, disk_read_bytes: 2 ** 40, extra: { steal_pct: 2 } },
        { scope: 2, vm_uuid: "u1", ts_ms: 11, net_tx_drops: 3 },
      ],
    },
  }),
  encodeFrame({
    agent_id: "a",
    epoch: 7,
    seq: 2,
    sent_at_ms: 5,
    vm_inventory: { uuid: "u1", vcpus: 2, labels: { t: "x" } },
  }),
  encodeFrame({ agent_id: "a", heartbeat: { spool_pending_frames: 3 } }),
  encodeFrame({ agent_id: "a", error: { code: 8, message: "boom" } }),
];

test("worker and inline decoding give the same frames, in order", async () => {
  const worker = new WorkerDecoder(1 << 20, silentLogger());
  const inline = new InlineDecoder(1 << 20);
  try {
    const a = await Promise.all(frames.map((f) => worker.decode(new Uint8Array(f))));
    const b = await Promise.all(frames.map((f) => inline.decode(new Uint8Array(f))));
    assert.equal(a, b);
    const t = a[0]!;
    assert.ok(t.ok && t.frame?.samples);
    if (!t.ok || !t.frame?.samples) return;
    assert.equal([t.frame.kind, t.frame.epoch, t.frame.seq, t.frame.records], ["telemetry_batch", 7, 1, 2]);
    const s = t.frame.samples;
    assert.equal([...s.scope], [1, 2]);
    assert.equal(s.vmUuid, [null, "u1"]);
    assert.equal([...s.ts], [10, 11]);
    assert.is(s.counters[3 * 2 + 0], 2 ** 40, "disk_read_bytes of row 0");
    assert.is(s.counters[12 * 2 + 1], 3, "net_tx_drops of row 1");
    assert.equal(s.extra, ['{"steal_pct":2}', null]);
    const inv = a[1]!;
    assert.ok(inv.ok && inv.frame?.body);
    if (inv.ok) assert.equal(inv.frame?.body, { uuid: "u1", vcpus: 2, labels: { t: "x" } });
    assert.equal(a[2], { ok: true, agentId: "a", kind: "heartbeat", epoch: 0, seq: 0 });
    const bad = await worker.decode(frames[0]!.subarray(0, frames[0]!.byteLength - 4));
    assert.equal(bad.ok ? "" : [bad.code, bad.ref], ["truncated", { epoch: 7, seq: 1 }]);
  } finally {
    await worker.close();
  }
});

test("peekStreamPosition reads epoch and seq from a frame's head only", () => {
  assert.equal(peekStreamPosition(frames[1]!.subarray(0, 12)), { epoch: 7, seq: 2 });
  assert.is(peekStreamPosition(new Uint8Array([0x0f, 0x0f, 0x0f])), undefined);
  assert.is(peekStreamPosition(frames[2]!), undefined, "control frames have no position");
});

test.run();
