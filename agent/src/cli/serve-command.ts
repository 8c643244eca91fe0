// `shadowvm-agent serve`: runs the agent's services (today: telemetry, the spool and the link to
// the collector) until SIGTERM or SIGINT, then stops gracefully; a second signal exits at once.
import { createLogger } from "@shadowvm/shared";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const SERVE_USAGE = `Usage: shadowvm-agent serve [--config FILE] [--data-dir DIR]

Runs the agent: every telemetry.interval_s it samples the host and each VM found through the
configured QMP sockets, spools the samples (and inventory changes) in <data_dir>/spool, and sends
the spool to collector.url over wss://, enrolling with collector.enrollment_token(_file) the first
time. /metrics, /healthz and /readyz listen on metrics.host:metrics.port. Logs are JSON lines on
stdout. SIGTERM or SIGINT stops it gracefully.`;

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
  const service = await startAgentService(cmd.config, { logger, driver: cmd.createDriver() });
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
  await service.close();
  return 0;
}
