// What the shadow lab can do to shadows of one capture on this host, and the up-front check of a
// stress profile against it: a profile that asks for something missing is refused before any
// shadow starts, with a message naming what is missing and why.
//
// Sources: the hypervisor driver's capability flags (DriverCapabilities), the host (cgroup
// controllers, network namespaces, tc qdiscs), the QEMU binary (its block drivers and object
// types) and the captured VM itself (its devices: a balloon, a guest channel, a CPU model with
// machine checks, disks the lab can layer).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { promisify } from "node:util";
import { FAULT_KINDS, type FaultKind, ShadowvmError, type StressProfile } from "@shadowvm/shared";
import { GUEST_CHANNEL_NAME } from "../demo/demo-vm.js";
import type { CgroupSupport } from "../host/cgroups.js";
import type { DriverCapabilities } from "../hypervisor/driver.js";
import { qdiscAvailable } from "./netns.js";
import type { RestoredCapture } from "./restored-capture.js";
import { parseKeyVal, splitOptions } from "./shadow-command-line.js";

const execFileAsync = promisify(execFile);

export const STRESS_CAPABILITIES = [
  "cpu_contention",
  "memory_pressure",
  "io_throttling",
  "net_impairment",
  "netns_isolation",
  "tbf",
  "netem",
] as const;
export type StressCapability = (typeof STRESS_CAPABILITIES)[number];
export type LabCapability = StressCapability | FaultKind;

/** Each capability: available, or why not. */
export type LabCapabilities = Record<LabCapability, { available: boolean; reason?: string }>;

export interface QemuFeatures {
  blockDrivers: string[];
  objectTypes: string[];
}

const featureCache = new Map<string, Promise<QemuFeatures>>();

/** Block drivers and object types of a QEMU binary (asked once per binary). */
export function qemuFeatures(binary: string): Promise<QemuFeatures> {
  let p = featureCache.get(binary);
  if (!p) {
    p = (async () => {
      const run = async (args: string[]) => {
        try {
          const { stdout, stderr } = await execFileAsync(binary, args, { timeout: 20_000 });
          return stdout + stderr;
        } catch (err) {
          return String((err as { stdout?: string }).stdout ?? "");
        }
      };
      const drives = await run(["-drive", "format=help"]);
      const objects = await run(["-object", "help"]);
      const formats = /Supported formats:([^\n]*)/.exec(drives)?.[1] ?? "";
      return {
        blockDrivers: formats.trim().split(/\s+/).filter(Boolean),
        objectTypes: objects
          .split("\n")
          .map((l) => l.trim())
          .filter((l) => l && !l.endsWith(":")),
      };
    })();
    featureCache.set(binary, p);
  }
  return p;
}

/** What the captured VM's command line says about its devices. */
export function captureDevices(capture: RestoredCapture): {
  balloon: boolean;
  guestChannel: boolean;
  /** The -cpu option as given (model and flags). */
  cpuModel: string | undefined;
  blockdevDisks: boolean;
  nics: number;
  x86: boolean;
} {
  const [binary, ...rest] = capture.productionArgv;
  let options: { opt: string; value: string | undefined }[] = [];
  try {
    options = splitOptions(rest);
  } catch {
    options = [];
  }
  let balloon = false;
  let guestChannel = false;
  let cpuModel: string | undefined;
  let nics = 0;
  const blockdevNodes = new Set<string>();
  for (const { opt, value } of options) {
    if (!value) continue;
    if (opt === "-device") {
      const { head, props } = parseKeyVal(value, "driver");
      const driver = props.get("driver") ?? head ?? "";
      if (driver.startsWith("virtio-balloon")) balloon = true;
      if (driver === "virtserialport" && props.get("name") === GUEST_CHANNEL_NAME) guestChannel = true;
      if (props.has("netdev")) nics++;
    }
    if (opt === "-cpu") cpuModel = value;
    if (opt === "-blockdev") {
      const name = value.trimStart().startsWith("{")
        ? ((JSON.parse(value) as Record<string, unknown>)["node-name"] as string | undefined)
        : parseKeyVal(value).props.get("node-name");
      if (name) blockdevNodes.add(name);
    }
    if (opt === "-nic") nics++;
  }
  return {
    balloon,
    guestChannel,
    cpuModel,
    blockdevDisks: capture.disks.length > 0 && capture.disks.every((d) => blockdevNodes.has(d.node)),
    nics,
    x86: /x86_64|i386/.test(basename(binary ?? "")),
  };
}

export interface CapabilityInput {
  capture: RestoredCapture;
  cgroups: CgroupSupport;
  driver?: DriverCapabilities;
  network: "user" | "netns";
  /** Scratch namespace name for probing qdiscs (netns mode). */
  scratchNetns: string;
}

