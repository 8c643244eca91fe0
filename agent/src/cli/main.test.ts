// The agent CLI in-process: dispatch, usage errors and exit codes, and parse-console's output.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { writeCampaignHistory } from "../campaign/campaign-history.js";
import type { CampaignStatus } from "./campaigns-command.js";
import { main } from "./main.js";

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io = {
    out: (t: string) => {
      out += `${t}\n`;
    },
    err: (t: string) => {
      err += `${t}\n`;
    },
  };
  const code = await main(args, io, {});
  return { code, out, err };
}

const dir = mkdtempSync(join(tmpdir(), "svm-cli-"));

test("no command prints usage with exit code 2; help exits 0", async () => {
  const none = await run([]);
  assert.is(none.code, 2);
  assert.match(none.out, "Usage: shadowvm-agent <command>");
  assert.is((await run(["help"])).code, 0);
});

test("an unknown command and an unknown option are usage errors", async () => {
  const unknown = await run(["frobnicate"]);
  assert.is(unknown.code, 2);
  assert.match(unknown.err, 'unknown command "frobnicate"');
  const badOpt = await run(["parse-console", "--nope", "x"]);
  assert.is(badOpt.code, 2);
  assert.match(badOpt.err, "Unknown option '--nope'");
});

test("parse-console --json lists failures most important first", async () => {
  const log = join(dir, "oops.log");
  writeFileSync(
    log,
    [
      "[   12.000000] random: crng init done",
      "[   13.123456] BUG: kernel NULL pointer dereference, address: 0000000000000008",
      "[   13.123500] #PF: supervisor read access in kernel mode",
      "[   13.123600] Oops: 0000 [#1] PREEMPT SMP NOPTI",
      "[   13.123700] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0-13-amd64 #1  Debian 6.1.55-1",
      "[   13.123800] RIP: 0010:ext4_do_writepages+0x1a/0x30 [ext4]",
      "[   13.123900] Call Trace:",
      "[   13.124000]  <TASK>",
      "[   13.124100]  ext4_writepages+0x10/0x20 [ext4]",
      "[   13.124200]  do_writepages+0xc1/0x1c0",
      "[   13.124300]  </TASK>",
      "[   13.125000] Kernel panic - not syncing: Fatal exception",
    ].join("\n"),
  );
  const res = await run(["parse-console", log, "--json"]);
  assert.is(res.code, 0, res.err);
  const { failures } = JSON.parse(res.out) as {
    failures: { title: string; class: string; fingerprint: string; line: number }[];
  };
  assert.ok(failures.length >= 1);
  assert.match(failures[0]!.title, /NULL pointer dereference/);
  assert.is(failures[0]!.class, "oops");
  assert.match(failures[0]!.fingerprint, /^[0-9a-f]{16}$/);
  assert.is(failures[0]!.line, 2);
});

test("parse-console on a clean log prints an empty list", async () => {
  const log = join(dir, "clean.log");
  writeFileSync(log, "[    0.000000] Linux version 6.1.0\n[    1.0] shadowvm-guest: ready\n");
  const res = await run(["parse-console", log, "--json"]);
  assert.equal(JSON.parse(res.out), { failures: [] });
});

test("parse-console on a missing file is one clear usage error", async () => {
  const res = await run(["parse-console", join(dir, "missing.log")]);
  assert.is(res.code, 2);
  assert.match(res.err, /cannot read .*missing\.log: ENOENT/);
});

test("campaigns lists each VM's last campaign, its back-off and when the next is due", async () => {
  const data = join(dir, "campaigns-data");
  const empty = await run(["campaigns", "--data-dir", data]);
  assert.is(empty.code, 0);
  assert.match(empty.err, "no campaigns have run on this host yet");
  const t = Date.parse("2026-11-28T00:00:00Z");
  writeCampaignHistory(join(data, "campaigns.json"), {
    "u-db": { vm_name: "db-1", last_started_ms: t, last_finished_ms: t + 600_000 },
    "u-web": {
      vm_name: "web-1",
      last_started_ms: t,
      last_finished_ms: t + 300_000,
      unfinished_in_a_row: 2,
      last_error: "the control shadow failed the same way on a fresh capture: the VM fails without stress",
    },
  });
  const res = await run(["campaigns", "--data-dir", data, "--json"]);
  assert.is(res.code, 0, res.err);
  const rows = JSON.parse(res.out) as CampaignStatus[];
  // Defaults: interval_s 6 h, backoff_max_s 48 h; two unfinished in a row -> 24 h.
  assert.equal(
    rows.map((r) => [r.vm_name, r.state, r.unfinished_in_a_row, r.next_due]),
    [
      ["db-1", "finished", 0, "2026-11-28T06:00:00.000Z"],
      ["web-1", "unfinished", 2, "2026-11-29T00:00:00.000Z"],
    ],
  );
  const table = await run(["campaigns", "--data-dir", data]);
  assert.match(
    table.out,
    /web-1\s+u-web\s+.*unfinished\s+2\s+2026-11-29T00:00:00.000Z\s+the control shadow failed/,
  );
  writeFileSync(join(data, "campaigns.json"), "[1]");
  const bad = await run(["campaigns", "--data-dir", data]);
  assert.is(bad.code, 1);
  assert.match(bad.err, /campaigns\.json is not a campaign history: expected an object of VM uuid/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
