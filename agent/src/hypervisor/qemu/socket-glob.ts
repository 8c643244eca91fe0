// Expands the configured QMP socket patterns (e.g. Proxmox's /var/run/qemu-server/*.qmp).
// Node 20 has no fs.glob, and only `*` and `?` within path segments are needed here.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function segmentRegex(segment: string): RegExp {
  const body = segment
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, "[^/]*")
    .replace(/\?/g, "[^/]");
  return new RegExp(`^${body}$`);
}

function expand(base: string, segments: string[], out: string[]): void {
  if (segments.length === 0) {
    out.push(base);
    return;
  }
  const [head, ...rest] = segments as [string, ...string[]];
  if (!/[*?]/.test(head)) {
    expand(join(base, head), rest, out);
    return;
  }
  let entries: string[];
  try {
    entries = readdirSync(base).sort();
  } catch {
    return;
  }
  const re = segmentRegex(head);
  for (const entry of entries) if (re.test(entry)) expand(join(base, entry), rest, out);
}

/** Paths matching the patterns that exist and are sockets, deduplicated, in a stable order. */
export function expandSocketGlobs(patterns: string[]): string[] {
  const out: string[] = [];
  for (const pattern of patterns) {
    const absolute = pattern.startsWith("/");
    expand(absolute ? "/" : ".", pattern.split("/").filter(Boolean), out);
  }
  return [...new Set(out)].filter((p) => {
    try {
      return statSync(p).isSocket();
    } catch {
      return false;
    }
  });
}
