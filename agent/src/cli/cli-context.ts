// What every agent command gets: the parsed global options, the validated config, the driver,
// and the output streams (injectable so commands are testable in-process).
import type { ParseArgsConfig } from "node:util";
import { type BaseCommandContext, parseOptions } from "@shadowvm/shared";
import type { CapturingDriver } from "../capture/capture-service.js";
import { type AgentConfig, loadAgentConfig } from "../config/agent-config.js";
import { LibvirtDriver } from "../hypervisor/libvirt/libvirt-driver.js";
import { QemuDriver } from "../hypervisor/qemu/qemu-driver.js";

export { type Output, UsageError } from "@shadowvm/shared";

export const GLOBAL_OPTIONS = {
  config: { type: "string" },
  "data-dir": { type: "string" },
  qmp: { type: "string", multiple: true },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

export const GLOBAL_USAGE = `Options for every command:
  --config FILE     agent config (default /etc/shadowvm/agent.yaml when it exists)
  --data-dir DIR    state directory (overrides data_dir)
  --qmp PATH        add a VM by its QMP socket (repeatable), besides the configured ones
  --json            machine-readable output
  -h, --help        this help`;

export type CommandContext = BaseCommandContext;

export interface GlobalValues {
  config?: string;
  "data-dir"?: string;
  qmp?: string[];
  json?: boolean;
  help?: boolean;
}

export interface ParsedCommand {
  /** Global options typed; a command's own options are read by name. */
  values: GlobalValues & Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  config: AgentConfig;
  createDriver(): CapturingDriver;
}

/** Parses the command's own options plus the global ones, then loads the config. */
export function parseCommand(ctx: CommandContext, options: ParseArgsConfig["options"] = {}): ParsedCommand {
  const parsed = parseOptions(ctx.args, { ...GLOBAL_OPTIONS, ...options });
  const values = parsed.values as ParsedCommand["values"];
  const config = loadAgentConfig({ file: values.config, dataDir: values["data-dir"] }, ctx.env);
  return {
    values,
    positionals: parsed.positionals,
    config,
    createDriver: () => createDriverFor(config, values.qmp ?? []),
  };
}

/** The configured hypervisor driver; `sockets` adds VMs by QMP socket (qemu driver). */
export function createDriverFor(config: AgentConfig, sockets: string[] = []): CapturingDriver {
  return config.hypervisor.driver === "libvirt"
    ? new LibvirtDriver({
        uri: config.hypervisor.libvirt_uri,
        connectTimeoutMs: config.hypervisor.connect_timeout_ms,
        commandTimeoutMs: config.hypervisor.command_timeout_ms,
      })
    : new QemuDriver({
        socketGlobs: config.hypervisor.qmp_sockets,
        sockets,
        connectTimeoutMs: config.hypervisor.connect_timeout_ms,
        commandTimeoutMs: config.hypervisor.command_timeout_ms,
      });
}
