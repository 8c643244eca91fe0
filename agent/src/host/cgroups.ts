// Control groups for shadows, cgroup v1 and v2 (detected at run time, per controller: hybrid hosts
// have v1 controllers next to a v2 tree).
//
// Layout: one parent group per agent data directory, `<agent's own cgroup>/shadowvm-<tag>` (or
// `shadow.cgroup_parent`), holding the budget of all shadows (CPU quota = the shadows' share of
// the host, memory limit = their memory budget), and one child per shadow holding that shadow's
// own CPU quota (the stress profile's CPU contention). The kernel enforces both: shadows together
// can never take more than their share, and a shadow that exceeds the memory budget is what the
// OOM killer finds first.
//
// v1: cpu.cfs_period_us / cpu.cfs_quota_us, memory.limit_in_bytes; a child's quota may not exceed
//     its parent's (the kernel refuses it), so child quotas are clamped.
// v2: cpu.max ("<quota> <period>" or "max <period>"), memory.max; controllers must be enabled in
//     the parent's cgroup.subtree_control, which the kernel refuses (EBUSY) while the parent
//     holds processes itself ("no internal processes"): then the agent moves its own processes into
//     a leaf `<own>/agent` first, the usual pattern for a delegated subtree (systemd Delegate=yes).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ShadowvmError } from "@shadowvm/shared";

export type CgroupController = "cpu" | "memory";

export interface CgroupHierarchy {
  controller: CgroupController;
  version: 1 | 2;
  /** Mount point of the hierarchy (v1: the controller's own mount; v2: the unified mount). */
  mount: string;
  /** The agent's own cgroup in it ("/" at the root). */
  ownPath: string;
}

export interface CgroupSupport {
  cpu: CgroupHierarchy | undefined;
  memory: CgroupHierarchy | undefined;
  /** Why a controller is unavailable (for capability reports). */
  problems: string[];
}

export interface DetectOptions {
  /** Text of /proc/self/mountinfo. */
  mountinfo?: string;
  /** Text of /proc/self/cgroup. */
  selfCgroup?: string;
  /** Prefix for paths read while detecting (tests point it at a fake tree). */
  fsRoot?: string;
}

interface Mount {
  point: string;
  fstype: string;
  superOptions: string[];
}

function parseMountinfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const post = line.slice(sep + 3).split(" ");
    const point = (pre[4] ?? "").replace(/\\040/g, " ");
    out.push({ point, fstype: post[0] ?? "", superOptions: (post[2] ?? "").split(",") });
  }
  return out;
}

function parseSelfCgroup(text: string): { v1: Map<string, string>; v2: string | undefined } {
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === "0" && m[2] === "") v2 = m[3];
    else for (const c of (m[2] ?? "").split(",")) if (c) v1.set(c, m[3] ?? "/");
  }
  return { v1, v2 };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Finds, for CPU and memory, the hierarchy the agent can use (v1 where mounted, else v2). */
export function detectCgroups(options: DetectOptions = {}): CgroupSupport {
  const root = options.fsRoot ?? "";
  const mounts = parseMountinfo(options.mountinfo ?? readText("/proc/self/mountinfo") ?? "");
  const self = parseSelfCgroup(options.selfCgroup ?? readText("/proc/self/cgroup") ?? "");
  const problems: string[] = [];
  const find = (controller: CgroupController): CgroupHierarchy | undefined => {
    const v1 = mounts.find((m) => m.fstype === "cgroup" && m.superOptions.includes(controller));
    if (v1) {
      return { controller, version: 1, mount: root + v1.point, ownPath: self.v1.get(controller) ?? "/" };
    }
    const v2 = mounts.find((m) => m.fstype === "cgroup2");
    if (v2) {
      const ownPath = self.v2 ?? "/";
      const controllers = readText(join(root + v2.point, ownPath, "cgroup.controllers")) ?? "";
      if (controllers.split(/\s+/).includes(controller)) {
        return { controller, version: 2, mount: root + v2.point, ownPath };
      }
      problems.push(
        `cgroup v2 at ${v2.point} does not delegate the ${controller} controller to ${ownPath} (cgroup.controllers: "${controllers.trim()}")`,
      );
      return undefined;
    }
    problems.push(`no cgroup hierarchy with the ${controller} controller is mounted`);
    return undefined;
  };
  return { cpu: find("cpu"), memory: find("memory"), problems };
}

