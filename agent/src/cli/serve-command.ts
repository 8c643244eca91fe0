// `shadowvm-agent serve`: runs the agent's services (telemetry, the spool and the link to the
// collector, and the campaigns when enabled) until SIGTERM or SIGINT, then stops gracefully (a
// running campaign's shadows are torn down); a second signal exits at once.
import { createLogger, type Logger } from "@shadowvm/shared";
import type { AgentService } from "../telemetry/agent-service.js";
import { type CommandContext, type ParsedCommand, parseCommand, UsageError } from "./cli-context.js";

export const SERVE_USAGE = `Usage: shadowvm-agent serve [--config FILE] [--data-dir DIR]

Runs the agent: every telemetry.interval_s it samples the host and each VM found through the
configured QMP sockets, spools the samples (and inventory changes) in <data_dir>/spool, and sends
the spool to collector.url over wss://, enrolling with collector.enrollment_token(_file) the first
time. With campaigns.enabled it also shadows VMs by itself: after campaigns.first_delay_s and then
every campaigns.interval_s per VM, a live capture, campaigns.budget stressed shadow runs chosen by
the explorer (campaigns.parallel at a time, a control shadow first), failures detected and sent to
the collector. Leftovers of earlier shadows are reaped at start-up. /metrics, /healthz and /readyz
listen on metrics.host:metrics.port. Logs are JSON lines on stdout. SIGTERM or SIGINT stops it
gracefully.`;

export async function serveCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx);
  if (cmd.positionals.length)
    throw new UsageError(`serve takes no arguments (got ${cmd.positionals.join(" ")})`);
  const logger = createLogger({
    service: "shadowvm-agent",
    level: cmd.config.log_level,
    fd: 1,
    base: { agent_id: cmd.config.agent_id },
  });
  // Loaded here, not at the top, so other commands do not pay for the service's modules.
  const { startAgentService } = await import("../telemetry/agent-service.js");
  const { describeReap, reapFoundNothing, reapShadowLeftovers } = await import("./shadow-command.js");
  // Shadows of an agent that died (QEMU processes, namespaces, cgroups, overlays, plaintext
  // restores) go before anything new starts.
  const reaped = await reapShadowLeftovers(cmd.config);
  if (!reapFoundNothing(reaped)) logger.warn({ reaped }, `agent: ${describeReap(reaped)}`);
  const service = await startAgentService(cmd.config, { logger, driver: cmd.createDriver() });
  const campaigns = cmd.config.campaigns.enabled ? await startCampaigns(cmd, service, logger) : undefined;
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      process.once("SIGTERM", () => process.exit(143));
      process.once("SIGINT", () => process.exit(130));
      resolve();
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  await campaigns?.stop();
  await service.close();
  return 0;
}

/** The campaign scheduler beside the telemetry service, sharing its spool. */
async function startCampaigns(
  cmd: ParsedCommand,
  service: AgentService,
  logger: Logger,
): Promise<{ stop(): Promise<void> }> {
  const { CampaignScheduler } = await import("../campaign/campaign-scheduler.js");
  const { SignatureDb, signatureDbPath } = await import("../signatures/index.js");
  const signatures = await SignatureDb.open(signatureDbPath(cmd.config));
  const scheduler = new CampaignScheduler({
    config: cmd.config,
    logger,
    createDriver: () => cmd.createDriver(),
    spool: service.spool,
    signatures,
    operatingPoint: (uuid) => service.telemetry?.operatingPoint(uuid),
  });
  scheduler.start();
  return {
    async stop() {
      await scheduler.stop();
      await signatures.close();
    },
  };
}
