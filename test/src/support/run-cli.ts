// Runs a service's CLI as its own process (the real path: compiled JS, plain node) and collects
// its exit code and output.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const AGENT_BIN = fileURLToPath(new URL("../../../agent/bin/shadowvm-agent.js", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(
  bin: string,
  args: string[],
  options: {
    env?: Record<string, string>;
    timeoutMs?: number;
    /** Called with each complete line the process writes to stderr, as it comes. */
    onStderrLine?: (line: string) => void;
  } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    let partial = "";
    child.stderr.on("data", (d) => {
      stderr += d;
      if (!options.onStderrLine) return;
      const lines = (partial + d).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) options.onStderrLine(l);
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${bin} ${args.join(" ")} did not finish within ${options.timeoutMs ?? 60_000} ms`));
    }, options.timeoutMs ?? 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
