// The production console watch on the real demo guest under QEMU: its console log is found from the
// QEMU command line (-chardev file,path=... behind an isa-serial), a line the guest prints that is
// a stored precursor of a signature of this VM becomes a PRECURSOR event, and a real kernel panic on
// its console becomes a FAILURE event with the parser's fingerprint. One boot, ~30-60 s under TCG.
import { rmSync } from "node:fs";
import { join } from "node:path";
import { SignatureDb } from "@shadowvm/agent/signatures/index";
import { ConsoleWatch } from "@shadowvm/agent/telemetry/console-watch";
import {
  consoleLinePattern,
  failureFingerprint,
  type shadowvm,
  silentLogger,
  waitFor,
} from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { tempWorkDir, withDemoVm } from "./support/demo-guest.js";

test("a precursor and a panic on the demo guest's own console", async () => {
  const stateDir = tempWorkDir("svm-prodcon-");
  await withDemoVm({ name: "prodcon" }, async (vm) => {
    const uuid = "prodcon-uuid";
    const pid = vm.process.pid!;
    // What the guest prints for sysrq h, as a precursor of a (made-up) signature of this VM.
    let channel = await vm.channel();
    await channel.sysrq("h", { check: true, timeoutMs: 30_000 });
    const help = await vm.waitForConsole(/sysrq: HELP/, 30_000);
    const pattern = consoleLinePattern(help.line)!.pattern;
    const sig = { title: "WARNING in demo_path", class: "warning", fingerprint: "fp-demo", frame: null };
    const db = await SignatureDb.open(join(stateDir, "signatures"));
    await db.recordRun({ vm: uuid, failures: [{ ...sig, precursors: [pattern] }] });
    const events: shadowvm.v1.IProductionEvent[] = [];
    const watch = new ConsoleWatch({
      vms: () => [{ uuid, name: "prodcon", pid }],
      signatures: db,
      sink: {
        async append(b) {
          events.push(b.production_event);
        },
      },
      logger: silentLogger(),
      pollMs: 200,
      settleMs: 1500,
    }).start();
    try {
      await waitFor(() => watch.watched.size === 1, { timeoutMs: 10_000, what: "the console log found" });
      assert.is(watch.watched.get(uuid)!.path, vm.consoleLog);
      await new Promise((r) => setTimeout(r, 500)); // the first read starts at the end
      await channel.sysrq("h", { check: true, timeoutMs: 30_000 });
      await waitFor(() => events.some((e) => e.kind === 1), { timeoutMs: 30_000, what: "a PRECURSOR event" });
      const pre = events.find((e) => e.kind === 1)!;
      assert.equal([pre.vm_uuid, pre.fingerprint, pre.pattern], [uuid, "fp-demo", pattern]);
      assert.equal(
        [pre.precursor_runs_with, pre.precursor_runs_without],
        [1, 0],
        "1 shadow run, none without",
      );
      assert.match(pre.line!, /sysrq: HELP/);
      await channel.close();
      channel = await vm.channel();
      await channel.sysrq("c", { timeoutMs: 30_000 }).catch(() => undefined);
      await waitFor(() => events.some((e) => e.kind === 2 && e.class === "panic"), {
        timeoutMs: 60_000,
        what: "a FAILURE event for the panic",
      });
      const panic = events.find((e) => e.kind === 2 && e.class === "panic")!;
      assert.is(panic.title, "kernel panic: sysrq triggered crash");
      assert.is(panic.fingerprint, failureFingerprint("kernel panic: sysrq triggered crash", "panic"));
      process.stderr.write(
        `[production-console] events: ${JSON.stringify(events.map((e) => [e.kind, e.title]))}\n`,
      );
    } finally {
      await channel.close().catch(() => undefined);
      await watch.stop();
      await db.close();
    }
  }).finally(() => rmSync(stateDir, { recursive: true, force: true }));
});

test.run();
