// The README's main job: the whole loop on the embedded demo (whole-loop/whole-loop.ts) with the
// product's own binaries: Alertmanager, `shadowvm-collector serve`, two demo VMs under QEMU (one
// with a slow memory leak, one healthy), `shadowvm-agent serve` with a campaign on the leaking one;
// it shows progress, then the risk table, the alerts as Alertmanager received them and the HTML
// report.
//
// Usage: node agent/dist/demo/main-job.js [--keep] [--until-production-fails] [--json-summary FILE]
//          [--work-dir DIR] [--reports-dir DIR] [--leak-kb-s N] [--budget N] [--parallel K]
//          [--duration S] [--first-delay S] [--timeout S]
// Ctrl-C (or any error) stops everything (agent first, which tears its shadows down) and removes
// the work dir; a second Ctrl-C kills everything at once (shadows reaped from the agent's registry).
// Exit code 0 when the loop produced a risk table from real shadow failures (and, with
// --until-production-fails, production failed), 1 otherwise, 130 when interrupted.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { describeError } from "@shadowvm/shared";
import {
  runWholeLoop,
  stopWholeLoopNow,
  type WholeLoopOptions,
  type WholeLoopSummary,
} from "./whole-loop/whole-loop.js";

const USAGE = `Usage: node agent/dist/demo/main-job.js [options]   (bash deploy/demo.sh [options])

  --keep                     leave everything running at the end (prints how to stop it)
  --until-production-fails   go on until demo-production's own console shows its OOM kill, and
                             report the alert's lead time
  --json-summary FILE        write the times, alerts, risk and runs as JSON
  --work-dir DIR             default: a new /tmp/shadowvm-demo-* (removed at the end unless --keep)
  --reports-dir DIR          where the HTML report goes (default ~/.cache/shadowvm/demo-reports)
  --leak-kb-s N              demo-production's memory leak, KiB/s (default 350)
  --budget N, --parallel K, --duration S, --first-delay S   the campaign (default 9, 3, 75, 25)
  --timeout S                give up after S seconds (default 900, 1500 with --until-production-fails)`;

function numOpt(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} expects a positive number (actual: ${v})`);
  return n;
}

async function main(): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      options: {
        keep: { type: "boolean" },
        "until-production-fails": { type: "boolean" },
        "json-summary": { type: "string" },
        "work-dir": { type: "string" },
        "reports-dir": { type: "string" },
        "leak-kb-s": { type: "string" },
        budget: { type: "string" },
        parallel: { type: "string" },
        duration: { type: "string" },
        "first-delay": { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values["help"]) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupts++;
    if (interrupts > 1) {
      process.stderr.write("\ndemo: second interrupt: killing everything now\n");
      stopWholeLoopNow();
      process.exit(130);
    }
    process.stdout.write(
      `\n${sig}: stopping the agent, its shadows, the collector, Alertmanager and the VMs\n`,
    );
    controller.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const options: WholeLoopOptions = { signal: controller.signal };
  try {
    const str = (k: string) => values[k] as string | undefined;
    if (values["keep"]) options.keep = true;
    if (values["until-production-fails"]) options.untilProductionFails = true;
    if (str("work-dir")) options.workDir = str("work-dir")!;
    if (str("reports-dir")) options.reportsDir = str("reports-dir")!;
    const nums: [string, "leakKbS" | "budget" | "parallel" | "durationS" | "firstDelayS" | "timeoutS"][] = [
      ["leak-kb-s", "leakKbS"],
      ["budget", "budget"],
      ["parallel", "parallel"],
      ["duration", "durationS"],
      ["first-delay", "firstDelayS"],
      ["timeout", "timeoutS"],
    ];
    for (const [flag, key] of nums) {
      const v = numOpt(str(flag), flag);
      if (v !== undefined) options[key] = v;
    }
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    return 2;
  }

  let summary: WholeLoopSummary | undefined;
  let code = 1;
  try {
    summary = await runWholeLoop(options);
    code = summary.ok ? 0 : 1;
  } catch (err) {
    summary = (err as { summary?: WholeLoopSummary }).summary;
    if (controller.signal.aborted) {
      code = 130;
    } else {
      process.stderr.write(`\ndemo: error: ${describeError(err)}\n`);
    }
  }
  if (summary) {
    const jsonFile = values["json-summary"] as string | undefined;
    if (jsonFile) writeFileSync(jsonFile, `${JSON.stringify(summary, null, 2)}\n`);
    process.stdout.write(`\n${closingLines(summary, code)}\n`);
  }
  return code;
}

function closingLines(s: WholeLoopSummary, code: number): string {
  const at = (ms: number | undefined) =>
    ms === undefined ? "-" : `+${((ms - s.started_at_ms) / 1000).toFixed(0)} s`;
  const lines = [
    `==> ${code === 0 ? "done" : code === 130 ? "interrupted" : "FAILED"} in ${s.duration_s?.toFixed(0) ?? "?"} s`,
    `first shadow failure stored ${at(s.first_shadow_failure_stored_at_ms)}, alert in Alertmanager ${at(s.alert_received_at_ms)}${s.mode === "until-production-fails" ? `, ${"demo-production"} failed ${at(s.production_failed_at_ms)}` : ""}`,
  ];
  if (s.lead_time_s !== undefined)
    lines.push(`lead time (production failure - alert): ${s.lead_time_s.toFixed(0)} s`);
  lines.push(`demo-healthy alerted: ${s.healthy_alerted ? "YES" : "no"}`);
  if (s.report_html) lines.push(`HTML report: ${s.report_html}`);
  for (const p of s.problems) lines.push(`problem: ${p}`);
  return lines.join("\n");
}

process.exitCode = await main();