function write(path: string, value: string): void {
  try {
    writeFileSync(path, value);
  } catch (err) {
    throw new ShadowvmError(
      "cgroup",
      "write_failed",
      `cannot write "${value.trim()}" to ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

function pidsOf(dir: string): number[] {
  return (readText(join(dir, "cgroup.procs")) ?? "")
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .filter((n) => n > 0);
}

/** Removes a cgroup directory: kills what runs in it, waits for it to empty, rmdir. */
async function removeGroup(dir: string, version: 1 | 2, timeoutMs = 10_000): Promise<void> {
  if (!existsSync(dir)) return;
  for (const child of readdirSync(dir, { withFileTypes: true })) {
    if (child.isDirectory()) await removeGroup(join(dir, child.name), version, timeoutMs);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (version === 2 && existsSync(join(dir, "cgroup.kill"))) {
      try {
        writeFileSync(join(dir, "cgroup.kill"), "1");
      } catch {
        /* older kernel: signal one by one below */
      }
    }
    for (const pid of pidsOf(dir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code === "ENOTEMPTY") {
        // Not a cgroup file system (a plain directory in tests): control files are real files.
        rmSync(dir, { recursive: true, force: true });
        return;
      }
      if (Date.now() >= deadline) {
        throw new ShadowvmError(
          "cgroup",
          "busy",
          `cannot remove cgroup ${dir} within ${timeoutMs} ms: ${(err as Error).message} (processes: ${pidsOf(dir).join(" ") || "none"})`,
        );
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface ParentLimits {
  /** CPU time all shadows may use together, in cores (undefined = no limit). */
  cpuCores?: number;
  /** Memory all shadows may use together, in bytes (undefined = no limit). */
  memoryBytes?: number;
}

const PERIOD_US = 100_000;
const MIN_QUOTA_US = 1000;
const MAX_PERIOD_US = 1_000_000;

/** Period and quota for a share of one core: longer periods reach shares below 1 %. */
export function cpuQuota(cores: number): { periodUs: number; quotaUs: number } {
  if (!(cores > 0))
    throw new ShadowvmError("cgroup", "invalid", `CPU limit must be > 0 cores (actual: ${cores})`);
  let periodUs = PERIOD_US;
  if (cores * periodUs < MIN_QUOTA_US) periodUs = Math.min(MAX_PERIOD_US, Math.ceil(MIN_QUOTA_US / cores));
  return { periodUs, quotaUs: Math.max(MIN_QUOTA_US, Math.round(cores * periodUs)) };
}

/** The shadows' cgroups of one agent data directory. */
export class ShadowCgroups {
  readonly support: CgroupSupport;
  /** Name of the parent group (`shadowvm-<tag>`) or the configured parent path. */
  readonly parentPath: string;
  private parentCores: number | undefined;

  constructor(support: CgroupSupport, parentPath: string) {
    this.support = support;
    this.parentPath = parentPath;
  }

  /** Default parent: `<own cgroup>/shadowvm-<tag>` in each hierarchy. */
  static forTag(support: CgroupSupport, tag: string, configuredParent?: string): ShadowCgroups {
    return new ShadowCgroups(support, configuredParent ?? `shadowvm-${tag}`);
  }

  private hierarchies(): CgroupHierarchy[] {
    const out: CgroupHierarchy[] = [];
    for (const h of [this.support.cpu, this.support.memory]) {
      if (h && !out.some((o) => o.mount === h.mount)) out.push(h);
    }
    return out;
  }

  /** Absolute directory of the parent group in a hierarchy. */
  parentDir(h: CgroupHierarchy): string {
    return this.parentPath.startsWith("/")
      ? join(h.mount, this.parentPath)
      : join(h.mount, h.ownPath, this.parentPath);
  }

  /** Every directory of the parent group (one per hierarchy). */
  parentDirs(): string[] {
    return this.hierarchies().map((h) => this.parentDir(h));
  }

  /** v2: enable controllers for children of `dir` (moving its own processes to a leaf if needed). */
  private enableV2(dir: string, controllers: CgroupController[], isOwn: boolean): void {
    const want = controllers.map((c) => `+${c}`).join(" ");
    try {
      writeFileSync(join(dir, "cgroup.subtree_control"), want);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EBUSY" || !isOwn) {
        throw new ShadowvmError(
          "cgroup",
          "write_failed",
          `cannot enable ${controllers.join(", ")} for children of ${dir}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      const leaf = join(dir, "agent");
      mkdirSync(leaf, { recursive: true });
      for (const pid of pidsOf(dir)) write(join(leaf, "cgroup.procs"), String(pid));
      write(join(dir, "cgroup.subtree_control"), want);
    }
  }

  /** Creates the parent group(s) and sets the budget of all shadows. */
  ensureParent(limits: ParentLimits): void {
    for (const h of this.hierarchies()) {
      const dir = this.parentDir(h);
      const ctrl: CgroupController[] = [];
      if (this.support.cpu?.mount === h.mount) ctrl.push("cpu");
      if (this.support.memory?.mount === h.mount) ctrl.push("memory");
      if (h.version === 2) {
        const ownDir = join(h.mount, h.ownPath);
        if (!this.parentPath.startsWith("/")) this.enableV2(ownDir, ctrl, true);
      }
      mkdirSync(dir, { recursive: true });
      if (h.version === 2) this.enableV2(dir, ctrl, false);
      if (ctrl.includes("cpu")) {
        this.parentCores = limits.cpuCores;
        this.writeCpu(h, dir, limits.cpuCores);
      }
      if (ctrl.includes("memory")) this.writeMemory(h, dir, limits.memoryBytes);
    }
  }

  private writeCpu(h: CgroupHierarchy, dir: string, cores: number | undefined): void {
    if (h.version === 1) {
      if (cores === undefined) {
        write(join(dir, "cpu.cfs_quota_us"), "-1");
        return;
      }
      const q = cpuQuota(cores);
      // Lower the quota before changing the period, so quota/period never exceeds a parent's.
      write(join(dir, "cpu.cfs_quota_us"), String(MIN_QUOTA_US));
      write(join(dir, "cpu.cfs_period_us"), String(q.periodUs));
      write(join(dir, "cpu.cfs_quota_us"), String(q.quotaUs));
    } else {
      if (cores === undefined) write(join(dir, "cpu.max"), `max ${PERIOD_US}`);
      else {
        const q = cpuQuota(cores);
        write(join(dir, "cpu.max"), `${q.quotaUs} ${q.periodUs}`);
      }
    }
  }

  private writeMemory(h: CgroupHierarchy, dir: string, bytes: number | undefined): void {
    if (h.version === 1)
      write(join(dir, "memory.limit_in_bytes"), bytes === undefined ? "-1" : String(bytes));
    else write(join(dir, "memory.max"), bytes === undefined ? "max" : String(bytes));
  }

  /** Creates a shadow's own group. */
  create(name: string): ShadowCgroup {
    const dirs: { h: CgroupHierarchy; dir: string }[] = [];
    for (const h of this.hierarchies()) {
      const dir = join(this.parentDir(h), name);
      mkdirSync(dir, { recursive: true });
      if (h.version === 2 && this.support.cpu?.mount === h.mount) {
        // No limit until the profile sets one.
        this.writeCpu(h, dir, undefined);
      }
      dirs.push({ h, dir });
    }
    return new ShadowCgroup(this, name, dirs, () => this.parentCores);
  }

  /** Names of the shadow groups that exist now (for reaping). */
  children(): string[] {
    const names = new Set<string>();
    for (const dir of this.parentDirs()) {
      try {
        for (const e of readdirSync(dir, { withFileTypes: true }))
          if (e.isDirectory() && e.name !== "agent") names.add(e.name);
      } catch {
        /* no parent yet */
      }
    }
    return [...names];
  }

  /** Removes one shadow's group (killing what still runs in it). */
  async remove(name: string): Promise<void> {
    for (const h of this.hierarchies()) await removeGroup(join(this.parentDir(h), name), h.version);
  }

  /** Removes the parent group(s) when no shadow group is left. */
  async removeParentIfEmpty(): Promise<void> {
    if (this.children().length > 0) return;
    for (const h of this.hierarchies()) {
      const dir = this.parentDir(h);
      if (existsSync(dir) && pidsOf(dir).length === 0)
        await removeGroup(dir, h.version).catch(() => undefined);
    }
  }
}

