// Mitigation catalog: concrete steps keyed by failure class and dominating stress dimension, each
// with the figures that justify it (taken from the assessment that raised it).
import { aboutHours, oomKillVictim } from "@shadowvm/shared";
import { notHeadingText, type Reach } from "./risk-model.js";

export interface MitigationContext {
  vm_name: string;
  failure_class: string;
  /** The signature's title (an OOM kill's names the process the shadows' OOM killer chose). */
  title: string;
  /** Dominating stress dimension (cpu_load, memory_load, io_load, net_latency_ms, fault:<kind>, ...). */
  dimension: string;
  /** Current production level and its slope per hour in that dimension (null: not forecastable). */
  level: number | null;
  slope_per_h: number | null;
  boundary: number;
  time_to_failure_h: number | null;
  /** Probability of crossing within the horizon (null: none claimed). */
  probability: number | null;
  failing_runs: number;
  runs: number;
  vcpus: number;
  memory_mb: number;
  /** Level forecast at the end of the horizon (null: not forecastable). */
  forecast: number | null;
  horizon_h: number;
  /** How the line reaches the boundary, and why no time to failure is claimed when none is. */
  reach?: Reach;
}

export interface MitigationStep {
  action: string;
  /** Why, with figures. */
  because: string;
}

const pct = (v: number | null) => (v === null ? "n/a" : `${(v * 100).toFixed(1)} %`);
const rate = (v: number | null) =>
  v === null ? "n/a" : `${v >= 0 ? "+" : ""}${(v * 100).toFixed(2)} points/h`;
const hours = (h: number | null) =>
  h === null ? "not on the current trend" : h === 0 ? "now" : `in ${aboutHours(h)}`;

function evidence(c: MitigationContext): string {
  return `shadows showed ${c.failure_class} from ${c.dimension} ≈ ${c.boundary.toFixed(2)} (${c.failing_runs} of ${c.runs} runs failed)`;
}

type Rule = (c: MitigationContext) => MitigationStep[];

/** Below this probability of crossing within the horizon, a VM not heading for its boundary needs no change. */
const NO_CHANGE_BELOW_PROBABILITY = 0.5;

/** A raise that would more than double the VM's memory only outruns the growth for a while. */
const LARGE_RAISE = 2;

const memoryRule: Rule = (c) => {
  const target =
    c.forecast !== null && c.boundary > 0 ? Math.max(c.forecast, c.level ?? 0) / c.boundary : 1.25;
  const newMb = Math.ceil((c.memory_mb * Math.max(1.25, target * 1.2)) / 256) * 256;
  const leakMbPerH = c.slope_per_h !== null ? c.slope_per_h * c.memory_mb : null;
  const raise: MitigationStep = {
    action: `raise ${c.vm_name}'s memory from ${c.memory_mb} MiB to at least ${newMb} MiB`,
    because: `memory use ${pct(c.level)} of RAM, ${rate(c.slope_per_h)}; ${evidence(c)}; reaches it ${hours(c.time_to_failure_h)}`,
  };
  // Only a growth that reaches the boundary is called a leak; a flat VM's noise is not.
  if (leakMbPerH === null || !(leakMbPerH > 0) || c.time_to_failure_h === null) return [raise];
  // How long the raised memory lasts at this growth, from the use now to the boundary at newMb.
  const usedMb = (c.level ?? 0) * c.memory_mb;
  const lastsH = Math.max(0, (c.boundary * newMb - usedMb) / leakMbPerH);
  raise.because += `; at this growth ${newMb} MiB lasts ${aboutHours(lastsH)}`;
  // The OOM killer ends the process it scores highest, normally the largest, which a leak makes its own.
  const victim = oomKillVictim(c.title);
  const leak: MitigationStep = victim
    ? {
        action: `find and fix the leak, starting with ${victim}: restarting it frees its memory until then`,
        because: `the guest's memory in use grows ~${leakMbPerH.toFixed(0)} MiB/h, and the shadows' OOM killer ended ${victim} (the process it scored highest, normally the largest)`,
      }
    : {
        action: "find and fix the leak (the growth does not level off)",
        because: `the guest's memory in use grows ~${leakMbPerH.toFixed(0)} MiB/h`,
      };
  // When only a large raise outruns the growth through the horizon, more memory just buys time:
  // the leak comes first.
  return newMb > LARGE_RAISE * c.memory_mb ? [leak, raise] : [raise, leak];
};

