// End to end: the demo guest image is built (or reused), boots under QEMU/TCG with the demo
// launcher, serves its health endpoint through the host port forward, answers ping/ip/verify on
// the guest channel, and leaves no QEMU process and no changed template behind.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { buildGuestImage, readGuestDescription } from "@shadowvm/agent/demo/demo-vm";
import type { GuestHealth } from "@shadowvm/agent/guest/guest-channel";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ensureGuestImage, httpGet, qemuProcesses, withDemoVm } from "./support/demo-guest.js";

function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

function log(msg: string): void {
  process.stderr.write(`[demo-guest] ${msg}\n`);
}

test("the build script produces a complete image and reuses it when nothing changed", async () => {
  const { dir, ms } = await ensureGuestImage();
  log(`image ${dir} ready in ${ms} ms (cold build or cache hit)`);
  for (const f of ["vmlinuz", "initrd.img", "data.qcow2", "guest.json", "stamp"]) {
    assert.ok(existsSync(join(dir, f)), `${f} in ${dir}`);
  }
  const desc = await readGuestDescription(dir);
  assert.match(desc.kernel.package, /^linux-image-\d.*-amd64$/);
  assert.match(desc.cmdline, /console=ttyS0/);
  for (const m of ["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "ext4"]) {
    assert.ok(
      desc.initrd.modules.includes(m) || desc.initrd.builtin.includes(m),
      `module ${m} loaded or built in`,
    );
  }
  // dependencies come before their users
  const order = desc.initrd.modules;
  if (order.includes("virtio_ring") && order.includes("virtio_pci")) {
    assert.ok(order.indexOf("virtio_ring") < order.indexOf("virtio_pci"), "virtio_ring before virtio_pci");
  }
  if (order.includes("jbd2")) assert.ok(order.indexOf("jbd2") < order.indexOf("ext4"), "jbd2 before ext4");
  assert.is(desc.channel.name, "org.shadowvm.guest.0");

  const stampBefore = readFileSync(join(dir, "stamp"), "utf8");
  const t0 = Date.now();
  const again = await buildGuestImage();
  const cachedMs = Date.now() - t0;
  log(`cached build check took ${cachedMs} ms`);
  assert.is(again, dir);
  assert.is(readFileSync(join(dir, "stamp"), "utf8"), stampBefore, "not rebuilt");
  assert.ok(cachedMs < 60_000, `cache hit is quick (${cachedMs} ms)`);
});

test("the demo VM boots, serves health, answers ping/ip/verify and stops without leftovers", async () => {
  const { dir } = await ensureGuestImage();
  const templateHash = sha256(join(dir, "data.qcow2"));
  let uuid = "";
  let pid = 0;
  await withDemoVm({ name: "demo-e2e" }, async (vm, ready) => {
    uuid = vm.uuid;
    pid = vm.pid;
    log(`boot to ready: ${ready.readyMs} ms (${ready.line})`);
    assert.match(ready.line, /shadowvm-guest: ready boot=1 data=ok state=ok/);
    assert.ok(
      qemuProcesses(vm.uuid).some((p) => p.pid === vm.pid),
      "QEMU runs with our uuid",
    );

    // health through the host port forward (the forward is up once QEMU greeted on QMP)
    const res = await httpGet(vm.httpPort, "/cgi-bin/health", 30_000);
    log(`GET /cgi-bin/health: ${res.status} in ${res.ms.toFixed(1)} ms: ${res.body.trim()}`);
    assert.is(res.status, 200);
    const health = JSON.parse(res.body) as GuestHealth;
    assert.is(health.status, "ok");
    assert.is(health.writer_running, true);
    assert.is(health.state_ok, true);
    assert.is(health.boot_count, 1);
    assert.ok(health.writer_seq > 0, "writer has written");

    const ch = await vm.channel({ connectTimeoutMs: 10_000 });
    try {
      const ping = await ch.ping({ timeoutMs: 30_000 });
      assert.is(ping.ok, true);
      assert.is(ping.pong, true);
      assert.is(ping.boot_id, health.boot_id, "same boot as the health endpoint");

      const ip = await ch.ip({ timeoutMs: 30_000 });
      assert.ok(
        ip.addresses.some((a) => a.ifname === "eth0" && a.address === "10.0.2.15" && a.prefix === 24),
        JSON.stringify(ip.addresses),
      );
      assert.is(ip.mac, vm.mac);
      assert.is(ip.gateway, "10.0.2.2");

      const t0 = Date.now();
      const v = await ch.verify();
      log(`verify in ${Date.now() - t0} ms: ${JSON.stringify(v)}`);
      assert.is(v.ok, true, JSON.stringify(v));
      assert.ok(v.records > 0);
      assert.is(v.first_seq, 1);
      assert.is(v.last_seq, v.records);
      assert.is(v.bad, 0);
      assert.is(v.gaps, 0);
      assert.is(v.missing_synced, 0);
      assert.ok(v.synced_seq > 0 && v.synced_seq <= v.last_seq);
      assert.is(v.state_ok, true);
      assert.is(v.fsck, "clean");
      assert.is(v.remounted, true);
      assert.is(v.writer_restarted, true);

      // the writer continues after verify: its sequence passes what verify saw
      const after = await ch.status({ timeoutMs: 30_000 });
      const deadline = Date.now() + 60_000;
      let seq = after.health.writer_seq;
      while (seq <= v.last_seq && Date.now() < deadline) {
        seq = (await ch.status({ timeoutMs: 30_000 })).health.writer_seq;
      }
      assert.ok(seq > v.last_seq, `writer resumed after verify (${seq} > ${v.last_seq})`);
    } finally {
      await ch.close();
    }

    const console = await vm.consoleText();
    assert.not.match(console, /Kernel panic|BUG:|Oops|Call Trace/);
  });

  // stopped: no QEMU with our uuid, our pid gone, the shared template untouched
  assert.equal(qemuProcesses(uuid), []);
  assert.throws(() => process.kill(pid, 0), /ESRCH/, "QEMU process reaped");
  assert.is(sha256(join(dir, "data.qcow2")), templateHash, "template data.qcow2 never written");
});

test("knobs and channel commands act on the real guest: leak to OOM, kill/start, stop/cont, fill, clock", async () => {
  await withDemoVm(
    { name: "demo-e2e-knobs", memoryMb: 160, extraKernelArgs: ["shadowvm.leak_kb_s=8192"] },
    async (vm) => {
      // the leak grows 8 MiB/s until the OOM killer picks it (and only it)
      const oom = await vm.waitForConsole(/Out of memory: Killed process \d+ \((\S+)\)/, 180_000);
      log(`OOM: ${oom.line}`);
      assert.match(oom.line, /\(svm-leak\)/);

      const ch = await vm.channel();
      try {
        const h0 = (await ch.status()).health;
        assert.is(h0.status, "ok", "the rest of the workload survived the OOM kill");

        // kill httpd: the port forward stays, the guest service is gone; start brings it back
        const killed = await ch.kill("httpd");
        assert.is(killed.ok, true);
        assert.ok(killed.pids.length > 0);
        const down = await httpGet(vm.httpPort, "/cgi-bin/health", 15_000).then(
          (r) => `status ${r.status}`,
          (err: Error) => err.message,
        );
        assert.not.match(down, /^status 200$/, `health must fail with httpd killed: ${down}`);
        assert.is((await ch.start("httpd")).ok, true);
        const up = await httpGet(vm.httpPort, "/cgi-bin/health", 30_000);
        assert.is(up.status, 200);

        // stop the writer: its sequence stands still; cont: it moves again
        const stopped = await ch.stop("writer");
        assert.is(stopped.ok, true);
        const s1 = (await ch.status()).health.writer_seq;
        // an observation window: the writer appends every second, so 3 s of polling must see nothing
        const t0 = Date.now();
        let s2 = s1;
        while (Date.now() - t0 < 3000) s2 = (await ch.status()).health.writer_seq;
        assert.is(s2, s1, "no records while stopped");
        assert.equal((await ch.cont()).pids, stopped.pids);
        const deadline = Date.now() + 60_000;
        while (s2 <= s1 && Date.now() < deadline) s2 = (await ch.status()).health.writer_seq;
        assert.ok(s2 > s1, "writer resumed");

        // fill the disk halfway, then free it
        const fill = await ch.fill(50);
        assert.is(fill.ok, true);
        assert.ok(fill.used_kb >= fill.total_kb * 0.45, JSON.stringify(fill));
        const freed = await ch.fill(0);
        assert.is(freed.fill_bytes, 0);
        assert.ok(freed.used_kb < fill.used_kb);

        // jump the clock an hour ahead and back
        const fwd = await ch.clock(3600);
        assert.ok(fwd.after - fwd.before >= 3600 && fwd.after - fwd.before < 3660, JSON.stringify(fwd));
        const back = await ch.clock(-3600);
        assert.ok(back.before - back.after >= 3540, JSON.stringify(back));

        // errors are replies, not hangs
        const none = await ch.kill("no-such-process");
        assert.is(none.ok, false);
        assert.match(none.error ?? "", /no process named/);
        assert.is((await ch.send("frobnicate")).ok, false);

        // after all that the data is intact
        const v = await ch.verify();
        log(`verify after faults: ${JSON.stringify(v)}`);
        assert.is(v.ok, true, JSON.stringify(v));
      } finally {
        await ch.close();
      }
    },
  );
});

test.run();
