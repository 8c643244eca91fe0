// Finds the QEMU process behind a QMP socket, for its pid and command line. The kernel knows which
// process holds the listening end of a unix socket (/proc/net/unix gives the socket's inode,
// /proc/<pid>/fd links name it), which works for sockets given on the command line (plain QEMU,
// Proxmox) and for sockets passed in as fds (libvirt); matching the path in cmdlines would not.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/** Inodes of listening unix sockets bound to `path`. */
function socketInodes(path: string): Set<string> {
  const inodes = new Set<string>();
  let table: string;
  try {
    table = readFileSync("/proc/net/unix", "utf8");
  } catch {
    return inodes;
  }
  for (const line of table.split("\n").slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 8 && fields.slice(7).join(" ") === path) inodes.add(fields[6]!);
  }
  return inodes;
}

/** The pid of the process listening on the unix socket at `path`, if visible to us. */
export function findSocketOwnerPid(path: string): number | undefined {
  const inodes = socketInodes(path);
  if (inodes.size === 0) return undefined;
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // exited meanwhile, or not ours to read
    }
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (m && inodes.has(m[1]!)) return Number(pid);
      } catch {
        // fd closed meanwhile
      }
    }
  }
  return undefined;
}

/** argv of a process, or [] when it is gone or unreadable. */
export function readCommandLine(pid: number): string[] {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return raw.split("\0").filter((arg, i, all) => arg !== "" || i < all.length - 1);
  } catch {
    return [];
  }
}