const ioRule: Rule = (c) => [
  {
    action: `move ${c.vm_name}'s disk to a less loaded datastore, or raise its I/O limits`,
    because: `disk I/O at ${pct(c.level)} of the configured capacity, ${rate(c.slope_per_h)}; ${evidence(c)}; reaches it ${hours(c.time_to_failure_h)}`,
  },
  {
    action: "check what drives the I/O growth inside the guest (logs, batch jobs, swap)",
    because: `I/O ${rate(c.slope_per_h)}`,
  },
];

const cpuRule: Rule = (c) => [
  {
    action: `reduce CPU overcommit on ${c.vm_name}'s host, pin its ${c.vcpus} vCPUs, or migrate it to a quieter host`,
    because: `CPU at ${pct(c.level)} of its vCPUs, ${rate(c.slope_per_h)}; ${evidence(c)}; reaches it ${hours(c.time_to_failure_h)}`,
  },
];

const netRule: Rule = (c) => [
  {
    action: `check the network path of ${c.vm_name} (latency and loss on its bridge/uplink); add timeouts and retries in the service`,
    because: `${evidence(c)}; network quality is not in the telemetry forecast`,
  },
];

const storagePathRule: Rule = (c) => [
  {
    action: `check ${c.vm_name}'s storage path (multipath, SAN/NFS errors in the host's kernel log, disk SMART)`,
    because: `${evidence(c)}; the guest aborts its filesystem on I/O errors`,
  },
  {
    action: "make sure the guest mounts with errors=remount-ro and that backups are current",
    because: evidence(c),
  },
];

const memoryErrorRule: Rule = (c) => [
  {
    action: `check the host's ECC/EDAC counters (edac-util, mcelog) and plan to migrate ${c.vm_name} off that host`,
    because: `${evidence(c)}; the guest does not survive memory errors`,
  },
];

const genericRule: Rule = (c) => [
  {
    action: `keep ${c.vm_name}'s ${c.dimension} away from ${c.boundary.toFixed(2)} (add capacity or move load), and review the failure's console evidence`,
    because: `${evidence(c)}; level ${pct(c.level)}, ${rate(c.slope_per_h)}; reaches it ${hours(c.time_to_failure_h)}`,
  },
];

/** Catalog: "class/dimension", then "class/*", then "* /dimension", then the generic rule. */
export const MITIGATION_CATALOG: Readonly<Record<string, Rule>> = {
  "oom/memory_load": memoryRule,
  "*/memory_load": memoryRule,
  "hang/io_load": ioRule,
  "io_error/io_load": ioRule,
  "fs_error/io_load": ioRule,
  "performance/io_load": ioRule,
  "*/io_load": ioRule,
  "lockup/cpu_load": cpuRule,
  "hang/cpu_load": cpuRule,
  "performance/cpu_load": cpuRule,
  "*/cpu_load": cpuRule,
  "*/net_latency_ms": netRule,
  "*/net_loss_pct": netRule,
  "fs_error/*": storagePathRule,
  "io_error/*": storagePathRule,
  "*/fault:disk_io_error": storagePathRule,
  "memory_error/*": memoryErrorRule,
  "*/fault:memory_error": memoryErrorRule,
};

export function mitigationsFor(c: MitigationContext): MitigationStep[] {
  const rule =
    MITIGATION_CATALOG[`${c.failure_class}/${c.dimension}`] ??
    MITIGATION_CATALOG[`${c.failure_class}/*`] ??
    MITIGATION_CATALOG[`*/${c.dimension}`] ??
    genericRule;
  const steps = rule(c);
  // A forecastable VM below the boundary, not heading there and unlikely to cross needs no change:
  // telling its operator to add capacity would be noise. The steps stay as what to do if the trend
  // changes. A flat VM just under its boundary, whose noise crosses it, gets the steps themselves.
  if (
    c.level !== null &&
    c.level < c.boundary &&
    c.time_to_failure_h === null &&
    (c.probability ?? 0) < NO_CHANGE_BELOW_PROBABILITY
  ) {
    return [
      {
        action: `no change needed now: ${c.vm_name}'s ${c.dimension} is at ${pct(c.level)} and ${notHeadingText(c.reach)}`,
        because: `${evidence(c)}; if it starts rising: ${steps.map((s) => s.action).join("; ")}`,
      },
    ];
  }
  return steps;
}
