// The scheduler's bookkeeping without QEMU: which VM is due, and the back-off after campaigns that
// end unfinished. The campaign itself is a stand-in here; real campaigns run in
// test/src/explore-real-shadows.test.ts and test/src/unusable-capture.test.ts.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import type { CapturingDriver } from "../capture/capture-service.js";
import { type AgentConfig, agentConfigSchema } from "../config/agent-config.js";
import type { VmInventory } from "../hypervisor/driver.js";
import type { CampaignHistoryEntry } from "./campaign-history.js";
import { CampaignScheduler } from "./campaign-scheduler.js";
import type { CampaignReport } from "./shadow-campaign.js";

const HOUR = 3600_000;

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recordingLogger(lines: LogLine[]): Logger {
  const at =
    (level: string) =>
    (fields: Record<string, unknown>, msg: string): void => {
      lines.push({ level, msg, fields });
    };
  const logger = { info: at("info"), warn: at("warn"), error: at("error"), child: () => logger };
  return logger as unknown as Logger;
}

const VM: VmInventory = { name: "web-1", uuid: "u-web-1", state: "running" } as VmInventory;

function report(error?: string): CampaignReport {
  return {
    explore: {
      trials: [],
      signatures_found: [],
      boundary: {},
      ...(error ? { error: new Error(error) } : {}),
    },
  } as unknown as CampaignReport;
}

function scheduler(dataDir: string, clock: { now: number }, outcomes: (string | Error | undefined)[]) {
  const config: AgentConfig = agentConfigSchema.parse({
    data_dir: dataDir,
    campaigns: { enabled: true, interval_s: 3600, backoff_max_s: 4 * 3600, first_delay_s: 0 },
  });
  const lines: LogLine[] = [];
  const started: number[] = [];
  const driver = { listVms: async () => ({ vms: [VM], problems: [] }), close: async () => {} };
  const s = new CampaignScheduler({
    config,
    logger: recordingLogger(lines),
    createDriver: () => driver as unknown as CapturingDriver,
    spool: { append: async () => {}, admitShadowWork: () => true } as never,
    signatures: {} as never,
    now: () => clock.now,
    runCampaign: async () => {
      started.push(clock.now);
      clock.now += 10 * 60_000; // a campaign takes ten minutes
      const next = outcomes.shift();
      if (next instanceof Error) throw next;
      return report(next);
    },
  });
  const history = () =>
    JSON.parse(readFileSync(join(dataDir, "campaigns.json"), "utf8")) as Record<string, CampaignHistoryEntry>;
  return { s, lines, started, history };
}

test("campaigns that end unfinished back off; a finished one restores the interval", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-sched-"));
  try {
    const clock = { now: 10 * HOUR };
    const unstressed =
      "the control shadow failed the same way on a fresh capture (kernel panic): the VM fails without stress";
    const { s, lines, started, history } = scheduler(dir, clock, [
      unstressed,
      new Error("capture failed: disk full"),
      undefined,
      undefined,
    ]);
    const t0 = clock.now;
    // Poll every 15 minutes for 12 hours, as the scheduler's timer would (it re-checks often).
    for (let poll = 0; poll < 12 * 4; poll++) {
      clock.now = t0 + poll * 15 * 60_000;
      await s.runDue();
    }
    const gaps = started.slice(1).map((t, i) => (t - started[i]!) / HOUR);
    // 1st unfinished -> 2 h, 2nd unfinished -> 4 h (the cap), then finished -> 1 h.
    assert.equal(gaps.slice(0, 3), [2, 4, 1], `gaps between campaign starts (h): ${gaps.join(", ")}`);
    const backoffs = lines.filter((l) => l.msg === "campaigns: backing off");
    assert.is(backoffs.length, 2);
    assert.equal(backoffs[0]!.fields, {
      vm: "web-1",
      unfinished_in_a_row: 1,
      next_campaign_in_s: 2 * 3600 - 600,
      reason: unstressed,
    });
    assert.is(backoffs[1]!.fields.reason, "capture failed: disk full");
    assert.ok(lines.some((l) => l.level === "error" && l.msg === "campaigns: campaign failed"));
    const entry = history()[VM.uuid]!;
    assert.is(entry.unfinished_in_a_row, undefined, "a finished campaign clears the count");
    assert.is(entry.last_error, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the back-off survives a restart of the agent (campaigns.json)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-sched-"));
  try {
    const clock = { now: 10 * HOUR };
    const first = scheduler(dir, clock, ["inconclusive twice"]);
    await first.s.runDue();
    assert.is(first.history()[VM.uuid]!.unfinished_in_a_row, 1);
    const again = scheduler(dir, clock, [undefined]);
    clock.now = first.started[0]! + 1.5 * HOUR;
    await again.s.runDue();
    assert.is(again.started.length, 0, "not due 1.5 h after an unfinished campaign");
    clock.now = first.started[0]! + 2 * HOUR;
    await again.s.runDue();
    assert.is(again.started.length, 1, "due 2 h after it");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an unreadable history is kept aside and campaigns go on", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-sched-"));
  try {
    writeFileSync(join(dir, "campaigns.json"), "{torn write");
    const clock = { now: 10 * HOUR };
    const { s, lines, started, history } = scheduler(dir, clock, [undefined]);
    await s.runDue();
    assert.is(started.length, 1, "the VM counts as due");
    const warning = lines.find((l) => l.msg === "campaigns: history unreadable, starting over");
    assert.ok(warning, JSON.stringify(lines));
    assert.match(String(warning.fields.err), /cannot be read as the campaign history/);
    const kept = readdirSync(dir).filter((f) => f.startsWith("campaigns.json.unreadable-"));
    assert.is(kept.length, 1);
    assert.is(readFileSync(join(dir, kept[0]!), "utf8"), "{torn write");
    assert.equal(history()[VM.uuid]!.vm_name, "web-1");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a history that cannot be written is logged and retried, not fatal", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-sched-"));
  try {
    // data_dir is a plain file here, so campaigns.json cannot be created under it.
    const notADir = join(dir, "data");
    writeFileSync(notADir, "");
    const clock = { now: 10 * HOUR };
    const { s, lines, started } = scheduler(notADir, clock, [undefined]);
    s.start();
    const deadline = Date.now() + 30_000;
    while (!lines.some((l) => l.msg === "campaigns: check failed") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await s.stop();
    const failed = lines.find((l) => l.msg === "campaigns: check failed");
    assert.ok(failed, JSON.stringify(lines));
    assert.match(String(failed.fields.err), /ENOTDIR|EEXIST/);
    assert.is(started.length, 0, "no campaign without a history to record it in");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
