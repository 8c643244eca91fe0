// The README's main job on the embedded demo: boot the demo guest as a "production" VM under real
// QEMU and show what the agent sees of it, through the agent's own command line (the same path an
// operator uses). Grows with the project into the full loop (capture, shadows, detection, risk).
//
// Usage: node agent/dist/demo/main-job.js [--keep] [--work-dir DIR]
//   --keep       leave the demo VM running at the end (prints how to stop it)
// Ctrl-C at any point stops the VM and removes its working directory.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { describeError } from "@shadowvm/shared";
import { type DemoVm, startDemoVm } from "./demo-vm.js";

const AGENT_BIN = resolve(new URL("../../bin/shadowvm-agent.js", import.meta.url).pathname);

function step(text: string): void {
  process.stdout.write(`\n==> ${text}\n`);
}

/** Runs the agent CLI as its own process and streams its output. */
function runAgent(args: string[]): Promise<number> {
  process.stdout.write(`$ shadowvm-agent ${args.join(" ")}\n`);
  return new Promise((res) => {
    const child = spawn(process.execPath, [AGENT_BIN, ...args], { stdio: ["ignore", "inherit", "inherit"] });
    child.on("exit", (code) => res(code ?? 1));
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { keep: { type: "boolean" }, "work-dir": { type: "string" } },
    allowPositionals: false,
  });
  const workDir = values["work-dir"] ?? mkdtempSync(join(tmpdir(), "shadowvm-demo-"));
  let vm: DemoVm | undefined;
  let stopping = false;
  const cleanup = async () => {
    if (stopping || !vm) return;
    stopping = true;
    await vm.stop({ removeWorkDir: true });
  };
  process.once("SIGINT", () => {
    process.stdout.write("\ninterrupted: stopping the demo VM and cleaning up\n");
    void cleanup().then(() => process.exit(130));
  });

  try {
    step(
      "booting the demo production VM (Debian kernel, busybox userland, HTTP service, ext4 writer) under QEMU",
    );
    vm = await startDemoVm({ name: "demo-production", workDir });
    const ready = await vm.waitReady(180_000);
    process.stdout.write(`guest ready after ${(ready.readyMs / 1000).toFixed(1)} s (QMP ${vm.qmpSocket})\n`);

    step("inventory as the agent reads it over QMP");
    const code = await runAgent(["vms", "--qmp", vm.qmpSocket]);
    if (code !== 0) throw new Error(`shadowvm-agent vms exited with ${code}`);

    if (values.keep) {
      process.stdout.write(
        `\n--keep: the demo VM keeps running (pid ${vm.pid}, work dir ${workDir}); stop it with: kill ${vm.pid}\n`,
      );
      vm.detach();
      vm = undefined;
    }
    return 0;
  } catch (err) {
    process.stderr.write(`demo: error: ${describeError(err)}\n`);
    return 1;
  } finally {
    await cleanup();
  }
}

process.exitCode = await main();
