// Launcher for the demo guest (deploy/guest): a real QEMU VM that plays "production" in the demo
// and in every end-to-end test.
//
// - The image comes from deploy/guest/build-guest-image.sh (cached; `buildGuestImage()` runs it).
// - Each VM gets its own qcow2 data disk in its work dir, an overlay whose backing file is the
//   cached template (opened read-only, so the template is never written; several VMs share it).
// - The QEMU command line is a pure function of the options (`demoVmArgs`), with explicit node
//   names (disk0-file/disk0 over disk0-base-file/disk0-base) and device ids, so capture/restore
//   code can address everything by name.
// - Every QEMU started here is killed when this Node process exits, even if a test forgot stop().
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { copyFile, mkdir, open, readFile, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort, ShadowvmError } from "@shadowvm/shared";
import { GuestChannel, type GuestChannelOptions } from "../guest/guest-channel.js";

const execFileP = promisify(execFile);

/** The guest prints this on ttyS0 once its workload runs (and `degraded` instead when it could not). */
export const GUEST_READY_LINE = "shadowvm-guest: ready";
export const GUEST_DEGRADED_LINE = "shadowvm-guest: degraded";
export const GUEST_CHANNEL_NAME = "org.shadowvm.guest.0";
/** Unix socket paths longer than this cannot be bound (sun_path is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

// --- the image --------------------------------------------------------------------------------

/** guest.json, as written by build-guest-image.sh (the fields the launcher and tests use). */
export interface GuestDescription {
  schema: number;
  stamp: string;
  kernel: { file: string; release: string; package: string; version: string; bytes: number };
  initrd: { file: string; format: string; bytes: number; modules: string[]; builtin: string[] };
  data_disk: {
    file: string;
    format: "qcow2";
    virtual_mb: number;
    bytes: number;
    fs: string;
    fs_uuid: string;
    label: string;
    guest_device: string;
    mountpoint: string;
    records: string;
  };
  cmdline: string;
  memory_mb: number;
  min_memory_mb: number;
  vcpus: number;
  ready_line: string;
  network: { ip: string; gateway: string; http_port: number; health_path: string };
  channel: { name: string; protocol: string };
  packages: Record<string, string>;
  knobs: Record<string, string>;
}

/** `${SHADOWVM_CACHE:-~/.cache/shadowvm}/guest`: where the build script puts the image by default. */
export function defaultGuestDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env["SHADOWVM_CACHE"] || join(homedir(), ".cache", "shadowvm"), "guest");
}

/** deploy/guest/build-guest-image.sh of this checkout (agent/dist/demo -> repo root). */
export function guestBuildScript(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), "../../../deploy/guest/build-guest-image.sh");
}

export async function readGuestDescription(guestDir: string): Promise<GuestDescription> {
  const file = join(guestDir, "guest.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ShadowvmError(
      "demo-vm",
      "no-image",
      `no demo guest image in ${guestDir} (run deploy/guest/build-guest-image.sh)`,
      { cause: err },
    );
  }
  const desc = JSON.parse(text) as GuestDescription;
  for (const f of [desc.kernel?.file, desc.initrd?.file, desc.data_disk?.file]) {
    if (!f || !existsSync(join(guestDir, f))) {
      throw new ShadowvmError("demo-vm", "no-image", `demo guest image in ${guestDir} is incomplete (${f})`);
    }
  }
  return desc;
}

export interface BuildGuestImageOptions {
  /** Output directory; default `defaultGuestDir()`. */
  outDir?: string;
  /** Deadline for the build (a cold build downloads ~72 MB of packages). Default 20 min. */
  timeoutMs?: number;
  /** Called with the script's progress lines (stderr). */
  onProgress?: (line: string) => void;
}

/** Run build-guest-image.sh (returns at once when the cached image is current); resolves to its dir. */
export async function buildGuestImage(options: BuildGuestImageOptions = {}): Promise<string> {
  const args = [guestBuildScript()];
  if (options.outDir) args.push(options.outDir);
  const child = spawn("bash", args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
    if (options.onProgress) for (const l of d.split("\n")) if (l.trim()) options.onProgress(l);
  });
  const timeoutMs = options.timeoutMs ?? 20 * 60_000;
  const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
    child.once("close", (c, s) => res([c, s])),
  );
  clearTimeout(timer);
  if (code !== 0) {
    throw new ShadowvmError(
      "demo-vm",
      "image-build-failed",
      `build-guest-image.sh failed (${signal ? `signal ${signal}` : `exit ${code}`}): ${stderr.trim().split("\n").slice(-5).join(" | ")}`,
    );
  }
  const dir = stdout.trim().split("\n").at(-1) ?? "";
  if (!dir)
    throw new ShadowvmError("demo-vm", "image-build-failed", "build-guest-image.sh printed no directory");
  return dir;
}

