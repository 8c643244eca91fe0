import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeFrame } from "@shadowvm/shared";
import { Level } from "level";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Spool, type SpoolClass, type SpoolOptions } from "./spool.js";

const root = mkdtempSync(join(tmpdir(), "shadowvm-spool-"));
let n = 0;
const freshDir = () => join(root, `s${n++}`);

function telemetry(i: number, samples = 1) {
  return {
    telemetry_batch: {
      samples: Array.from({ length: samples }, (_, k) => ({ scope: 1, ts_ms: i * 1000 + k, cpu_usage: 0.5 })),
    },
  };
}
const failure = (i: number) => ({
  failure: { title: `panic ${i}`, class: "kernel_panic", shadow_run_id: "r1" },
});

function counters() {
  const c = { dropped: 0, rejected: [] as SpoolClass[], blocked: 0, corrupt: 0, dead: 0 };
  const observer: SpoolOptions["observer"] = {
    dropped: (_cls, _reason, k) => {
      c.dropped += k;
    },
    rejected: (cls) => c.rejected.push(cls),
    shadowWorkBlocked: () => {
      c.blocked++;
    },
    corrupt: (k) => {
      c.corrupt += k;
    },
    deadLettered: () => {
      c.dead++;
    },
  };
  return { c, observer };
}

test("appends are durable, numbered and survive a reopen; seq never restarts", async () => {
  const dir = freshDir();
  const spool = await Spool.open({ dir, agentId: "a1", maxBytes: 1 << 30 });
  const receipts = await Promise.all(Array.from({ length: 300 }, (_, i) => spool.append(telemetry(i))));
  assert.equal(
    receipts.map((r) => r.seq),
    Array.from({ length: 300 }, (_, i) => i + 1),
  );
  const epoch = spool.epoch;
  assert.is(spool.pendingFrames, 300);
  await spool.ack([{ epoch, first_seq: 1, last_seq: 300 }]);
  assert.is(spool.pendingFrames, 0);
  await spool.append(telemetry(1000));
  await spool.close();

  const again = await Spool.open({ dir, agentId: "a1", maxBytes: 1 << 30 });
  assert.is(again.epoch, epoch);
  assert.is(again.pendingFrames, 1);
  const [rec] = await again.readAfter(0, 10);
  assert.is(rec?.seq, 301);
  const frame = decodeFrame(rec!.frame);
  assert.equal([frame.agent_id, frame.epoch, frame.seq, frame.body], ["a1", epoch, 301, "telemetry_batch"]);
  assert.is((await again.append(telemetry(1001))).seq, 302);
  await again.close();
});

test("readAfter pages in order; ack and resume delete what the collector committed", async () => {
  const spool = await Spool.open({ dir: freshDir(), agentId: "a1", maxBytes: 1 << 30 });
  for (let i = 0; i < 50; i++) await spool.append(i % 10 === 0 ? failure(i) : telemetry(i));
  const page = await spool.readAfter(10, 5);
  assert.equal(
    page.map((r) => r.seq),
    [11, 12, 13, 14, 15],
  );
  assert.is(page[0]?.cls, "failure");
  assert.is(await spool.ack([{ epoch: spool.epoch + 1, first_seq: 1, last_seq: 50 }]), 0, "other epoch");
  assert.is(await spool.ack([{ epoch: spool.epoch, first_seq: 45, last_seq: 60 }]), 6);
  assert.is(await spool.resume([{ epoch: spool.epoch, committed_seq: 20 }]), 20);
  assert.is(spool.firstPendingSeq(), 21);
  assert.is(spool.pendingFrames, 24);
  assert.equal(
    (await spool.readAfter(0, 3)).map((r) => r.seq),
    [21, 22, 23],
  );
  await spool.close();
});

