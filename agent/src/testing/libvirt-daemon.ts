// A private libvirtd (and virtlogd) for tests, which neither needs nor disturbs a system libvirt.
//
// A root libvirtd always uses the system paths (/etc/libvirt, /run/libvirt, /var/lib/libvirt, ...)
// and locks them, so a second one cannot run beside a system daemon. The test daemons therefore
// run in a mount namespace of their own (`unshare -m`) in which those directories (and
// /etc/passwd, /etc/group, so that libvirt's default QEMU user `libvirt-qemu` exists without
// creating it on the host) are bind mounts of a temporary directory. Everything they and their
// QEMUs write lands there; the host only gets empty mount points if they were missing. Clients
// reach the daemon from outside through its socket in that directory:
//   qemu+unix:///system?socket=<dir>/run/libvirt-sock
// The namespace ends with its last process. `cleanup()` destroys every domain, stops both daemons,
// kills any QEMU of theirs that is left and removes the directory; an exit hook does the killing
// if a test dies first.
import { execFile, spawn } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { waitFor } from "@shadowvm/shared";
import type { VmSpec } from "../hypervisor/driver-conformance.js";
import { escapeXml } from "../hypervisor/libvirt/domain-xml.js";
import { qemuPidsByUuid } from "../hypervisor/libvirt/qemu-pids.js";

const execFileAsync = promisify(execFile);

/** System paths a root libvirtd uses, each replaced by a directory of the test's own. */
const BIND_DIRS: [string, string][] = [
  ["etc", "/etc/libvirt"],
  ["run", "/run/libvirt"],
  ["lib", "/var/lib/libvirt"],
  ["cache", "/var/cache/libvirt"],
  ["log", "/var/log/libvirt"],
];

export interface PrivateLibvirtdOptions {
  /**
   * User QEMU runs as: "root" (no relabelling, simplest), or "libvirt-qemu" as on a stock Debian
   * host, with libvirt's DAC driver chowning each domain's images while it runs. Default "root".
   */
  qemuUser?: "root" | "libvirt-qemu";
  /** Deadline for the daemon to answer. Default 30 s. */
  startTimeoutMs?: number;
}

export interface PrivateLibvirtd {
  /** The temporary directory holding the daemon's configuration, state, logs and sockets. */
  dir: string;
  uri: string;
  /** Where domain logs (QEMU's stderr, libvirt's notes) are: `<logDir>/qemu/<name>.log`. */
  logDir: string;
  qemuUser: "root" | "libvirt-qemu";
  /** Runs one virsh command against the daemon; rejects with virsh's stderr. */
  virsh(...args: string[]): Promise<string>;
  /** Defines a persistent domain from XML; remembers its uuid for cleanup. */
  define(xml: string): Promise<void>;
  /** pid of a running domain's QEMU. */
  qemuPid(uuid: string): number | undefined;
  /** Kills a domain's QEMU (SIGKILL) and waits until libvirt reports it shut off (crashed). */
  killQemu(uuid: string): Promise<void>;
  cleanup(): Promise<void>;
}

const live = new Set<number>();
let exitHook = false;
function track(pid: number): void {
  live.add(pid);
  if (exitHook) return;
  exitHook = true;
  process.once("exit", () => {
    for (const p of live) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // gone
      }
    }
  });
}

/** True while the process exists and is not a zombie (daemons are reaped by init, maybe late). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

async function stopPid(pid: number, timeoutMs: number): Promise<void> {
  if (!alive(pid)) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  try {
    await waitFor(() => !alive(pid), { timeoutMs, intervalMs: 20, what: `process ${pid} to exit` });
  } catch {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
    await waitFor(() => !alive(pid), { timeoutMs: 5000, intervalMs: 20, what: `process ${pid} to die` });
  }
}

/**
 * libvirtd probes each QEMU binary's capabilities at start (~6 s here) and caches the result.
 * Tests keep that cache between their private daemons; libvirt itself invalidates an entry when
 * the QEMU binary, libvirt or the host changed.
 */
function capabilitiesCache(user: string): string {
  return join(
    process.env["SHADOWVM_CACHE"] || join(homedir(), ".cache", "shadowvm"),
    "libvirt-capabilities",
    user,
  );
}

function copyXmlFiles(from: string, to: string): void {
  if (!existsSync(from)) return;
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) {
    if (!f.endsWith(".xml")) continue;
    // Tests run in parallel: a reader sees the old or the new file, never half of one.
    const tmp = join(to, `.${f}.${process.pid}.tmp`);
    copyFileSync(join(from, f), tmp);
    renameSync(tmp, join(to, f));
  }
}

