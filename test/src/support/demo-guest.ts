// Helpers for end-to-end tests that boot the demo guest (deploy/guest) with the demo launcher.
// Every VM started through withDemoVm is stopped (and its work dir removed) even when the test
// body throws; the launcher also kills any QEMU left when the test process exits.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { buildGuestImage, type DemoVm, type DemoVmOptions, startDemoVm } from "@shadowvm/agent/demo/demo-vm";
import { GuestChannel, type VerifyReply } from "@shadowvm/agent/guest/guest-channel";

let image: Promise<{ dir: string; ms: number }> | undefined;

/** Build the demo guest image once per process (cached across runs by the script itself). */
export function ensureGuestImage(): Promise<{ dir: string; ms: number }> {
  image ??= (async () => {
    const t0 = Date.now();
    const dir = await buildGuestImage({
      onProgress: (l) => process.stderr.write(`${l}\n`),
    });
    return { dir, ms: Date.now() - t0 };
  })();
  return image;
}

const removeAtExit: string[] = [];
/** SHADOWVM_KEEP_TEST_DIRS=1 keeps every test work dir, for debugging. */
const keepTestDirs = process.env.SHADOWVM_KEEP_TEST_DIRS === "1";

/**
 * A short work dir under /tmp (unix socket paths must stay under 108 bytes), removed when the test
 * process exits (captures in it weigh ~150 MB) unless `keep` (SHADOWVM_KEEP_TEST_DIRS=1 keeps them
 * all for debugging).
 */
export function tempWorkDir(prefix = "svm-e2e-", keep = keepTestDirs): string {
  const dir = mkdtempSync(join("/tmp", prefix));
  if (keep) return dir;
  if (removeAtExit.length === 0) {
    process.on("exit", () => {
      for (const d of removeAtExit) rmSync(d, { recursive: true, force: true });
    });
  }
  removeAtExit.push(dir);
  return dir;
}

export type DemoVmTestOptions = Omit<DemoVmOptions, "workDir" | "guestDir"> & {
  workDir?: string;
  /** Deadline for the ready line. Default 180 s (TCG boots in ~5-30 s on a loaded host). */
  readyTimeoutMs?: number;
  /** Keep the work dir after the test (for debugging; default: SHADOWVM_KEEP_TEST_DIRS=1). */
  keepWorkDir?: boolean;
};

/** Start a demo VM, wait until its workload is ready, run `fn`, always stop it. */
export async function withDemoVm<T>(
  options: DemoVmTestOptions,
  fn: (vm: DemoVm, ready: { readyMs: number; line: string }) => Promise<T>,
): Promise<T> {
  const { dir } = await ensureGuestImage();
  const keep = options.keepWorkDir ?? keepTestDirs;
  const workDir = options.workDir ?? tempWorkDir("svm-e2e-", keep);
  let vm: DemoVm | undefined;
  try {
    vm = await startDemoVm({ ...options, workDir, guestDir: dir });
    let ready: { readyMs: number; line: string };
    try {
      ready = await vm.waitReady(options.readyTimeoutMs ?? 180_000);
    } catch (err) {
      const console = await vm.consoleText().catch(() => "");
      throw new Error(
        `${(err as Error).message}\n--- console.log tail ---\n${console.split("\n").slice(-40).join("\n")}`,
      );
    }
    return await fn(vm, ready);
  } finally {
    if (vm) await vm.stop({ timeoutMs: 10_000 });
    if (!keep) rmSync(workDir, { recursive: true, force: true });
  }
}

export interface HttpResult {
  status: number;
  body: string;
  ms: number;
}

/** GET http://127.0.0.1:port/path with a deadline for the whole exchange. */
export function httpGet(port: number, path: string, timeoutMs = 10_000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: "127.0.0.1", port, path, method: "GET", timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }));
      res.on("error", reject);
    });
    req.on("timeout", () =>
      req.destroy(new Error(`GET ${path} on port ${port}: no answer within ${timeoutMs} ms`)),
    );
    req.on("error", reject);
    req.end();
  });
}

/** Live QEMU processes on this host whose command line contains `needle` (e.g. a VM's uuid). */
export function qemuProcesses(needle: string): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    let stat: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ").trim();
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // zombies (state Z) are gone as processes; they only wait for their parent to reap them
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "Z") continue;
    if (cmdline.includes("qemu-system") && cmdline.includes(needle))
      found.push({ pid: Number(entry), cmdline });
  }
  return found;
}

/**
 * The guest's own check of its data disk over the guest channel: the writer's records in sequence
 * and e2fsck clean (the proof that a capture or a shadow left production data intact).
 */
export async function verifyGuest(socket: string): Promise<VerifyReply> {
  const channel = await GuestChannel.connect(socket, { connectTimeoutMs: 30_000 });
  try {
    return await channel.verify({ timeoutMs: 180_000 });
  } finally {
    await channel.close();
  }
}
