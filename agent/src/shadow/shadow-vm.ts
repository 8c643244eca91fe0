// One shadow: an isolated copy of the captured VM, resumed exactly where the capture froze it.
// Start = overlays on the restored images, QEMU with the rewritten command line and
// `-incoming defer`, the memory stream as QEMU's inherited fd 3, `migrate-incoming fd:3`, `cont`.
// Stop = QEMU killed and its whole working directory (overlays, sockets, console) removed, and in
// netns mode its network namespace deleted.
//
// Two QMP monitors: `qmp.sock` for anyone (tools, tests; one client at a time, as QMP serves) and
// `qmp-agent.sock`, on which the shadow keeps one connection open for its whole life (`qmp`):
// events arrive there from the first moment, and the shadow lab drives stress and faults on it.
//
// Isolation modes (see shadow-command-line.ts and netns.ts):
//   user   user-mode networking with restrict=on, the service reached through a loopback
//          hostfwd port (no host setup at all);
//   netns  QEMU inside a network namespace of its own with a tap and no uplink; the service is
//          reached through a forwarder on a unix socket, relayed from a loopback port.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, ShadowvmError } from "@shadowvm/shared";
import { QmpClient, type QmpEvent } from "../hypervisor/qemu/qmp-client.js";
import {
  createShadowNetns,
  deleteShadowNetns,
  forwardServiceFromNetns,
  inNetns,
  type ServiceForward,
  type TapSpec,
} from "./netns.js";
import type { RestoredCapture } from "./restored-capture.js";
import {
  buildShadowCommandLine,
  type NetworkIsolation,
  type ShadowDiskNodes,
} from "./shadow-command-line.js";

const execFileAsync = promisify(execFile);

/** QEMU user networking's fixed addresses (what a production VM on `-netdev user` has). */
export const SLIRP = {
  guestIp: "10.0.2.15",
  gatewayCidr: "10.0.2.2/24",
  gatewayMac: "52:55:0a:00:02:02",
} as const;

export type ShadowNetworkMode = "user" | "netns";

export interface ShadowOptions {
  id: string;
  /** The shadow's own directory (0700): overlays, QMP sockets, console log, guest sockets. */
  workDir: string;
  /** Guest TCP port the service probe reaches through a loopback forward. */
  servicePort?: number;
  startTimeoutMs?: number;
  /** Isolation mode (default "user"). */
  network?: ShadowNetworkMode;
  /** netns mode: the namespace's name (created here, deleted at stop). Default `svm-<id>`. */
  netnsName?: string;
  /** netns mode: the guest's address for the service forward (default: from the capture). */
  guestIp?: string;
  /**
   * Called once QEMU is spawned, before the memory is loaded (e.g. to put it into its cgroup and
   * record it for reaping). A throw aborts the start.
   */
  onSpawn?: (pid: number) => void | Promise<void>;
}

export interface ShadowVm {
  id: string;
  workDir: string;
  pid: number;
  /** The QMP socket for anyone (tools, tests): one client at a time. */
  qmpSocket: string;
  /** The agent's QMP connection, open for the shadow's life (events, stress, faults). */
  qmp: QmpClient;
  /** QMP events since the shadow was spawned (the newest 500). */
  events: QmpEvent[];
  consoleLog: string;
  /** Loopback port forwarded to the guest's service port. */
  httpPort: number;
  guestChannels: Record<string, string>;
  process: ChildProcess;
  network: ShadowNetworkMode;
  /** netns mode: the namespace and its taps. */
  netns: { name: string; taps: string[] } | undefined;
  /** Network backend ids of the shadow's NICs (for netdev filters). */
  netdevs: string[];
  /** Node names of each captured disk's layers, and the guest device (qdev id) using it. */
  disks: (ShadowDiskNodes & { device: string | undefined; sizeBytes: number })[];
  /** ms from the start request until the guest was running again. */
  startMs: number;
  /** Why the shadow was stopped (set by stop()). */
  stopReason: string | undefined;
  consoleText(): string;
  exited(): boolean;
  stop(reason?: string): Promise<void>;
}

function exitPromise(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once("exit", () => r()));
}