function qemuConf(user: "root" | "libvirt-qemu"): string {
  const common = [
    'security_driver = "none"',
    // No per-domain /dev namespace and no cgroups: the test must not need host setup.
    "namespaces = [ ]",
    "cgroup_controllers = [ ]",
    "remember_owner = 0",
  ];
  return user === "root"
    ? [...common, 'user = "root"', 'group = "root"', "dynamic_ownership = 0", ""].join("\n")
    : [...common, 'user = "libvirt-qemu"', 'group = "libvirt-qemu"', "dynamic_ownership = 1", ""].join("\n");
}

/** Starts virtlogd and libvirtd in a private mount namespace; resolves once libvirtd answers. */
export async function startPrivateLibvirtd(options: PrivateLibvirtdOptions = {}): Promise<PrivateLibvirtd> {
  const qemuUser = options.qemuUser ?? "root";
  const dir = mkdtempSync(join(tmpdir(), "svm-libvirtd-"));
  // QEMU running as libvirt-qemu must be able to traverse to the test's images.
  chmodSync(dir, 0o755);
  for (const [sub] of BIND_DIRS) mkdirSync(join(dir, sub), { recursive: true });
  writeFileSync(
    join(dir, "etc", "libvirtd.conf"),
    [
      'unix_sock_group = "root"',
      'unix_sock_rw_perms = "0700"',
      'unix_sock_ro_perms = "0700"',
      'auth_unix_rw = "none"',
      'auth_unix_ro = "none"',
      'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
      "",
    ].join("\n"),
  );
  writeFileSync(join(dir, "etc", "virtlogd.conf"), 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n');
  writeFileSync(join(dir, "etc", "qemu.conf"), qemuConf(qemuUser));
  const capsDir = join(dir, "cache", "qemu", "capabilities");
  try {
    copyXmlFiles(capabilitiesCache(qemuUser), capsDir);
  } catch {
    // no cache: libvirtd probes QEMU itself
  }
  // libvirt resolves its compiled-in default user (libvirt-qemu) before reading qemu.conf.
  const passwd = readFileSync("/etc/passwd", "utf8");
  const group = readFileSync("/etc/group", "utf8");
  writeFileSync(
    join(dir, "passwd"),
    /^libvirt-qemu:/m.test(passwd)
      ? passwd
      : `${passwd.replace(/\n?$/, "\n")}libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n`,
  );
  writeFileSync(
    join(dir, "group"),
    /^libvirt-qemu:/m.test(group) ? group : `${group.replace(/\n?$/, "\n")}libvirt-qemu:x:64055:\n`,
  );
  const mounts = [
    ...BIND_DIRS.map(([sub, target]) => `mkdir -p ${target} && mount --bind "${join(dir, sub)}" ${target}`),
    `mount --bind "${join(dir, "passwd")}" /etc/passwd`,
    `mount --bind "${join(dir, "group")}" /etc/group`,
  ];
  // Mount points must exist on the host side before the namespace can mount on them.
  for (const [, target] of BIND_DIRS) mkdirSync(target, { recursive: true });
  if (qemuUser === "libvirt-qemu") {
    // libvirt probes QEMU's capabilities as root (KVM found when /dev/kvm exists) but checks
    // /dev/kvm as the QEMU user, and on a mismatch probes again at every lookup (~4 s each). A
    // stock host lets the QEMU user open /dev/kvm (kvm group); here the namespace gets its own
    // node for it. Domains of type qemu do not use KVM either way.
    mkdirSync(join(dir, "dev"));
    mounts.push(
      `mount -t tmpfs -o mode=0755 tmpfs "${join(dir, "dev")}"`,
      `if [ -c /dev/kvm ]; then mknod -m 0666 "${join(dir, "dev", "kvm")}" c 10 232 && mount --bind "${join(dir, "dev", "kvm")}" /dev/kvm; fi`,
    );
  }
  const script = [
    "set -e",
    ...mounts,
    "virtlogd -d -f /etc/libvirt/virtlogd.conf -p /run/libvirt/virtlogd.pid",
    "libvirtd -d -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid",
  ].join("\n");
  const uri = `qemu+unix:///system?socket=${join(dir, "run", "libvirt-sock")}`;
  const pids: number[] = [];
  const domains = new Set<string>();

  const virsh = async (...args: string[]): Promise<string> => {
    try {
      const { stdout } = await execFileAsync("virsh", ["-q", "-c", uri, ...args], {
        env: { ...process.env, LC_ALL: "C" },
        timeout: 60_000,
      });
      return stdout.trim();
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`virsh ${args.join(" ")} failed: ${(e.stderr ?? e.message).trim()}`);
    }
  };

  const cleanup = async (): Promise<void> => {
    const qemus = [...domains].map((u) => qemuPidsByUuid().get(u)).filter((p): p is number => !!p);
    await Promise.all(
      [...domains].map(async (uuid) => {
        await virsh("destroy", uuid).catch(() => undefined);
        await virsh("undefine", uuid).catch(() => undefined);
      }),
    );
    for (const pid of qemus) await stopPid(pid, 10_000);
    for (const pid of pids) {
      await stopPid(pid, 15_000);
      live.delete(pid);
    }
    try {
      copyXmlFiles(capsDir, capabilitiesCache(qemuUser));
    } catch {
      // the cache is an optimization only
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn("unshare", ["-m", "--propagation", "private", "sh", "-c", script], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      child.once("error", reject);
      child.once("close", (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`starting the private libvirtd failed (${code}): ${stderr}`)),
      );
    });
    for (const name of ["virtlogd", "libvirtd"]) {
      const pid = await waitFor(
        () => {
          const file = join(dir, "run", `${name}.pid`);
          return existsSync(file) ? Number(readFileSync(file, "utf8").trim()) || undefined : undefined;
        },
        { timeoutMs: options.startTimeoutMs ?? 30_000, what: `${name} pid file` },
      );
      pids.push(pid);
      track(pid);
    }
    await waitFor(() => virsh("version").then(() => true), {
      timeoutMs: options.startTimeoutMs ?? 30_000,
      intervalMs: 100,
      what: "the private libvirtd to answer",
    });
  } catch (err) {
    await cleanup().catch(() => undefined);
    const log = join(dir, "log", "libvirtd.log");
    throw new Error(
      `${(err as Error).message}${existsSync(log) ? `; libvirtd.log: ${readFileSync(log, "utf8").slice(-2000)}` : ""}`,
    );
  }

  return {
    dir,
    uri,
    logDir: join(dir, "log"),
    qemuUser,
    virsh,
    async define(xml) {
      const uuid = /<uuid>([^<]+)<\/uuid>/.exec(xml)?.[1]?.toLowerCase();
      if (!uuid) throw new Error("domain XML for a test needs a <uuid>");
      domains.add(uuid);
      const file = join(dir, `define-${uuid}.xml`);
      writeFileSync(file, xml);
      await virsh("define", file);
    },
    qemuPid(uuid) {
      const pid = qemuPidsByUuid().get(uuid.toLowerCase());
      if (pid) track(pid);
      return pid;
    },
    async killQemu(uuid) {
      const pid = qemuPidsByUuid().get(uuid.toLowerCase());
      if (!pid) throw new Error(`no QEMU process for domain ${uuid}`);
      process.kill(pid, "SIGKILL");
      await waitFor(
        async () => /^shut off|^crashed/.test(await virsh("domstate", "--reason", uuid).catch(() => "")),
        { timeoutMs: 30_000, intervalMs: 20, what: `libvirt to notice that domain ${uuid} died` },
      );
    },
    cleanup,
  };
}