// --- the QEMU command line ------------------------------------------------------------------------

/** What QEMU does when the guest reports a panic through pvpanic (`-action panic=...`). */
export type PanicAction = "none" | "pause" | "shutdown";

/** Everything `demoVmArgs` needs, resolved (paths absolute, port and ids chosen). */
export interface DemoVmArgsInput {
  name: string;
  uuid: string;
  memoryMb: number;
  vcpus: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** This VM's qcow2 data disk. */
  disk: string;
  /** Its backing file (the cached template), opened read-only as node disk0-base; omit for a standalone disk. */
  diskBacking?: string;
  httpPort: number;
  mac: string;
  consoleLog: string;
  qmpSocket: string;
  guestChannelSocket: string;
  pidFile?: string;
  /** `-netdev user,restrict=on`: the guest reaches nothing, host port forwarding still works. */
  restrictNetwork?: boolean;
  panicAction?: PanicAction;
  qemuBinary?: string;
  /** Appended verbatim. */
  extraArgs?: string[];
}

/** QEMU option values: a comma inside a value is written as two. */
function optValue(s: string): string {
  return s.replaceAll(",", ",,");
}

/** The QEMU command line (without the binary) for a demo VM. Pure. */
export function demoVmArgs(o: DemoVmArgsInput): string[] {
  const args = [
    "-machine",
    "q35,accel=tcg",
    "-cpu",
    "max",
    "-m",
    String(o.memoryMb),
    "-smp",
    String(o.vcpus),
    "-name",
    `${o.name},process=qemu-${o.name}`,
    "-uuid",
    o.uuid,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-msg",
    "timestamp=on",
    "-chardev",
    `file,id=charserial0,path=${optValue(o.consoleLog)}`,
    "-device",
    "isa-serial,chardev=charserial0,id=serial0",
    "-qmp",
    `unix:${optValue(o.qmpSocket)},server=on,wait=off`,
    "-device",
    "pvpanic",
    "-action",
    `panic=${o.panicAction ?? "none"}`,
    "-kernel",
    o.kernel,
    "-initrd",
    o.initrd,
    "-append",
    o.cmdline,
  ];
  if (o.diskBacking) {
    args.push(
      "-blockdev",
      `driver=file,node-name=disk0-base-file,filename=${optValue(o.diskBacking)},read-only=on`,
      "-blockdev",
      "driver=qcow2,node-name=disk0-base,file=disk0-base-file,read-only=on",
      "-blockdev",
      `driver=file,node-name=disk0-file,filename=${optValue(o.disk)}`,
      "-blockdev",
      "driver=qcow2,node-name=disk0,file=disk0-file,backing=disk0-base",
    );
  } else {
    args.push(
      "-blockdev",
      `driver=file,node-name=disk0-file,filename=${optValue(o.disk)}`,
      "-blockdev",
      "driver=qcow2,node-name=disk0,file=disk0-file",
    );
  }
  args.push(
    "-device",
    "virtio-blk-pci,drive=disk0,id=virtio-disk0",
    "-netdev",
    `user,id=net0${o.restrictNetwork ? ",restrict=on" : ""},hostfwd=tcp:127.0.0.1:${o.httpPort}-:80`,
    "-device",
    `virtio-net-pci,netdev=net0,mac=${o.mac},id=net0-dev`,
    "-device",
    "virtio-balloon-pci,id=balloon0",
    "-device",
    "virtio-serial-pci,id=virtio-serial0",
    "-chardev",
    `socket,id=charchannel0,path=${optValue(o.guestChannelSocket)},server=on,wait=off`,
    "-device",
    `virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,name=${GUEST_CHANNEL_NAME}`,
  );
  if (o.pidFile) args.push("-pidfile", o.pidFile);
  if (o.extraArgs) args.push(...o.extraArgs);
  return args;
}

/** A locally administered, stable MAC for a VM name: 52:54:00 (QEMU's prefix) + 3 hash bytes. */
export function macForName(name: string): string {
  const h = createHash("sha256").update(name).digest();
  return `52:54:00:${[h[0], h[1], h[2]].map((b) => (b ?? 0).toString(16).padStart(2, "0")).join(":")}`;
}