test("when full: shadow work is refused first, then oldest telemetry dropped, failures never", async () => {
  const { c, observer } = counters();
  const maxBytes = 64 * 1024;
  const spool = await Spool.open({ dir: freshDir(), agentId: "a1", maxBytes, observer });
  // fill with telemetry: shadow work is refused from 80%, then the oldest telemetry goes
  let i = 0;
  while (spool.admitShadowWork()) await spool.append(telemetry(i++, 20));
  assert.ok(spool.pendingBytes >= 0.8 * maxBytes);
  assert.is(c.blocked, 1);
  assert.is(c.dropped, 0);
  const first = spool.firstPendingSeq();
  for (let k = 0; k < 100; k++) await spool.append(telemetry(i++, 20));
  assert.ok(c.dropped > 0, "oldest telemetry dropped");
  assert.ok(spool.firstPendingSeq()! > first!, "the oldest went first");
  assert.ok(spool.pendingBytes <= 0.9 * maxBytes, "telemetry stays out of the 10% reserve");
  // failures use the reserve and push telemetry out, and are never dropped themselves
  let accepted = 0;
  let refused: unknown;
  while (!refused) {
    await spool.append({ failure: { title: "x".repeat(900), shadow_run_id: `r${accepted}` } }).then(
      () => accepted++,
      (err) => {
        refused = err;
      },
    );
  }
  assert.is((refused as { code?: string }).code, "full");
  assert.is(spool.stats().byClass.telemetry.frames, 0, "all telemetry dropped before a failure is refused");
  assert.is(spool.stats().byClass.failure.frames, accepted, "every accepted failure is still there");
  assert.ok(spool.pendingBytes <= maxBytes);
  assert.ok(spool.pendingBytes > 0.9 * maxBytes, "failures used the reserve");
  try {
    await spool.append(telemetry(i++, 20));
    assert.unreachable("no room for telemetry either");
  } catch (err) {
    assert.is((err as { code?: string }).code, "full");
  }
  assert.equal(c.rejected, ["failure", "telemetry"]);
  assert.not.ok(spool.admitShadowWork());
  // once the collector acknowledges, shadow work is admitted again
  await spool.ack([{ epoch: spool.epoch, first_seq: 1, last_seq: 1_000_000 }]);
  assert.ok(spool.admitShadowWork());
  await spool.close();
});

test("production events are critical: they push telemetry out and are never dropped", async () => {
  const maxBytes = 64 * 1024;
  const { c, observer } = counters();
  const spool = await Spool.open({ dir: freshDir(), agentId: "a1", maxBytes, observer });
  let i = 0;
  while (spool.admitShadowWork()) await spool.append(telemetry(i++, 20));
  let accepted = 0;
  for (;;) {
    try {
      const r = await spool.append({
        production_event: { vm_uuid: "u1", vm_name: "web-1", ts_ms: 1, kind: 1, line: "y".repeat(900) },
      });
      assert.ok(r.seq > 0);
      accepted++;
    } catch (err) {
      assert.is((err as { code?: string }).code, "full");
      break;
    }
  }
  assert.ok(c.dropped > 0, "telemetry made room");
  assert.is(spool.stats().byClass.production.frames, accepted, "every accepted event is still there");
  assert.is(spool.stats().byClass.telemetry.frames, 0);
  assert.equal(c.rejected, ["production"]);
  await spool.close();
});

test("a record with a bad checksum is moved to the dead letters on open", async () => {
  const dir = freshDir();
  const { c, observer } = counters();
  const spool = await Spool.open({ dir, agentId: "a1", maxBytes: 1 << 30 });
  for (let i = 0; i < 3; i++) await spool.append(telemetry(i));
  await spool.close();
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" });
  const key = `r:${(2).toString(16).padStart(16, "0")}`;
  const value = new Uint8Array(await db.get(key));
  value[value.length - 1] = (value.at(-1) ?? 0) ^ 0xff;
  await db.put(key, value);
  await db.close();
  const again = await Spool.open({ dir, agentId: "a1", maxBytes: 1 << 30, observer });
  assert.is(c.corrupt, 1);
  assert.equal(
    (await again.readAfter(0, 10)).map((r) => r.seq),
    [1, 3],
  );
  assert.is(again.stats().deadLetters, 1);
  await again.deadLetter(3, "refused by the collector");
  assert.is(again.stats().deadLetters, 2);
  assert.is(again.pendingFrames, 1);
  await again.close();
});

test("a spool of another agent id is refused; bad bodies are refused", async () => {
  const dir = freshDir();
  const spool = await Spool.open({ dir, agentId: "a1", maxBytes: 1 << 30 });
  try {
    await spool.append({ telemetry_batch: { samples: [{ scope: 0 }] } });
    assert.unreachable();
  } catch (err) {
    assert.match(String(err), /scope/);
  }
  await spool.close();
  try {
    await Spool.open({ dir, agentId: "a2", maxBytes: 1 << 30 });
    assert.unreachable();
  } catch (err) {
    assert.is((err as { code?: string }).code, "agent_mismatch");
  }
});

test.after(() => rmSync(root, { recursive: true, force: true }));

test.run();
