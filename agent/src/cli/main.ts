// shadowvm-agent: the host agent's command line. Each command lives in its own module; the shared
// frame (shared/src/cli/command-line.ts) dispatches and turns errors into one clear line and an
// exit code: 0 ok, 1 the operation failed, 2 bad usage or configuration.
import { type CliProgram, runProgram, stdio } from "@shadowvm/shared";
import { CAMPAIGNS_USAGE, campaignsCommand } from "./campaigns-command.js";
import { CAPTURE_USAGE, CAPTURES_USAGE, captureCommand, capturesCommand } from "./capture-commands.js";
import { type CommandContext, GLOBAL_USAGE, type Output } from "./cli-context.js";
import { ENROLL_USAGE, enrollCommand } from "./enroll-command.js";
import { EXPLORE_USAGE, exploreCommand } from "./explore-command.js";
import { PARSE_CONSOLE_USAGE, parseConsoleCommand } from "./parse-console-command.js";
import { SERVE_USAGE, serveCommand } from "./serve-command.js";
import { SHADOW_USAGE, shadowCommand } from "./shadow-command.js";
import { VMS_USAGE, vmsCommand } from "./vms-command.js";

const COMMANDS: CliProgram<CommandContext>["commands"] = {
  "parse-console": {
    summary: "find and sign the failures in a Linux console log",
    usage: PARSE_CONSOLE_USAGE,
    run: parseConsoleCommand,
  },
  vms: { summary: "list the VMs this host runs, read over QMP", usage: VMS_USAGE, run: vmsCommand },
  explore: {
    summary: "search stress profiles for failures (against an oracle command or real shadows)",
    usage: EXPLORE_USAGE,
    run: exploreCommand,
  },
  capture: {
    summary: "live, consistent capture of a VM into the capture store",
    usage: CAPTURE_USAGE,
    run: captureCommand,
  },
  captures: {
    summary: "list, verify or remove stored captures",
    usage: CAPTURES_USAGE,
    run: capturesCommand,
  },
  campaigns: {
    summary: "when serve last shadowed each VM, how it ended, and when the next campaign is due",
    usage: CAMPAIGNS_USAGE,
    run: campaignsCommand,
  },
  shadow: {
    summary: "run isolated, stressed shadows of a capture and report how the guest breaks",
    usage: SHADOW_USAGE,
    run: shadowCommand,
  },
  serve: {
    summary: "run the agent: telemetry, spool, link to the collector",
    usage: SERVE_USAGE,
    run: serveCommand,
  },
  enroll: {
    summary: "enroll with the collector using a token, then exit",
    usage: ENROLL_USAGE,
    run: enrollCommand,
  },
};

const PROGRAM: CliProgram<CommandContext> = {
  name: "shadowvm-agent",
  tagline: "shadows production VMs to predict their failures.",
  globalUsage: GLOBAL_USAGE,
  commands: COMMANDS,
};

export function main(
  argv: string[],
  io: Output = stdio,
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  return runProgram(PROGRAM, argv, { io, env });
}