/** One shadow's group. */
export class ShadowCgroup {
  readonly name: string;
  readonly dirs: string[];
  private readonly owner: ShadowCgroups;
  private readonly entries: { h: CgroupHierarchy; dir: string }[];
  private readonly parentCores: () => number | undefined;

  constructor(
    owner: ShadowCgroups,
    name: string,
    entries: { h: CgroupHierarchy; dir: string }[],
    parentCores: () => number | undefined,
  ) {
    this.owner = owner;
    this.name = name;
    this.entries = entries;
    this.dirs = entries.map((e) => e.dir);
    this.parentCores = parentCores;
  }

  /** Moves a process (all its threads) into the group, in every hierarchy. */
  addProcess(pid: number): void {
    for (const { dir } of this.entries) write(join(dir, "cgroup.procs"), String(pid));
  }

  get hasCpu(): boolean {
    return this.entries.some((e) => this.owner.support.cpu?.mount === e.h.mount);
  }

  /**
   * Limits the shadow to `cores` of CPU time (undefined = only the parent's budget). Clamped to
   * the parent's budget; returns the limit in effect.
   */
  setCpuLimit(cores: number | undefined): number | undefined {
    const parent = this.parentCores();
    const effective = cores !== undefined && parent !== undefined ? Math.min(cores, parent) : cores;
    for (const e of this.entries) {
      if (this.owner.support.cpu?.mount !== e.h.mount) continue;
      if (e.h.version === 1) {
        if (effective === undefined) write(join(e.dir, "cpu.cfs_quota_us"), "-1");
        else {
          const q = cpuQuota(effective);
          write(join(e.dir, "cpu.cfs_quota_us"), "-1");
          write(join(e.dir, "cpu.cfs_period_us"), String(q.periodUs));
          write(join(e.dir, "cpu.cfs_quota_us"), String(q.quotaUs));
        }
      } else {
        const q = effective === undefined ? undefined : cpuQuota(effective);
        write(join(e.dir, "cpu.max"), q ? `${q.quotaUs} ${q.periodUs}` : `max ${PERIOD_US}`);
      }
    }
    return effective;
  }

  /** Throttling counters of the shadow's group (cpu.stat), when the CPU controller is there. */
  cpuStat(): Record<string, number> {
    for (const e of this.entries) {
      if (this.owner.support.cpu?.mount !== e.h.mount) continue;
      const out: Record<string, number> = {};
      for (const line of (readText(join(e.dir, "cpu.stat")) ?? "").split("\n")) {
        const [k, v] = line.split(" ");
        if (k && v !== undefined) out[k] = Number(v);
      }
      return out;
    }
    return {};
  }

  async remove(): Promise<void> {
    await this.owner.remove(this.name);
  }
}