/** Everything the lab could do to shadows of this capture on this host. */
export async function detectCapabilities(input: CapabilityInput): Promise<LabCapabilities> {
  const dev = captureDevices(input.capture);
  const binary = input.capture.productionArgv[0] ?? "qemu-system-x86_64";
  const features = await qemuFeatures(binary);
  const drv = input.driver;
  const caps = {} as LabCapabilities;
  const set = (name: LabCapability, available: boolean, reason?: string) => {
    caps[name] = available ? { available } : { available, reason: reason ?? "not available" };
  };
  set(
    "cpu_contention",
    !!input.cgroups.cpu,
    input.cgroups.problems.find((p) => p.includes("cpu")),
  );
  set(
    "memory_pressure",
    dev.balloon && drv?.balloon !== false,
    dev.balloon
      ? "the hypervisor driver has no balloon support"
      : "the VM has no balloon device (virtio-balloon)",
  );
  set(
    "io_throttling",
    drv?.ioThrottling !== false && input.capture.disks.some((d) => !!d.device),
    drv?.ioThrottling === false
      ? "the hypervisor driver cannot throttle block I/O"
      : "no captured disk is attached to a named guest device",
  );
  const redirector = features.objectTypes.includes("filter-redirector");
  set(
    "net_impairment",
    redirector && dev.nics > 0,
    redirector ? "the VM has no NIC" : `${binary} has no filter-redirector object`,
  );
  const netnsOk = existsSync("/dev/net/tun");
  set("netns_isolation", netnsOk, "no /dev/net/tun on this host");
  if (input.network === "netns" && netnsOk) {
    const [tbf, netem] = [
      await qdiscAvailable("tbf", `${input.scratchNetns}a`),
      await qdiscAvailable("netem", `${input.scratchNetns}b`),
    ];
    set("tbf", tbf, "the kernel has no tbf qdisc");
    set("netem", netem, "the kernel has no netem qdisc (sch_netem)");
  } else {
    set("tbf", false, "kernel qdiscs are used in netns mode only");
    set("netem", false, "kernel qdiscs are used in netns mode only");
  }
  set(
    "disk_io_error",
    features.blockDrivers.includes("blkdebug") && dev.blockdevDisks,
    features.blockDrivers.includes("blkdebug")
      ? "the VM's disks are not -blockdev graphs the lab can layer a blkdebug node under"
      : `${binary} has no blkdebug block driver`,
  );
  // Every x86 CPU model QEMU has carries MCE/MCA unless the command line turns them off.
  const mceOff = /(^|,)(-mce|-mca|mce=off|mca=off)(,|$)/.test(dev.cpuModel ?? "");
  set(
    "memory_error",
    dev.x86 && drv?.memoryErrorInjection !== false && !mceOff,
    !dev.x86
      ? "machine-check injection (HMP mce) exists for x86 guests only"
      : mceOff
        ? `the VM's CPU model has machine checks turned off (-cpu ${dev.cpuModel})`
        : "the hypervisor driver cannot inject machine checks",
  );
  set(
    "nmi",
    drv?.nmiInjection !== false && dev.x86,
    dev.x86 ? "the hypervisor driver cannot inject NMIs" : "NMI injection is implemented for x86 guests only",
  );
  const channel = `the VM has no guest agent channel (${GUEST_CHANNEL_NAME})`;
  set("process_kill", dev.guestChannel, channel);
  set("disk_fill", dev.guestChannel, channel);
  set("clock_jump", dev.guestChannel, channel);
  set("net_latency_spike", caps.net_impairment.available, caps.net_impairment.reason);
  return caps;
}

/** What a profile (plus an optional bandwidth cap) needs from the host. */
export function profileNeeds(
  profile: StressProfile,
  bandwidthKbit?: number,
  network: "user" | "netns" = "user",
): LabCapability[] {
  const needs: LabCapability[] = [];
  if (profile.cpu_load > 1) needs.push("cpu_contention");
  if (profile.memory_load > 0) needs.push("memory_pressure");
  if (profile.io_load > 1) needs.push("io_throttling");
  if (profile.net_latency_ms > 0 || profile.net_loss_pct > 0) needs.push("net_impairment");
  if (bandwidthKbit !== undefined) needs.push(network === "netns" ? "tbf" : "net_impairment");
  if (network === "netns") needs.push("netns_isolation");
  for (const f of profile.faults) if (!needs.includes(f.kind)) needs.push(f.kind);
  return needs;
}

/** Throws naming every missing capability the profile needs; returns quietly when all are there. */
export function checkProfile(
  profile: StressProfile,
  caps: LabCapabilities,
  options: { label?: string; bandwidthKbit?: number; network?: "user" | "netns" } = {},
): void {
  const missing = profileNeeds(profile, options.bandwidthKbit, options.network).filter(
    (n) => !caps[n]?.available,
  );
  if (missing.length === 0) return;
  throw new ShadowvmError(
    "shadow-lab",
    "unsupported",
    `${options.label ?? "stress profile"} needs ${missing
      .map((m) => `${m} (${caps[m]?.reason ?? "unknown"})`)
      .join(", ")}, which this host cannot do`,
  );
}

export { FAULT_KINDS };
