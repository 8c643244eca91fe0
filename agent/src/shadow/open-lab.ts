// Opening the shadow lab from the agent's config, and the restore workspace that holds a capture's
// plaintext (memory, frozen disks) while its shadows run. Shared by `shadow run`, `explore` on real
// shadows and the campaigns `serve` runs.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentConfig } from "../config/agent-config.js";
import { readMemInfo } from "../host/proc.js";
import { QemuDriver } from "../hypervisor/qemu/qemu-driver.js";
import { labSettingsFromConfig, ShadowLab } from "./shadow-lab.js";

export interface LabOverrides {
  network?: "user" | "netns" | undefined;
  probePath?: string | undefined;
  probePort?: number | undefined;
}

export function shadowsDir(config: AgentConfig): string {
  return config.shadow.dir ?? join(config.data_dir, "shadows");
}

export function restoredRoot(config: AgentConfig): string {
  return join(config.data_dir, "restored");
}

export async function openShadowLab(config: AgentConfig, overrides: LabOverrides = {}): Promise<ShadowLab> {
  const shadow = { ...config.shadow };
  if (overrides.network) shadow.network = overrides.network;
  if (overrides.probePath) shadow.probe_path = overrides.probePath;
  if (overrides.probePort) shadow.probe_port = overrides.probePort;
  const settings = labSettingsFromConfig(shadow, readMemInfo().totalBytes);
  // Shadows are plain QEMU processes whatever driver manages production (libvirt included).
  const driver = new QemuDriver({});
  return ShadowLab.open({ shadowsDir: shadowsDir(config), settings, driver: driver.capabilities });
}

/**
 * A directory for one run's restored capture, owned by this process (owner.pid), so that the
 * reaper can tell a live run's plaintext from a dead agent's.
 */
export function createRestoreDir(config: AgentConfig): string {
  const dir = join(restoredRoot(config), `run-${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "owner.pid"), String(process.pid));
  return dir;
}

/** Removes restored captures of runs whose agent is gone (plaintext memory must not linger). */
export function reapRestored(root: string): string[] {
  const removed: string[] = [];
  let names: string[] = [];
  try {
    names = existsSync(root) ? readdirSync(root) : [];
  } catch {
    return removed;
  }
  for (const name of names) {
    let pid = 0;
    try {
      pid = Number(readFileSync(join(root, name, "owner.pid"), "utf8"));
    } catch {
      pid = 0;
    }
    if (!(pid > 0 && processAlive(pid))) {
      rmSync(join(root, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
