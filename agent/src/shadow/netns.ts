// The netns isolation mode: each shadow's QEMU runs inside a network namespace of its own that
// holds nothing but loopback and the shadow's taps. There is no uplink (no veth, no bridge, no
// route, forwarding off), so the guest reaches nothing beyond its tap's far end, which is an
// address inside that namespace where nothing listens. Kernel-level impairments (tbf; netem where
// the host has it) go on the tap.
//
// The agent reaches the guest's service without any link into the namespace: a small forwarder
// runs inside it (netns-forwarder.js) and listens on a unix socket in the shadow's directory (file
// system, not network); the agent listens on a loopback port and relays each connection to that
// socket, so probes use http://127.0.0.1:<port>/ in both modes.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ShadowvmError } from "@shadowvm/shared";

const execFileAsync = promisify(execFile);

async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync("ip", args, { timeout: 15_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new ShadowvmError(
      "netns",
      "ip_failed",
      `ip ${args.join(" ")} failed: ${(e.stderr || e.message).trim()}`,
      {
        cause: err,
      },
    );
  }
}

export interface TapSpec {
  name: string;
  /** Address of the tap's end inside the namespace, CIDR (the guest's gateway, usually). */
  address?: string;
  /** MAC of the tap's end (the guest's ARP cache may hold its gateway's MAC from production). */
  mac?: string;
}

/** Creates the namespace and its taps. Throws (after removing what it made) on failure. */
export async function createShadowNetns(name: string, taps: TapSpec[]): Promise<void> {
  await ip(["netns", "add", name]);
  try {
    await ip(["-n", name, "link", "set", "lo", "up"]);
    for (const tap of taps) {
      await ip(["-n", name, "tuntap", "add", "dev", tap.name, "mode", "tap"]);
      if (tap.mac) await ip(["-n", name, "link", "set", tap.name, "address", tap.mac]);
      if (tap.address) await ip(["-n", name, "addr", "add", tap.address, "dev", tap.name]);
      await ip(["-n", name, "link", "set", tap.name, "up"]);
    }
  } catch (err) {
    await deleteShadowNetns(name).catch(() => undefined);
    throw err;
  }
}

/** Pids of processes inside the namespace. */
export async function netnsPids(name: string): Promise<number[]> {
  try {
    return (await ip(["netns", "pids", name])).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kills what runs inside the namespace and deletes it. */
export async function deleteShadowNetns(name: string): Promise<void> {
  for (const pid of await netnsPids(name)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  try {
    await ip(["netns", "del", name]);
  } catch (err) {
    if (!existsSync(`/run/netns/${name}`)) return;
    throw err;
  }
}

export async function listNetns(): Promise<string[]> {
  try {
    return (await ip(["netns", "list"]))
      .split("\n")
      .map((l) => l.split(" ")[0] ?? "")
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** The argv prefix that runs a command inside the namespace. */
export function inNetns(name: string): string[] {
  return ["ip", "netns", "exec", name];
}

async function tc(args: string[]): Promise<void> {
  try {
    await execFileAsync("tc", args, { timeout: 15_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new ShadowvmError(
      "netns",
      "tc_failed",
      `tc ${args.join(" ")} failed: ${(e.stderr || e.message).trim()}`,
      {
        cause: err,
      },
    );
  }
}

/** Bandwidth cap on traffic towards the guest: a tbf qdisc on the tap. */
export async function applyTbf(ns: string, tap: string, rateKbit: number): Promise<void> {
  const burstBytes = Math.max(1600, Math.round((rateKbit * 1000) / 8 / 50)); // 20 ms worth, at least a frame
  await tc([
    "-n",
    ns,
    "qdisc",
    "replace",
    "dev",
    tap,
    "root",
    "tbf",
    "rate",
    `${Math.max(8, Math.round(rateKbit))}kbit`,
    "burst",
    String(burstBytes),
    "latency",
    "400ms",
  ]);
}

/** Delay, loss (and rate) on traffic towards the guest: netem on the tap, where the kernel has it. */
export async function applyNetem(
  ns: string,
  tap: string,
  o: { delayMs: number; lossPct: number; rateKbit?: number },
): Promise<void> {
  const args = ["-n", ns, "qdisc", "replace", "dev", tap, "root", "netem", "delay", `${o.delayMs}ms`];
  if (o.lossPct > 0) args.push("loss", `${o.lossPct}%`);
  if (o.rateKbit) args.push("rate", `${Math.round(o.rateKbit)}kbit`);
  await tc(args);
}

const qdiscCache = new Map<string, Promise<boolean>>();

/** Whether `tc` can add a qdisc of this kind here (probed once per process in a scratch namespace). */
export function qdiscAvailable(kind: "tbf" | "netem", scratchNs: string): Promise<boolean> {
  let p = qdiscCache.get(kind);
  if (!p) {
    p = probeQdisc(kind, scratchNs);
    qdiscCache.set(kind, p);
  }
  return p;
}

async function probeQdisc(kind: "tbf" | "netem", scratchNs: string): Promise<boolean> {
  try {
    await createShadowNetns(scratchNs, [{ name: "probe0" }]);
  } catch {
    return false;
  }
  try {
    if (kind === "tbf") await applyTbf(scratchNs, "probe0", 1000);
    else await applyNetem(scratchNs, "probe0", { delayMs: 1, lossPct: 0 });
    return true;
  } catch {
    return false;
  } finally {
    await deleteShadowNetns(scratchNs).catch(() => undefined);
  }
}

export interface ServiceForward {
  /** Loopback port on the host that reaches the guest's service. */
  port: number;
  /** The forwarder process inside the namespace. */
  pid: number;
  close(): Promise<void>;
}

const FORWARDER = fileURLToPath(new URL("./netns-forwarder.js", import.meta.url));

/**
 * Starts the forwarder inside the namespace (unix socket -> guestIp:guestPort) and a loopback
 * listener on the host that relays to it.
 */
export async function forwardServiceFromNetns(
  ns: string,
  socketPath: string,
  guestIp: string,
  guestPort: number,
  timeoutMs = 30_000,
): Promise<ServiceForward> {
  const child: ChildProcess = spawn(
    inNetns(ns)[0]!,
    [...inNetns(ns).slice(1), process.execPath, FORWARDER, socketPath, guestIp, String(guestPort)],
    { stdio: ["ignore", "ignore", "pipe"], detached: true },
  );
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(socketPath)) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new ShadowvmError(
        "netns",
        "forwarder_failed",
        `the service forwarder in ${ns} did not start: ${stderr.trim() || `exit ${child.exitCode ?? child.signalCode}`}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  child.unref();
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection(socketPath);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      resolve(typeof a === "object" && a ? a.port : 0);
    });
  });
  server.unref();
  return {
    port,
    pid: child.pid!,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      try {
        process.kill(child.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    },
  };
}
