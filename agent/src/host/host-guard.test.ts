import { test } from "uvu";
import * as assert from "uvu/assert";
import { type HostBudget, HostGuard, type HostProbe } from "./host-guard.js";

const MiB = 1024 * 1024;

function budget(over: Partial<HostBudget> = {}): HostBudget {
  return {
    maxShadows: 4,
    cpuShare: 0.5,
    memoryBudgetBytes: 2048 * MiB,
    hostReserveBytes: 1024 * MiB,
    emergencyAvailableBytes: 512 * MiB,
    diskBudgetBytes: 4096 * MiB,
    minFreeDiskBytes: 2048 * MiB,
    emergencyFreeDiskBytes: 1024 * MiB,
    requireCpuCap: true,
    ...over,
  };
}

function host(o: { availMb?: number; freeMb?: number; rss?: Record<number, number> } = {}): HostProbe & {
  availMb: number;
  freeMb: number;
} {
  const h = {
    availMb: o.availMb ?? 8192,
    freeMb: o.freeMb ?? 100_000,
    meminfo: () => ({ totalBytes: 16384 * MiB, availableBytes: h.availMb * MiB }),
    freeDiskBytes: () => h.freeMb * MiB,
    cpuCount: () => 8,
    residentBytes: (pid: number) => (o.rss?.[pid] ?? 0) * MiB,
  };
  return h;
}

const shadow = (id: string, mb = 352, control = false) => ({
  id,
  memoryBytes: mb * MiB,
  diskBytes: 512 * MiB,
  control,
});

test("admits within the budget and counts the admitted shadows", () => {
  const g = new HostGuard(budget(), host());
  assert.equal(g.admit(shadow("a")), { ok: true });
  assert.equal(g.admit(shadow("b")), { ok: true });
  assert.is(g.count, 2);
  g.release("a");
  assert.is(g.count, 1);
  assert.is(g.cpuCores, 4, "half of 8 CPUs");
});

test("refuses with the limit that was hit, in numbers", () => {
  const count = new HostGuard(budget({ maxShadows: 1 }), host());
  count.admit(shadow("a"));
  const r1 = count.admit(shadow("b"));
  assert.equal(r1.ok, false);
  assert.match(
    (r1 as { reason: string }).reason,
    /shadow b refused: 1 shadows already run; shadow.max_shadows is 1/,
  );

  const mem = new HostGuard(budget({ memoryBudgetBytes: 600 * MiB }), host());
  mem.admit(shadow("a"));
  const r2 = mem.admit(shadow("b")) as { ok: false; reason: string };
  assert.match(
    r2.reason,
    /needs ~352 MiB of memory and shadows already hold 352 MiB of their 600 MiB budget/,
  );

  const reserve = new HostGuard(budget(), host({ availMb: 1200 }));
  const r3 = reserve.admit(shadow("a")) as { ok: false; reason: string };
  assert.match(
    r3.reason,
    /1200 MiB of memory available; admitting it \(~352 MiB\) would leave 848 MiB, below the 1024 MiB kept for production/,
  );

  const disk = new HostGuard(budget(), host({ freeMb: 2300 }));
  const r4 = disk.admit(shadow("a")) as { ok: false; reason: string };
  assert.match(
    r4.reason,
    /2300 MiB free; with 512 MiB reserved for overlays it would fall below the 2048 MiB kept free/,
  );

  const cap = new HostGuard(budget(), host(), "no cgroup hierarchy with the cpu controller is mounted");
  const r5 = cap.admit(shadow("a")) as { ok: false; reason: string };
  assert.match(r5.reason, /CPU use cannot be capped on this host \(no cgroup hierarchy/);
  const uncapped = new HostGuard(budget({ requireCpuCap: false }), host(), "no cpu controller");
  assert.equal(uncapped.admit(shadow("a")), { ok: true });
});

test("memory of shadows still loading counts against the host's headroom", () => {
  const h = host({ availMb: 2000, rss: { 11: 352 } });
  const g = new HostGuard(budget(), h);
  assert.equal(g.admit(shadow("a")), { ok: true });
  // a has no resident memory yet: 2000 - 352 (a, pending) - 352 (b) = 1296 >= 1024
  assert.equal(g.admit(shadow("b")), { ok: true });
  // now 2000 - 704 pending - 352 = 944 < 1024
  assert.equal(g.admit(shadow("c")).ok, false);
  g.setPid("a", 11); // a is resident now: pending 352 (b) -> 2000 - 352 - 352 = 1296
  assert.equal(g.admit(shadow("c")), { ok: true });
});

test("when the host runs short, stressed shadows die first (newest first), the control last", () => {
  const h = host();
  const g = new HostGuard(budget(), h);
  g.admit(shadow("control", 352, true));
  g.admit(shadow("s1"));
  g.admit(shadow("s2"));
  const killed: string[] = [];
  g.on("kill", (k) => killed.push(k.id));
  assert.is(g.check(), undefined, "nothing while the host is fine");
  h.availMb = 300;
  assert.match(g.check()!.reason, /host memory short: 300 MiB available, below the 512 MiB floor/);
  g.check();
  g.check();
  assert.is(g.check(), undefined, "everything is already being stopped");
  assert.equal(killed, ["s2", "s1", "control"]);
  h.availMb = 8192;
  g.release("s2");
  assert.equal(g.admit(shadow("s3")), { ok: true });
  h.freeMb = 500;
  const k = g.check();
  assert.is(k?.id, "s3");
  assert.match(k!.reason, /host disk short: 500 MiB free/);
});

test.run();