/** Moved to @shadowvm/shared (the shadow lab uses it too); re-exported for the demo's modules. */
export { freePort } from "@shadowvm/shared";

// --- the VM ------------------------------------------------------------------------------------------

export interface DemoVmOptions {
  /** VM name: letters, digits, `.`, `_`, `-` (it goes into `-name NAME,process=qemu-NAME`). */
  name: string;
  /** Holds the VM's disk, sockets, console log and QEMU log; created if missing. */
  workDir: string;
  /** Output of build-guest-image.sh; default `defaultGuestDir()`. */
  guestDir?: string;
  memoryMb?: number;
  vcpus?: number;
  /** Host port forwarded to the guest's port 80; a free one when omitted. */
  httpPort?: number;
  /** Appended to the image's kernel command line (e.g. `shadowvm.leak_kb_s=512`). */
  extraKernelArgs?: string | string[];
  qemuBinary?: string;
  uuid?: string;
  /** Default: `macForName(name)`. */
  mac?: string;
  restrictNetwork?: boolean;
  /** Default "none": QEMU emits GUEST_PANICKED and the guest reboots itself (`panic=-1`). */
  panicAction?: PanicAction;
  /** "overlay" (default): qcow2 backed by the template; "copy": a standalone copy of the template. */
  diskMode?: "overlay" | "copy";
  /** Keep an existing disk0.qcow2 in workDir (a restart keeps the guest's data). Default false. */
  reuseDisk?: boolean;
  extraQemuArgs?: string[];
  /** Deadline for QEMU to come up (QMP greeting). Default 30 s. */
  startTimeoutMs?: number;
}

export interface ConsoleMatch {
  line: string;
  /** Byte offset just after the matched line in console.log. */
  offset: number;
}

export interface StopOptions {
  /** Time between SIGTERM and SIGKILL. Default 10 s. */
  timeoutMs?: number;
  removeWorkDir?: boolean;
}

export interface DemoVm {
  readonly name: string;
  readonly uuid: string;
  readonly pid: number;
  readonly mac: string;
  readonly httpPort: number;
  readonly workDir: string;
  readonly qmpSocket: string;
  readonly consoleLog: string;
  readonly guestChannelSocket: string;
  readonly qemuLog: string;
  readonly disk: string;
  readonly guest: GuestDescription;
  readonly args: readonly string[];
  readonly process: ChildProcess;
  /** Date.now() when QEMU was spawned. */
  readonly startedAt: number;
  /** True once the QEMU process has exited. */
  readonly exited: boolean;
  /** Wait for the ready line on the serial console; resolves with ms since spawn. */
  waitReady(timeoutMs?: number): Promise<{ readyMs: number; line: string }>;
  /** Wait for a console line matching `pattern`, searching from byte `fromOffset` (default 0). */
  waitForConsole(pattern: RegExp, timeoutMs: number, fromOffset?: number): Promise<ConsoleMatch>;
  /** The serial console so far. */
  consoleText(): Promise<string>;
  /** Connect to the guest control channel (one client at a time). */
  channel(options?: GuestChannelOptions): Promise<GuestChannel>;
  /** Leave QEMU running after this process exits (the demo's --keep). */
  detach(): void;
  /** SIGTERM QEMU, SIGKILL after the deadline; optionally remove the work dir. */
  stop(options?: StopOptions): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const c of running) {
        try {
          c.kill("SIGKILL");
        } catch {
          /* already gone */
        }
      }
    });
  }
}

function childExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (childExited(child)) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
}

/** Resolves once QEMU's QMP socket greets (QEMU finished initializing, hostfwd included). */
function qmpGreets(path: string, timeoutMs: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(path);
    let buf = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      res(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      buf += d;
      if (buf.includes('"QMP"')) done(true);
    });
    s.on("error", () => done(false));
    s.on("close", () => done(false));
  });
}

