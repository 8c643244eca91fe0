// The shadow registry: every shadow leaves a record in its directory (<shadows dir>/<id>/shadow.json)
// from before it takes any host resource until its teardown has removed everything, so that an
// agent that died (SIGKILL, crash, power cut) can find and remove what its shadows left:
// QEMU processes, forwarders, network namespaces, cgroups, overlays and sockets.
//
// A record names its owner (agent pid + start time): records of a live agent are never touched,
// so a CLI run and the service can share a data directory. Besides the records, names carry a
// tag derived from the shadows directory (`svm<tag>-...` namespaces, the `shadowvm-<tag>` cgroup
// parent, QEMU's `-name <id>,process=shadow-<id>` plus its work dir on the command line): what
// the records missed (a record lost in a crash between creating a resource and writing it down)
// is found by name and reaped too, but never another agent's.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "@shadowvm/shared";
import type { ShadowCgroups } from "../host/cgroups.js";
import { processAlive, processCmdline, processStartTicks, sameProcess } from "../host/proc.js";
import { deleteShadowNetns, listNetns } from "./netns.js";

export const RECORD_FILE = "shadow.json";

export interface ShadowRecord {
  id: string;
  campaign: string;
  workDir: string;
  createdAt: string;
  agent: { pid: number; startTicks: number | undefined };
  qemu?: { pid: number; startTicks: number | undefined };
  /** Helper processes (netns forwarder). */
  helpers: { pid: number; startTicks: number | undefined }[];
  netns?: string;
  /** Name of the shadow's cgroup under the parent, and its absolute directories. */
  cgroup?: { name: string; dirs: string[] };
}

/** 6 hex chars that tie names on the host to one shadows directory. */
export function shadowsTag(shadowsDir: string): string {
  return createHash("sha256").update(resolve(shadowsDir)).digest("hex").slice(0, 6);
}

export function netnsName(tag: string, id: string): string {
  return `svm${tag}-${id}`;
}

export function newRecord(id: string, campaign: string, workDir: string): ShadowRecord {
  return {
    id,
    campaign,
    workDir,
    createdAt: new Date().toISOString(),
    agent: { pid: process.pid, startTicks: processStartTicks(process.pid) },
    helpers: [],
  };
}

/** Writes the record atomically (rename). */
export function writeRecord(record: ShadowRecord): void {
  const file = join(record.workDir, RECORD_FILE);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
  renameSync(tmp, file);
}

export function readRecord(workDir: string): ShadowRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(workDir, RECORD_FILE), "utf8")) as ShadowRecord;
  } catch {
    return undefined;
  }
}

export interface ReapReport {
  /** Shadows whose leftovers were removed. */
  shadows: string[];
  killed: number[];
  netns: string[];
  cgroups: string[];
  dirs: string[];
  /** Shadows of live agents, left alone. */
  skipped: string[];
  errors: string[];
}

/** A report of a reap that found nothing (yet). */
export function emptyReapReport(): ReapReport {
  return { shadows: [], killed: [], netns: [], cgroups: [], dirs: [], skipped: [], errors: [] };
}