/** The guest's IPv4 address as recorded at capture time, else QEMU user networking's default. */
export function guestIpOf(capture: RestoredCapture): string {
  return (
    capture.guestAddresses
      .map((a) => a.ip ?? a.address)
      .find((ip): ip is string => !!ip && /^\d+\.\d+\.\d+\.\d+$/.test(ip) && !ip.startsWith("127.")) ??
    SLIRP.guestIp
  );
}

/** The tap end inside the namespace: where the guest expects its gateway. */
export function tapSpecs(
  capture: RestoredCapture,
  taps: { name: string; originalType: string | undefined }[],
): TapSpec[] {
  return taps.map((t, i) => {
    if (t.originalType === "user" || (i === 0 && capture.guestAddresses.length === 0)) {
      return { name: t.name, address: SLIRP.gatewayCidr, mac: SLIRP.gatewayMac };
    }
    const a = capture.guestAddresses.find((x) => /^\d+\.\d+\.\d+\.\d+$/.test(x.ip ?? x.address ?? ""));
    const ip = a?.ip ?? a?.address;
    if (!ip || i > 0) return { name: t.name };
    const prefix = a?.prefix ?? 24;
    const parts = ip.split(".").map(Number);
    const last = parts[3] === 1 ? 2 : 1;
    return { name: t.name, address: `${parts[0]}.${parts[1]}.${parts[2]}.${last}/${prefix}` };
  });
}

async function killGroup(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
  }
  await exitPromise(child);
}