function tail(file: string, lines = 10): string {
  try {
    return readFileSync(file, "utf8").trim().split("\n").slice(-lines).join(" | ");
  } catch {
    return "";
  }
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export async function startDemoVm(options: DemoVmOptions): Promise<DemoVm> {
  if (!NAME_RE.test(options.name)) {
    throw new ShadowvmError(
      "demo-vm",
      "invalid",
      `VM name ${JSON.stringify(options.name)} must match ${NAME_RE}`,
    );
  }
  const workDir = resolve(options.workDir);
  const guestDir = resolve(options.guestDir ?? defaultGuestDir());
  const guest = await readGuestDescription(guestDir);
  const qmpSocket = join(workDir, "qmp.sock");
  const guestChannelSocket = join(workDir, "guest.sock");
  for (const p of [qmpSocket, guestChannelSocket]) {
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
      throw new ShadowvmError(
        "demo-vm",
        "invalid",
        `socket path ${p} is longer than ${MAX_SOCKET_PATH} bytes`,
      );
    }
  }
  await mkdir(workDir, { recursive: true });
  const consoleLog = join(workDir, "console.log");
  const qemuLog = join(workDir, "qemu.log");
  const pidFile = join(workDir, "qemu.pid");
  const disk = join(workDir, "disk0.qcow2");
  const template = join(guestDir, guest.data_disk.file);
  const diskMode = options.diskMode ?? "overlay";
  for (const f of [consoleLog, qemuLog, pidFile, qmpSocket, guestChannelSocket]) await rm(f, { force: true });
  if (!(options.reuseDisk && existsSync(disk))) {
    await rm(disk, { force: true });
    if (diskMode === "copy") {
      await copyFile(template, disk);
    } else {
      await execFileP("qemu-img", ["create", "-q", "-f", "qcow2", "-b", template, "-F", "qcow2", disk]);
    }
  }
  const extra = Array.isArray(options.extraKernelArgs)
    ? options.extraKernelArgs.join(" ")
    : (options.extraKernelArgs ?? "");
  const uuid = options.uuid ?? randomUUID();
  const mac = options.mac ?? macForName(options.name);
  const qemuBinary = options.qemuBinary ?? "qemu-system-x86_64";

  // A port picked by binding 0 can be taken before QEMU binds it: retry with another one.
  const attempts = options.httpPort === undefined ? 3 : 1;
  for (let attempt = 1; ; attempt++) {
    const httpPort = options.httpPort ?? (await freePort());
    const input: DemoVmArgsInput = {
      name: options.name,
      uuid,
      memoryMb: options.memoryMb ?? guest.memory_mb ?? 256,
      vcpus: options.vcpus ?? 1,
      kernel: join(guestDir, guest.kernel.file),
      initrd: join(guestDir, guest.initrd.file),
      cmdline: `${guest.cmdline} ${extra}`.trim(),
      disk,
      httpPort,
      mac,
      consoleLog,
      qmpSocket,
      guestChannelSocket,
      pidFile,
      restrictNetwork: options.restrictNetwork ?? false,
      panicAction: options.panicAction ?? "none",
      qemuBinary,
    };
    if (diskMode === "overlay") input.diskBacking = template;
    if (options.extraQemuArgs) input.extraArgs = options.extraQemuArgs;
    const args = demoVmArgs(input);
    const logFd = openSync(qemuLog, "a");
    const startedAt = Date.now();
    let child: ChildProcess;
    try {
      // Its own process group, so Ctrl-C in a terminal reaches us and we stop it in order.
      child = spawn(qemuBinary, args, { stdio: ["ignore", logFd, logFd], detached: true });
    } finally {
      closeSync(logFd);
    }
    let spawnError: Error | undefined;
    child.once("error", (err) => {
      spawnError = err;
    });
    trackChild(child);
    let failure: string | undefined;
    try {
      await pollUntil(
        async () => {
          if (spawnError) throw spawnError;
          if (childExited(child)) throw new Error(`QEMU exited (${child.exitCode ?? child.signalCode})`);
          return (existsSync(qmpSocket) && (await qmpGreets(qmpSocket, 2000))) || undefined;
        },
        {
          timeoutMs: options.startTimeoutMs ?? 30_000,
          intervalMs: 50,
          what: `QEMU to greet on ${qmpSocket}`,
        },
      );
    } catch (err) {
      failure = `${(err as Error).message}; qemu.log: ${tail(qemuLog)}`;
    }
    if (failure === undefined && child.pid !== undefined) {
      return makeVm({ ...input, qemuLog, guest, workDir, child, startedAt, args });
    }
    if (child.pid !== undefined && !childExited(child)) {
      child.kill("SIGKILL");
      await waitExit(child);
    }
    if (attempt < attempts && /hostfwd|host forwarding/i.test(tail(qemuLog))) continue;
    throw new ShadowvmError("demo-vm", "qemu-failed", `QEMU for ${options.name} did not start: ${failure}`);
  }
}

/**
 * Check `condition` every `intervalMs` until it returns a value (resolve) or throws (reject at
 * once, unlike shared waitFor which retries on errors) or the deadline passes (reject, code timeout).
 */
