// The QEMU process of a libvirt domain. libvirt exposes no pid through its API; it starts every
// QEMU with `-uuid <domain uuid>`, so the process is found by that argument in /proc (which works
// for any URI on this host, whatever libvirt's run directory is). libvirt names the guest with
// `-name guest=<name>,...`, which tells its QEMU apart from other processes that carry the same
// uuid (a shadow started from a capture of the domain keeps production's uuid).
import { readdirSync, readFileSync } from "node:fs";

/** uuid -> pid of every process on this host whose argv carries `-uuid <uuid>`. */
export function qemuPidsByUuid(): Map<string, number> {
  const found = new Map<string, number>();
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p));
  } catch {
    return found;
  }
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue; // exited meanwhile
    }
    const at = argv.indexOf("-uuid");
    if (at < 0 || !/qemu/.test(argv[0] ?? "")) continue;
    const name = argv.indexOf("-name");
    if (name < 0 || !argv[name + 1]?.startsWith("guest=")) continue;
    const uuid = argv[at + 1]?.toLowerCase();
    if (uuid) found.set(uuid, Number(pid));
  }
  return found;
}
