// One shadow: an isolated copy of the captured VM, resumed exactly where the capture froze it.
// Start = overlays on the restored images, QEMU with the rewritten command line and
// `-incoming defer`, the memory stream handed over as an fd, `migrate-incoming`, `cont`.
// Stop = QEMU killed and its whole working directory (overlays, sockets, console) removed.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { ShadowvmError, waitFor } from "@shadowvm/shared";
import { freePort } from "../demo/demo-vm.js";
import { QmpClient } from "../hypervisor/qemu/qmp-client.js";
import type { RestoredCapture } from "./restored-capture.js";
import { buildShadowCommandLine, type NetworkIsolation } from "./shadow-command-line.js";

const execFileAsync = promisify(execFile);

export interface ShadowOptions {
  id: string;
  /** The shadow's own directory (0700): overlays, QMP socket, console log, guest sockets. */
  workDir: string;
  /** Guest TCP port the service probe reaches through a loopback forward. */
  servicePort?: number;
  startTimeoutMs?: number;
}

export interface ShadowVm {
  id: string;
  workDir: string;
  pid: number;
  qmpSocket: string;
  consoleLog: string;
  /** Loopback port forwarded to the guest's service port. */
  httpPort: number;
  guestChannels: Record<string, string>;
  process: ChildProcess;
  /** ms from the start request until the guest was running again. */
  startMs: number;
  consoleText(): string;
  exited(): boolean;
  stop(): Promise<void>;
}

function exitPromise(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once("exit", () => r()));
}

export async function startShadow(capture: RestoredCapture, options: ShadowOptions): Promise<ShadowVm> {
  const t0 = Date.now();
  const dir = options.workDir;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const qmpSocket = join(dir, "qmp.sock");
  const consoleLog = join(dir, "console.log");
  const httpPort = await freePort();
  const disks = await Promise.all(
    capture.disks.map(async (d) => {
      const overlay = join(dir, `overlay-${d.node.replace(/[^\w.-]/g, "_")}.qcow2`);
      await execFileAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", d.top, "-F", d.format, overlay]);
      return { node: d.node, productionFile: d.productionFile, overlay };
    }),
  );
  const guestIp = capture.guestAddresses
    .map((a) => a.ip ?? a.address)
    .find((ip) => ip && !ip.startsWith("127."));
  const network: NetworkIsolation = {
    mode: "user",
    forwards: [{ hostPort: httpPort, guestPort: options.servicePort ?? 80, ...(guestIp ? { guestIp } : {}) }],
  };
  const cmd = buildShadowCommandLine({
    productionArgv: capture.productionArgv,
    shadowName: options.id,
    disks,
    qmpSocket,
    consoleLog,
    socketDir: dir,
    network,
  });
  const child = spawn(cmd.binary, cmd.args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }
    await exitPromise(child);
  };
  try {
    await waitFor(
      () => {
        if (child.exitCode !== null)
          throw new ShadowvmError("shadow", "qemu_exited", `shadow QEMU exited: ${stderr.trim()}`);
        return existsSync(qmpSocket);
      },
      {
        timeoutMs: options.startTimeoutMs ?? 60_000,
        intervalMs: 10,
        what: `QMP socket of shadow ${options.id}`,
      },
    );
    const memoryFd = openSync(capture.memoryFile, "r");
    try {
      // Generous: several shadows starting at once on a busy host greet slowly.
      await QmpClient.passFd(qmpSocket, "capture-memory", memoryFd, { connectTimeoutMs: 60_000 });
    } finally {
      closeSync(memoryFd);
    }
    const qmp = await QmpClient.connect(qmpSocket, { connectTimeoutMs: 60_000, commandTimeoutMs: 60_000 });
    try {
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "events", state: true }],
      });
      const done = qmp.waitForEvent(
        "MIGRATION",
        (e) => ["completed", "failed"].includes(String(e.data["status"])),
        options.startTimeoutMs ?? 120_000,
      );
      await qmp.execute("migrate-incoming", { uri: "fd:capture-memory" });
      const result = await done;
      if (result.data["status"] !== "completed") {
        throw new ShadowvmError(
          "shadow",
          "restore_failed",
          `loading the captured memory into shadow ${options.id} failed (${String(result.data["status"])}): ${stderr.trim()}`,
        );
      }
      await qmp.execute("cont");
    } finally {
      qmp.close();
    }
  } catch (err) {
    await kill();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    id: options.id,
    workDir: dir,
    pid: child.pid!,
    qmpSocket,
    consoleLog,
    httpPort,
    guestChannels: cmd.guestChannels,
    process: child,
    startMs: Date.now() - t0,
    consoleText: () => (existsSync(consoleLog) ? readFileSync(consoleLog, "utf8") : ""),
    exited: () => child.exitCode !== null || child.signalCode !== null,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