async function pollUntil<T>(
  condition: () => Promise<T | undefined>,
  o: { timeoutMs: number; intervalMs: number; what: string },
): Promise<T> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) {
      throw new ShadowvmError(
        "demo-vm",
        "timeout",
        `timed out after ${o.timeoutMs} ms waiting for ${o.what}`,
      );
    }
    await new Promise((r) => setTimeout(r, o.intervalMs));
  }
}

interface MakeVmInput extends DemoVmArgsInput {
  qemuLog: string;
  guest: GuestDescription;
  workDir: string;
  child: ChildProcess;
  startedAt: number;
  args: string[];
}

function makeVm(m: MakeVmInput): DemoVm {
  const { child } = m;
  const pid = child.pid as number;

  async function readConsole(from: number): Promise<string> {
    let fh: Awaited<ReturnType<typeof open>> | undefined;
    try {
      fh = await open(m.consoleLog, "r");
      const { size } = await fh.stat();
      if (size <= from) return "";
      const buf = Buffer.alloc(size - from);
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      return buf.subarray(0, bytesRead).toString("latin1");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
      throw err;
    } finally {
      await fh?.close();
    }
  }

  /** Scan complete console lines from `fromOffset`; `fail` ends the wait early with an error. */
  async function scanConsole(
    pattern: RegExp,
    timeoutMs: number,
    fromOffset: number,
    fail?: RegExp,
  ): Promise<ConsoleMatch> {
    let offset = fromOffset;
    return pollUntil<ConsoleMatch>(
      async () => {
        const text = await readConsole(offset);
        let start = 0;
        for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
          const line = text.slice(start, nl).replace(/\r$/, "");
          start = nl + 1;
          if (pattern.test(line)) return { line, offset: offset + start };
          if (fail?.test(line)) {
            throw new ShadowvmError("demo-vm", "guest-failed", `${m.name}: console shows "${line}"`);
          }
        }
        offset += start;
        if (childExited(child)) {
          throw new ShadowvmError(
            "demo-vm",
            "qemu-exited",
            `QEMU of ${m.name} exited (${child.exitCode ?? child.signalCode}); qemu.log: ${tail(m.qemuLog)}`,
          );
        }
        return undefined;
      },
      { timeoutMs, intervalMs: 100, what: `${pattern} on the console of ${m.name} (${m.consoleLog})` },
    );
  }

  const vm: DemoVm = {
    name: m.name,
    uuid: m.uuid,
    pid,
    mac: m.mac,
    httpPort: m.httpPort,
    workDir: m.workDir,
    qmpSocket: m.qmpSocket,
    consoleLog: m.consoleLog,
    guestChannelSocket: m.guestChannelSocket,
    qemuLog: m.qemuLog,
    disk: m.disk,
    guest: m.guest,
    args: m.args,
    process: child,
    startedAt: m.startedAt,
    get exited() {
      return childExited(child);
    },
    async waitReady(timeoutMs = 180_000) {
      const ready = new RegExp(escapeRe(m.guest.ready_line || GUEST_READY_LINE));
      const fail = new RegExp(`${escapeRe(GUEST_DEGRADED_LINE)}|Kernel panic - not syncing`);
      const match = await scanConsole(ready, timeoutMs, 0, fail);
      return { readyMs: Date.now() - m.startedAt, line: match.line };
    },
    waitForConsole(pattern, timeoutMs, fromOffset = 0) {
      return scanConsole(pattern, timeoutMs, fromOffset);
    },
    consoleText() {
      return readConsole(0);
    },
    channel(options) {
      return GuestChannel.connect(m.guestChannelSocket, options);
    },
    detach() {
      running.delete(child);
      child.unref();
    },
    async stop(options = {}) {
      let result = { code: child.exitCode, signal: child.signalCode };
      if (!childExited(child)) {
        child.kill("SIGTERM");
        const timeoutMs = options.timeoutMs ?? 10_000;
        let timer: NodeJS.Timeout | undefined;
        const killed = new Promise<void>((res) => {
          timer = setTimeout(() => {
            if (!childExited(child)) child.kill("SIGKILL");
            res();
          }, timeoutMs);
        });
        result = await Promise.race([waitExit(child), killed.then(() => waitExit(child))]);
        clearTimeout(timer);
      }
      if (options.removeWorkDir) rmSync(m.workDir, { recursive: true, force: true });
      return result;
    },
  };
  return vm;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
