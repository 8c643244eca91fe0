// `shadowvm-collector serve`: runs the collector until SIGTERM/SIGINT, then stops gracefully
// (queued frames are committed and acknowledged before connections close).
import { createLogger } from "@shadowvm/shared";
import { startCollector } from "../service.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const SERVE_USAGE = `Usage: shadowvm-collector serve [--config FILE]

Runs the collector: the agents' WebSocket endpoint (ingest.host:ingest.port, wss:// with
tls.cert_file/tls.key_file), the DuckDB store (<data_dir>/shadowvm.duckdb) and the operations
endpoints /metrics, /healthz, /readyz (metrics.host:metrics.port). Logs are JSON lines on stdout.
SIGTERM or SIGINT stops it gracefully.`;

export async function serveCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx);
  if (cmd.positionals.length)
    throw new UsageError(`serve takes no arguments (got ${cmd.positionals.join(" ")})`);
  const logger = createLogger({ service: "shadowvm-collector", level: cmd.config.log_level, fd: 1 });
  const service = await startCollector(cmd.config, logger);
  const signal = ctx.signal;
  await new Promise<void>((resolve) => {
    if (!signal) return; // in-process callers stop it through other means
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await service.close();
  return 0;
}
