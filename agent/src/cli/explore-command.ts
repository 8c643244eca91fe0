// `shadowvm-agent explore`: with --oracle the explorer's own command (explorer/cli.ts); with --vm a
// campaign on real shadows of a production VM (campaign/shadow-campaign.ts), printed like an oracle
// campaign plus the signatures' titles. The results are shipped through the agent's spool and
// recorded in its signature database when no running agent holds them (LevelDB allows one
// process); otherwise they are only printed, and the command says so.
import { describeError, silentLogger } from "@shadowvm/shared";
import { describeCampaignEvent, explorerStateDir } from "../campaign/campaign-scheduler.js";
import { type CampaignEvent, runShadowCampaign } from "../campaign/shadow-campaign.js";
import { type AgentConfig, loadAgentConfig } from "../config/agent-config.js";
import {
  EXPLORE_USAGE,
  ExplorerStateStore,
  ExploreUsageError,
  formatSummary,
  loadVmProfile,
  type ParsedArgs,
  type ProductionVmData,
  parseExploreArgs,
  runOracleCampaign,
} from "../explorer/index.js";
import { SignatureDb, signatureDbPath } from "../signatures/index.js";
import { Spool } from "../spool/spool.js";
import { spoolOptions } from "../telemetry/agent-service.js";
import { type CommandContext, createDriverFor, UsageError } from "./cli-context.js";

export { EXPLORE_USAGE };

export async function exploreCommand(ctx: CommandContext): Promise<number> {
  const io = {
    stdout: (t: string) => ctx.io.out(t.replace(/\n$/, "")),
    stderr: (t: string) => ctx.io.err(t.replace(/\n$/, "")),
  };
  let args: ParsedArgs | "help";
  let vmProfile: ProductionVmData | undefined;
  try {
    args = parseExploreArgs(ctx.args);
    if (args !== "help" && !args.oracle && args.vmProfile) vmProfile = await loadVmProfile(args.vmProfile);
  } catch (err) {
    if (err instanceof ExploreUsageError) throw new UsageError(err.message);
    throw err;
  }
  if (args === "help") {
    io.stdout(`${EXPLORE_USAGE}\n`);
    return 0;
  }
  if (args.oracle) return runOracleCampaign(args, io);
  const config = loadAgentConfig({ file: args.config, dataDir: args.dataDir }, ctx.env);
  return exploreOnShadows(ctx, args, config, vmProfile);
}

/** LevelDB stores a running agent may hold: opened when free, skipped (and said) when not. */
async function openOptional<T>(
  what: string,
  open: () => Promise<T>,
  say: (t: string) => void,
): Promise<T | undefined> {
  try {
    return await open();
  } catch (err) {
    say(`explore: ${what} not used (${describeError(err)}); is shadowvm-agent serve running?`);
    return undefined;
  }
}

async function exploreOnShadows(
  ctx: CommandContext,
  args: ParsedArgs,
  config: AgentConfig,
  vmProfile: ProductionVmData | undefined,
): Promise<number> {
  const say = (t: string) => ctx.io.err(t);
  const logger = silentLogger();
  const spool = await openOptional(
    "the spool (results will not reach the collector)",
    () => Spool.open(spoolOptions(config)),
    say,
  );
  const signatures = await openOptional(
    "the signature database",
    () => SignatureDb.open(signatureDbPath(config)),
    say,
  );
  const explorerStore = await openOptional(
    "the explorer's saved state",
    async () => {
      const s = new ExplorerStateStore(args.stateDb ?? explorerStateDir(config));
      await s.open();
      return s;
    },
    say,
  );
  const driver = createDriverFor(config);
  const abort = new AbortController();
  const onSignal = () => {
    say("explore: stopping every shadow");
    abort.abort();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const t0 = Date.now();
  try {
    if (spool && !spool.admitShadowWork())
      throw new Error("the agent's spool is nearly full; shadow work waits until the collector catches up");
    const given = args.given;
    const report = await runShadowCampaign(
      {
        config,
        driver,
        sink: spool,
        signatures,
        explorerStore,
        logger,
        signal: abort.signal,
        onEvent: (e) => {
          const text = describeEvent(e, t0);
          if (text) say(text);
        },
      },
      {
        vm: args.vm!,
        budget: args.budget,
        parallel: given.has("--batch-size") ? args.batchSize : config.campaigns.parallel,
        strategy: args.strategy,
        durationS: given.has("--duration") ? args.durationS : config.campaigns.duration_s,
        control: args.control,
        faults: args.faults ?? config.campaigns.faults,
        seed: args.seed,
        vmProfile,
      },
    );
    if (!report.shipped) say("explore: the results were not spooled for the collector (see above)");
    const r = report.explore;
    if (args.json) {
      ctx.io.out(
        JSON.stringify({
          trials: r.trials.map((t) => ({ profile: t.profile, outcome: t.outcome })),
          signatures_found: r.signatures_found,
          boundary: r.boundary,
          signatures: report.titles,
          campaign: report.campaignId,
          capture: report.capture.id,
          ...(report.captures.length > 1 ? { captures: report.captures.map((c) => c.id) } : {}),
          ...(r.error ? { error: r.error } : {}),
        }),
      );
    } else {
      ctx.io.out(formatSummary(r).replace(/\n$/, ""));
      for (const [fp, t] of Object.entries(report.titles)) ctx.io.out(`  ${fp} = ${t.class}: ${t.title}`);
    }
    if (r.error) {
      say(`explore: stopped early: ${r.error.message}`);
      return 1;
    }
    return 0;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await driver.close();
    await explorerStore?.close();
    await signatures?.close();
    await spool?.close();
  }
}

/** One progress line per campaign event (stderr), the same events `serve` logs as JSON. */
function describeEvent(e: CampaignEvent, t0: number): string | undefined {
  const line = describeCampaignEvent(e);
  if (!line) return undefined;
  const fields = Object.entries(line.fields)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return `+${((Date.now() - t0) / 1000).toFixed(0)}s ${line.msg} ${fields}`;
}