export async function startShadow(capture: RestoredCapture, options: ShadowOptions): Promise<ShadowVm> {
  const t0 = Date.now();
  const dir = options.workDir;
  const mode = options.network ?? "user";
  const startTimeoutMs = options.startTimeoutMs ?? 120_000;
  // sun_path holds 107 bytes: the longest socket a shadow gets is a netdev filter's.
  const longest = join(dir, "svm-nf9-tx-out.sock");
  if (Buffer.byteLength(longest) > 107) {
    throw new ShadowvmError(
      "shadow",
      "invalid",
      `shadow directory ${dir} is too long for unix sockets (${longest} exceeds 107 bytes); use a shorter shadow.dir`,
    );
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const qmpSocket = join(dir, "qmp.sock");
  const agentQmpSocket = join(dir, "qmp-agent.sock");
  const consoleLog = join(dir, "console.log");
  const netnsName = options.netnsName ?? `svm-${options.id}`.slice(0, 60);
  const disks = await Promise.all(
    capture.disks.map(async (d) => {
      const overlay = join(dir, `overlay-${d.node.replace(/[^\w.-]/g, "_")}.qcow2`);
      await execFileAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", d.top, "-F", d.format, overlay]);
      return {
        node: d.node,
        productionFile: d.productionFile,
        overlay,
        backing: { file: d.top, format: d.format },
      };
    }),
  );
  const guestIp = options.guestIp ?? guestIpOf(capture);
  let netnsCreated = false;
  let forward: ServiceForward | undefined;
  let child: ChildProcess | undefined;
  let qmp: QmpClient | undefined;
  const events: QmpEvent[] = [];
  const cleanup = async () => {
    qmp?.close();
    await forward?.close().catch(() => undefined);
    if (child) await killGroup(child);
    if (netnsCreated) await deleteShadowNetns(netnsName).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // A port picked by binding 0 can be taken before QEMU binds it: retry with another one.
    for (let attempt = 1; ; attempt++) {
      const httpPort = mode === "user" ? await freePort() : 0;
      const network: NetworkIsolation =
        mode === "user"
          ? {
              mode: "user",
              forwards: [
                {
                  hostPort: httpPort,
                  guestPort: options.servicePort ?? 80,
                  ...(guestIp !== SLIRP.guestIp ? { guestIp } : {}),
                },
              ],
            }
          : { mode: "netns", tapPrefix: "svmtap" };
      const cmd = buildShadowCommandLine({
        productionArgv: capture.productionArgv,
        shadowName: options.id,
        disks,
        qmpSocket,
        agentQmpSocket,
        consoleLog,
        socketDir: dir,
        network,
      });
      if (mode === "netns" && !netnsCreated) {
        await createShadowNetns(netnsName, tapSpecs(capture, cmd.taps));
        netnsCreated = true;
      }
      const argv =
        mode === "netns" ? [...inNetns(netnsName), cmd.binary, ...cmd.args] : [cmd.binary, ...cmd.args];
      // The captured memory stream is QEMU's fd 3 from birth (`migrate-incoming fd:3`), not passed
      // later over the monitor with SCM_RIGHTS: the fd-passing socket module opens its sockets
      // without close-on-exec, so every process spawned meanwhile (another shadow's QEMU) would
      // inherit that monitor connection and keep it open, and the monitor would greet no one else
      // until that process died.
      const memoryFd = openSync(capture.memoryFile, "r");
      try {
        child = spawn(argv[0]!, argv.slice(1), {
          stdio: ["ignore", "ignore", "pipe", memoryFd],
          detached: true,
        });
      } finally {
        closeSync(memoryFd);
      }
      const proc = child;
      let stderr = "";
      proc.stderr?.on("data", (d) => {
        stderr += d;
      });
      let spawnError: Error | undefined;
      proc.once("error", (err) => {
        spawnError = err;
      });
      if (proc.pid !== undefined) await options.onSpawn?.(proc.pid);
      const deadline = Date.now() + startTimeoutMs;
      let exited = false;
      while (!existsSync(agentQmpSocket) || !existsSync(qmpSocket)) {
        if (spawnError) throw spawnError;
        if (proc.exitCode !== null || proc.signalCode !== null) {
          exited = true;
          break;
        }
        if (Date.now() > deadline) {
          throw new ShadowvmError(
            "shadow",
            "timeout",
            `QMP socket of shadow ${options.id} did not appear within ${startTimeoutMs} ms`,
          );
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      if (exited) {
        await exitPromise(proc);
        if (
          mode === "user" &&
          attempt < 3 &&
          /hostfwd|host forwarding|Could not set up host forwarding/i.test(stderr)
        )
          continue;
        throw new ShadowvmError("shadow", "qemu_exited", `shadow QEMU exited: ${stderr.trim()}`);
      }
      const client = await QmpClient.connect(agentQmpSocket, {
        connectTimeoutMs: 60_000,
        commandTimeoutMs: 60_000,
      });
      qmp = client;
      client.on("event", (e) => {
        events.push(e);
        if (events.length > 500) events.shift();
      });
      await client.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "events", state: true }],
      });
      const done = client.waitForEvent(
        "MIGRATION",
        (e) => ["completed", "failed"].includes(String(e.data["status"])),
        startTimeoutMs,
      );
      await client.execute("migrate-incoming", { uri: "fd:3" });
      const result = await done;
      if (result.data["status"] !== "completed") {
        throw new ShadowvmError(
          "shadow",
          "restore_failed",
          `loading the captured memory into shadow ${options.id} failed (${String(result.data["status"])}): ${stderr.trim()}`,
        );
      }
      await client.execute("cont");
      const startMs = Date.now() - t0;
      let port = httpPort;
      if (mode === "netns") {
        forward = await forwardServiceFromNetns(
          netnsName,
          join(dir, "service.sock"),
          guestIp,
          options.servicePort ?? 80,
        );
        port = forward.port;
      }
      const netdevs = [...cmd.args.entries()]
        .filter(([i, a]) => a === "-netdev" && !/^user,id=svm-slirp-state/.test(cmd.args[i + 1] ?? ""))
        .map(([i]) => /(?:^|,)id=([^,]+)/.exec(cmd.args[i + 1] ?? "")?.[1])
        .filter((x): x is string => !!x);
      let stopping: Promise<void> | undefined;
      const shadow: ShadowVm = {
        id: options.id,
        workDir: dir,
        pid: proc.pid!,
        qmpSocket,
        qmp: client,
        events,
        consoleLog,
        httpPort: port,
        guestChannels: cmd.guestChannels,
        process: proc,
        network: mode,
        netns: mode === "netns" ? { name: netnsName, taps: cmd.taps.map((t) => t.name) } : undefined,
        netdevs,
        disks: cmd.disks.map((n) => {
          const d = capture.disks.find((x) => x.node === n.node);
          return { ...n, device: d?.device, sizeBytes: d?.sizeBytes ?? 0 };
        }),
        startMs,
        stopReason: undefined,
        consoleText: () => (existsSync(consoleLog) ? readFileSync(consoleLog, "utf8") : ""),
        exited: () => proc.exitCode !== null || proc.signalCode !== null,
        stop(reason?: string) {
          shadow.stopReason ??= reason ?? "stopped";
          stopping ??= cleanup();
          return stopping;
        },
      };
      return shadow;
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
}