export interface DomainXmlOptions {
  /** Directory for the disk images (created by `createDomainDisks`). */
  diskDir: string;
  /** NIC type: "user" (no host resources) or "ethernet" (a tap libvirt creates, passed as an fd). */
  nicType?: "user" | "ethernet";
  /** Extra XML inside <devices>. */
  extraDevices?: string;
  /** Extra XML inside <os> (kernel, initrd, cmdline). */
  os?: string;
}

/** Image files of a conformance VmSpec's disks (`<diskDir>/<name>-<i>.<format>`). */
export async function createDomainDisks(spec: VmSpec, diskDir: string): Promise<string[]> {
  mkdirSync(diskDir, { recursive: true });
  const files: string[] = [];
  for (const [i, disk] of spec.disks.entries()) {
    const file = join(diskDir, `${spec.name}-${i}.${disk.format}`);
    await execFileAsync("qemu-img", ["create", "-q", "-f", disk.format, file, String(disk.sizeBytes)]);
    files.push(file);
  }
  return files;
}

/** Domain XML (type qemu: TCG) for a conformance VmSpec, with virtio disks and NICs. */
export function domainXml(spec: VmSpec, options: DomainXmlOptions): string {
  const targets = "abcdefghijklmnopqrstuvwxyz";
  const disks = spec.disks
    .map(
      (d, i) => `    <disk type='file' device='disk'>
      <driver name='qemu' type='${d.format}'/>
      <source file='${escapeXml(join(options.diskDir, `${spec.name}-${i}.${d.format}`))}'/>
      <target dev='vd${targets[i]}' bus='virtio'/>
    </disk>`,
    )
    .join("\n");
  const nics = spec.nics
    .map(
      (n) => `    <interface type='${options.nicType ?? "user"}'>
      <mac address='${n.mac}'/>
      <model type='virtio'/>
    </interface>`,
    )
    .join("\n");
  return `<domain type='qemu'>
  <name>${escapeXml(spec.name)}</name>
  <uuid>${spec.uuid}</uuid>
  <memory unit='MiB'>${spec.memoryMb}</memory>
  <vcpu>${spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
${options.os ?? ""}
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
${disks}
${nics}
${options.extraDevices ?? ""}
  </devices>
</domain>
`;
}
