import { test } from "uvu";
import * as assert from "uvu/assert";
import { releaseTime, splitFrames } from "./net-impairment.js";
import { blkdebugRules, mceAddress, mceCommand, repeatIntervalMs } from "./stress.js";

type Rule = { event: string; state: number; sector?: number; new_state?: number; iotype?: string };

function failingStates(rate: number, states = 20): number[] {
  const rules = blkdebugRules(rate, states)["inject-error"] as Rule[];
  return rules.filter((r) => r.event === "write_aio" && r.sector === undefined).map((r) => r.state);
}

test("blkdebugRules: the share of failing states is the rate, spread out", () => {
  assert.is(failingStates(1).length, 20);
  assert.is(failingStates(0.5).length, 10);
  assert.equal(failingStates(0.25), [1, 5, 9, 13, 17]);
  assert.is(failingStates(0.01).length, 1, "any rate above 0 fails something");
  assert.is(failingStates(0).length, 0);
});

test("blkdebugRules: a cycle of states on guest writes, a harmless rule in every state for flushes", () => {
  const r = blkdebugRules(0.5, 4);
  const set = r["set-state"] as Rule[];
  assert.equal(
    set.map((x) => [x.state, x.new_state]),
    [
      [1, 2],
      [2, 3],
      [3, 4],
      [4, 1],
    ],
  );
  const inject = r["inject-error"] as Rule[];
  const flushes = inject.filter((x) => x.event === "flush_to_os");
  assert.is(flushes.length, 4);
  for (const f of flushes) {
    assert.is(f.sector, 2 ** 40, "on a sector no disk has");
    assert.is(f.iotype, "write");
  }
  for (const x of inject) assert.is(x.iotype, "write", "reads never fail");
  // every state arms exactly one write_aio rule, so the armed rule is replaced at each write
  for (let s = 1; s <= 4; s++)
    assert.is(inject.filter((x) => x.event === "write_aio" && x.state === s).length, 1);
});

test("machine checks: the proven HMP command, page-aligned addresses in guest RAM", () => {
  assert.is(mceCommand(0x8000000), "mce 0 9 0xbd00000000000000 0x86 0x8000000 0x8c");
  const ram = 256 * 1024 * 1024;
  assert.is(mceAddress(ram), 128 * 1024 * 1024);
  assert.is(mceAddress(ram, 2) % 4096, 0);
  assert.ok(mceAddress(8 * 1024 ** 3) < 3 * 1024 ** 3, "below the PCI hole");
});

test("periodic faults repeat every 1/rate s, at least 1 s apart; rate 0 = once", () => {
  assert.is(repeatIntervalMs(0), 0);
  assert.is(repeatIntervalMs(0.1), 10_000);
  assert.is(repeatIntervalMs(1), 1000);
  assert.is(repeatIntervalMs(5), 1000);
});

test("filter-redirector frames: split whole frames, keep the partial rest", () => {
  const frame = (payload: string) => {
    const p = Buffer.from(payload);
    const b = Buffer.alloc(8 + p.length);
    b.writeUInt32BE(p.length, 0);
    b.writeUInt32BE(0, 4);
    p.copy(b, 8);
    return b;
  };
  const all = Buffer.concat([frame("hello"), frame("world!"), frame("tail").subarray(0, 6)]);
  const { frames, rest } = splitFrames(all);
  assert.is(frames.length, 2);
  assert.is(frames[1]!.subarray(8).toString(), "world!");
  assert.is(rest.length, 6);
  const more = splitFrames(Buffer.concat([rest, frame("tail").subarray(6)]));
  assert.is(more.frames[0]!.subarray(8).toString(), "tail");
  assert.is(more.rest.length, 0);
});

test("release times: the delay, then the rate, never before the previous frame", () => {
  assert.is(releaseTime(100, 1000, 0, 50, undefined), 150);
  // 1000 bytes at 80 kbit/s = 100 ms on the wire after the previous release
  assert.is(releaseTime(100, 1000, 400, 0, 80), 500);
  assert.is(releaseTime(100, 1000, 120, 50, 800), 150);
  // order is kept when the delay drops (a spike ending)
  assert.is(releaseTime(100, 10, 2000, 0, undefined), 2000);
});

test.run();