function kill(pid: number): boolean {
  try {
    process.kill(pid, "SIGKILL");
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pids: number[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some((p) => processAlive(p)) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
}

/** Live QEMU processes started as shadows (`process=shadow-`) with a path under `shadowsDir`. */
export function shadowQemuProcesses(shadowsDir: string): { pid: number; workDir: string }[] {
  const root = resolve(shadowsDir);
  const out: { pid: number; workDir: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const argv = processCmdline(pid);
    if (!argv.some((a) => a.includes("process=shadow-"))) continue;
    const hit = argv.map((a) => a.indexOf(`${root}/`)).findIndex((i) => i >= 0);
    if (hit < 0 || !processAlive(pid)) continue;
    const arg = argv[hit]!;
    const rest = arg.slice(arg.indexOf(`${root}/`) + root.length + 1);
    out.push({ pid, workDir: join(root, rest.split("/")[0] ?? "") });
  }
  return out;
}

/**
 * Removes every leftover of shadows of dead agents under `shadowsDir`: by record first, then by
 * name (QEMU processes, namespaces, cgroups) for anything no live record owns. A missing
 * `shadowsDir` is nothing to reap by record; what cannot be removed is listed in `errors` and
 * the rest is still reaped.
 */
export async function reapLeftovers(
  shadowsDir: string,
  cgroups: ShadowCgroups | undefined,
  log?: Logger,
): Promise<ReapReport> {
  const report = emptyReapReport();
  const tag = shadowsTag(shadowsDir);
  const live = new Set<string>(); // ids owned by live agents
  const liveDirs = new Set<string>();
  let entries: string[] = [];
  try {
    entries = readdirSync(shadowsDir);
  } catch {
    entries = [];
  }
  const records: ShadowRecord[] = [];
  for (const name of entries) {
    const dir = join(shadowsDir, name);
    const rec = readRecord(dir);
    if (rec && sameProcess(rec.agent.pid, rec.agent.startTicks)) {
      live.add(rec.id);
      liveDirs.add(resolve(dir));
      report.skipped.push(rec.id);
      continue;
    }
    records.push(rec ?? { ...newRecord(name, "", dir), agent: { pid: -1, startTicks: undefined } });
  }

  const attempt = async (what: string, fn: () => Promise<void> | void) => {
    try {
      await fn();
    } catch (err) {
      report.errors.push(`${what}: ${(err as Error).message}`);
    }
  };

  for (const rec of records) {
    const dir = resolve(rec.workDir);
    const victims: number[] = [];
    for (const p of [rec.qemu, ...rec.helpers]) {
      if (!p || !sameProcess(p.pid, p.startTicks)) continue;
      const argv = processCmdline(p.pid).join(" ");
      // A recycled pid with the same start time is practically impossible; the path check makes
      // sure anyway that only this shadow's processes die.
      if (!argv.includes(dir) && !(rec.netns && argv.includes(rec.netns))) continue;
      if (kill(p.pid)) victims.push(p.pid);
    }
    await waitGone(victims);
    report.killed.push(...victims);
    if (rec.netns) {
      const ns = rec.netns;
      if (existsSync(`/run/netns/${ns}`)) {
        await attempt(`netns ${ns}`, async () => {
          await deleteShadowNetns(ns);
          report.netns.push(ns);
        });
      }
    }
    if (rec.cgroup && cgroups) {
      const name = rec.cgroup.name;
      if (rec.cgroup.dirs.some((d) => existsSync(d))) {
        await attempt(`cgroup ${name}`, async () => {
          await cgroups.remove(name);
          report.cgroups.push(name);
        });
      }
    }
    if (existsSync(dir)) {
      await attempt(`directory ${dir}`, () => {
        rmSync(dir, { recursive: true, force: true });
        report.dirs.push(dir);
      });
    }
    report.shadows.push(rec.id);
  }

  // By name: what no live record owns.
  await attempt("shadow QEMU processes", async () => {
    for (const q of shadowQemuProcesses(shadowsDir)) {
      if (liveDirs.has(resolve(q.workDir))) continue;
      if (kill(q.pid)) report.killed.push(q.pid);
      await waitGone([q.pid]);
      if (existsSync(q.workDir)) {
        await attempt(`directory ${q.workDir}`, () => {
          rmSync(q.workDir, { recursive: true, force: true });
          report.dirs.push(q.workDir);
        });
      }
    }
  });
  const prefix = `svm${tag}-`;
  for (const ns of await listNetns()) {
    if (!ns.startsWith(prefix) || live.has(ns.slice(prefix.length)) || report.netns.includes(ns)) continue;
    await attempt(`netns ${ns}`, async () => {
      await deleteShadowNetns(ns);
      report.netns.push(ns);
    });
  }
  if (cgroups) {
    for (const name of cgroups.children()) {
      if (live.has(name) || report.cgroups.includes(name)) continue;
      await attempt(`cgroup ${name}`, async () => {
        await cgroups.remove(name);
        report.cgroups.push(name);
      });
    }
    if (live.size === 0) await attempt("cgroup parent", () => cgroups.removeParentIfEmpty());
  }
  if (report.shadows.length || report.killed.length || report.netns.length || report.cgroups.length) {
    log?.info({ reaped: report }, "reaped leftovers of earlier shadows");
  }
  return report;
}
