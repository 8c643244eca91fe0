// A live capture that restores into a guest failing on its own (seen for real under TCG: a vCPU
// caught mid local-APIC write restored into shadows that all crashed at once, the control too).
// Made here on purpose: a delayed sysrq crash is pending in the demo VM when it is captured, and
// defused in production right after, so only the guests restored from that capture crash.
// `explore` on real shadows must then: end the batch as soon as the control fails (its stressed
// outcomes cannot count), take a fresh capture, and finish the campaign on it; production runs on.
// The test takes about 150 s.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { qemuProcesses, tempWorkDir, withDemoVm } from "./support/demo-guest.js";
import { AGENT_BIN, runCli } from "./support/run-cli.js";
import { spooledByClass } from "./support/spool-stats.js";

const T0 = Date.now();
const log = (m: string) =>
  process.stderr.write(`[unusable-capture +${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);

/** Seconds from planting the crash to its trigger: well after the capture, well inside a run. */
const BOMB_S = 45;
const DURATION_S = 75;

test("a capture whose restored guests crash unstressed is replaced by a fresh one, and the campaign finishes", async () => {
  const data = tempWorkDir("svm-badcap-");
  await withDemoVm({ name: "badcap-prod", readyTimeoutMs: 240_000 }, async (vm) => {
    const ch = await vm.channel({ connectTimeoutMs: 30_000 });
    try {
      const planted = await ch.sysrqAfter("c", BOMB_S, { check: true, timeoutMs: 30_000 });
      log(`crash planted in production: ${JSON.stringify(planted)}`);
      let defused: Promise<unknown> | undefined;
      const lines: string[] = [];
      const r = await runCli(
        AGENT_BIN,
        [
          "explore",
          "--vm",
          "badcap-prod",
          "--data-dir",
          data,
          "--budget",
          "1",
          "--batch-size",
          "1",
          "--duration",
          String(DURATION_S),
          "--strategy",
          "baseline",
          "--seed",
          "3",
          "--json",
        ],
        {
          env: {
            SHADOWVM_AGENT__AGENT_ID: "badcap-host",
            SHADOWVM_AGENT__HYPERVISOR__QMP_SOCKETS: JSON.stringify([vm.qmpSocket]),
            SHADOWVM_AGENT__SHADOW__PROBE_PATH: "/cgi-bin/health",
            SHADOWVM_AGENT__SHADOW__HOST_RESERVE_MB: "512",
            // Stressed shadows run on past their own failures, so the one that ends them early here
            // is the failing control, which stops its whole batch.
            SHADOWVM_AGENT__SHADOW__STOP_ON_FAILURE: "false",
          },
          timeoutMs: 15 * 60_000,
          onStderrLine: (line) => {
            lines.push(line);
            log(`agent: ${line.slice(0, 300)}`);
            // The first capture holds the pending crash; production is defused once it is taken.
            if (!defused && /campaign: captured/.test(line))
              defused = ch.kill("timebomb", "KILL", { check: true, timeoutMs: 30_000 });
          },
        },
      );
      assert.ok(defused, "the first capture was announced");
      const defuseReply = (await defused) as { pids?: number[] };
      assert.ok(
        (defuseReply.pids ?? []).length > 0,
        `the crash was still pending at the capture: ${JSON.stringify(defuseReply)}`,
      );
      assert.is(r.code, 0, r.stderr.slice(-4000));

      const out = JSON.parse(r.stdout) as {
        trials: { outcome: { failed: boolean } }[];
        capture: string;
        captures?: string[];
      };
      assert.is(out.trials.length, 1, "the campaign's one run has an outcome");
      assert.is(out.captures?.length, 2, `two captures: ${JSON.stringify(out.captures)}`);
      assert.is(out.capture, out.captures![1], "the run that counts used the fresh capture");

      const capturing = lines.filter((l) => /campaign: capturing/.test(l));
      assert.is(capturing.length, 2);
      assert.match(
        capturing[1]!,
        /reason=the control shadow of capture \S+ was unhealthy: control run failed/,
      );
      // The first batch ended when its control crashed, not at its duration: the control stopped on
      // its failure and no shadow of the batch ran its course.
      const firstBatch = lines.slice(0, lines.indexOf(capturing[1]!));
      const stopped = firstBatch.filter((l) => /shadow: stopped/.test(l));
      assert.ok(stopped.length >= 2, `control and stressed shadow stopped:\n${stopped.join("\n")}`);
      for (const l of stopped) assert.not.match(l, /duration reached/, l);
      assert.ok(
        stopped.some((l) => /shadow=\S+-c reason=failure seen \(/.test(l)),
        `the control stopped on its crash:\n${stopped.join("\n")}`,
      );
      assert.ok(
        stopped.some((l) => /shadow=\S+-1 reason=the control shadow failed \(/.test(l)),
        `the stressed shadow was stopped by the failing control:\n${stopped.join("\n")}`,
      );
      assert.match(
        firstBatch.join("\n"),
        /control verdict verdict=\{"healthy":false/,
        "the first capture's control was unhealthy",
      );

      // Both captures are shipped to the collector (the control runs name theirs: the collector
      // tells a bad capture from a VM that fails unstressed by them, docs/risk-model.md 8b).
      const byClass = await spooledByClass(data, "badcap-host");
      assert.is(byClass.capture.frames, 2, `capture records spooled: ${JSON.stringify(byClass)}`);
      assert.ok(
        byClass.shadow_run.frames >= 2 * 4,
        "two batches of a control and a run, started and finished",
      );

      // Production never saw the crash: it answers and its console shows no panic.
      const ping = await ch.send("ping", { check: true, timeoutMs: 30_000 });
      assert.ok(ping, "production answers on its channel");
      assert.not.match(await vm.consoleText(), /Kernel panic|sysrq triggered crash/);
    } finally {
      await ch.close();
    }
  });
  // Torn down: no shadow QEMU of this data dir, no restored plaintext.
  assert.equal(qemuProcesses(data), []);
  assert.equal(readdirSync(join(data, "restored")), []);
});

test.run();
