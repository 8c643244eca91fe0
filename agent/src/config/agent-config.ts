// The agent's configuration: /etc/shadowvm/agent.yaml (see deploy/config/agent.example.yaml),
// overridden by SHADOWVM_AGENT__<SECTION>__<KEY> environment variables, then by CLI flags.
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { loadConfig } from "@shadowvm/shared";
import { z } from "zod";

export const AGENT_ENV_PREFIX = "SHADOWVM_AGENT__";
export const DEFAULT_AGENT_CONFIG_FILE = "/etc/shadowvm/agent.yaml";

const hypervisorSchema = z
  .object({
    driver: z.enum(["qemu"]).default("qemu"),
    /** QMP sockets to discover VMs by (globs with * and ?). */
    qmp_sockets: z
      .array(z.string().min(1))
      .default(["/var/run/qemu-server/*.qmp", "/run/shadowvm/vms/*/qmp.sock"]),
    connect_timeout_ms: z.number().int().positive().default(5000),
    command_timeout_ms: z.number().int().positive().default(10_000),
  })
  .strict();

export const agentConfigSchema = z
  .object({
    /** This host's identity towards the collector. */
    agent_id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected 1-63 letters, digits, '.', '_' or '-'")
      .default(hostname()),
    /** Where the agent keeps its state: spool, capture store, shadows' working directories. */
    data_dir: z.string().min(1).default("/var/lib/shadowvm"),
    log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    hypervisor: hypervisorSchema.prefault({}),
  })
  .strict();

export type AgentConfig = z.output<typeof agentConfigSchema>;

export interface AgentConfigOverrides {
  file?: string | undefined;
  dataDir?: string | undefined;
}

/**
 * Loads the config file (the default path only if it exists), environment overrides, then the
 * CLI's overrides. Throws ConfigError naming the bad key.
 */
export function loadAgentConfig(
  overrides: AgentConfigOverrides = {},
  env: Record<string, string | undefined> = process.env,
): AgentConfig {
  const file =
    overrides.file ?? (existsSync(DEFAULT_AGENT_CONFIG_FILE) ? DEFAULT_AGENT_CONFIG_FILE : undefined);
  const config = loadConfig(agentConfigSchema, { file, env, envPrefix: AGENT_ENV_PREFIX });
  if (overrides.dataDir) config.data_dir = overrides.dataDir;
  return config;
}
