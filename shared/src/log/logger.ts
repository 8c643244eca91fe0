// Structured JSON logs, one object per line: journald keeps them as they are and `jq` reads them.
// Services log to stdout; CLI commands log to stderr so stdout stays clean for tables and --json.
import { type Logger, pino } from "pino";

export type { Logger } from "pino";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

export interface LoggerOptions {
  service: string;
  level?: LogLevel;
  /** 1 = stdout (services), 2 = stderr (CLI). */
  fd?: 1 | 2;
  /** Fields on every line, e.g. { agent_id }. */
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? "info",
      base: { service: options.service, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: options.fd ?? 1, sync: true }),
  );
}

/** A logger that drops everything: for unit tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
