import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { cpuQuota, detectCgroups, ShadowCgroups } from "./cgroups.js";

const V1_MOUNTINFO = `25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;
const V1_SELF = `4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/`;

const V2_MOUNTINFO = "30 1 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";
const V2_SELF = "0::/system.slice/shadowvm-agent.service";

function fakeRoot(): string {
  return mkdtempSync(join(tmpdir(), "svm-cg-"));
}

test("v1: the cpu and memory controllers' own mounts, with the agent's own paths", () => {
  const s = detectCgroups({ mountinfo: V1_MOUNTINFO, selfCgroup: V1_SELF, fsRoot: "/x" });
  assert.equal(s.cpu, { controller: "cpu", version: 1, mount: "/x/sys/fs/cgroup/cpu", ownPath: "/" });
  assert.equal(s.memory, {
    controller: "memory",
    version: 1,
    mount: "/x/sys/fs/cgroup/memory",
    ownPath: "/process_api/abc",
  });
  assert.equal(s.problems, []);
});

test("v2: controllers come from cgroup.controllers of the agent's own cgroup; a missing one is explained", () => {
  const root = fakeRoot();
  try {
    const own = join(root, "sys/fs/cgroup/system.slice/shadowvm-agent.service");
    mkdirSync(own, { recursive: true });
    writeFileSync(join(own, "cgroup.controllers"), "cpuset cpu io pids\n");
    const s = detectCgroups({ mountinfo: V2_MOUNTINFO, selfCgroup: V2_SELF, fsRoot: root });
    assert.equal(s.cpu?.version, 2);
    assert.is(s.cpu?.ownPath, "/system.slice/shadowvm-agent.service");
    assert.is(s.memory, undefined);
    assert.match(s.problems.join(" "), /does not delegate the memory controller/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("no cgroup mount at all: both controllers missing, with a reason", () => {
  const s = detectCgroups({ mountinfo: "", selfCgroup: "" });
  assert.is(s.cpu, undefined);
  assert.match(s.problems.join(" "), /no cgroup hierarchy with the cpu controller/);
});

test("cpuQuota: 100 ms periods, longer ones for shares below 1 % of a core", () => {
  assert.equal(cpuQuota(1.5), { periodUs: 100_000, quotaUs: 150_000 });
  assert.equal(cpuQuota(0.25), { periodUs: 100_000, quotaUs: 25_000 });
  assert.equal(cpuQuota(0.005), { periodUs: 200_000, quotaUs: 1000 });
  assert.equal(cpuQuota(0.0001), { periodUs: 1_000_000, quotaUs: 1000 });
  assert.throws(() => cpuQuota(0), /> 0 cores/);
});

test("v1 tree: parent budget, child quota clamped to it, memory limit, removal", async () => {
  const root = fakeRoot();
  try {
    const s = detectCgroups({ mountinfo: V1_MOUNTINFO, selfCgroup: V1_SELF, fsRoot: root });
    const cg = ShadowCgroups.forTag(s, "abc123");
    cg.ensureParent({ cpuCores: 1, memoryBytes: 512 * 1024 * 1024 });
    const cpuParent = join(root, "sys/fs/cgroup/cpu/shadowvm-abc123");
    const memParent = join(root, "sys/fs/cgroup/memory/process_api/abc/shadowvm-abc123");
    assert.is(readFileSync(join(cpuParent, "cpu.cfs_quota_us"), "utf8"), "100000");
    assert.is(readFileSync(join(cpuParent, "cpu.cfs_period_us"), "utf8"), "100000");
    assert.is(readFileSync(join(memParent, "memory.limit_in_bytes"), "utf8"), String(512 * 1024 * 1024));
    const child = cg.create("s1");
    assert.equal(child.dirs, [join(cpuParent, "s1"), join(memParent, "s1")]);
    child.addProcess(4242);
    assert.is(readFileSync(join(cpuParent, "s1", "cgroup.procs"), "utf8"), "4242");
    assert.is(child.setCpuLimit(0.005), 0.005);
    assert.is(readFileSync(join(cpuParent, "s1", "cpu.cfs_period_us"), "utf8"), "200000");
    assert.is(readFileSync(join(cpuParent, "s1", "cpu.cfs_quota_us"), "utf8"), "1000");
    assert.is(child.setCpuLimit(4), 1, "clamped to the parent's budget");
    child.setCpuLimit(undefined);
    assert.is(readFileSync(join(cpuParent, "s1", "cpu.cfs_quota_us"), "utf8"), "-1");
    assert.equal(cg.children(), ["s1"]);
    await child.remove();
    assert.equal(cg.children(), []);
    await cg.removeParentIfEmpty();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("v2 tree: controllers enabled down the tree, cpu.max and memory.max", () => {
  const root = fakeRoot();
  try {
    const own = join(root, "sys/fs/cgroup/system.slice/shadowvm-agent.service");
    mkdirSync(own, { recursive: true });
    writeFileSync(join(own, "cgroup.controllers"), "cpu memory pids\n");
    const s = detectCgroups({ mountinfo: V2_MOUNTINFO, selfCgroup: V2_SELF, fsRoot: root });
    const cg = ShadowCgroups.forTag(s, "t");
    cg.ensureParent({ cpuCores: 0.5, memoryBytes: 1 << 30 });
    assert.is(readFileSync(join(own, "cgroup.subtree_control"), "utf8"), "+cpu +memory");
    const parent = join(own, "shadowvm-t");
    assert.is(readFileSync(join(parent, "cgroup.subtree_control"), "utf8"), "+cpu +memory");
    assert.is(readFileSync(join(parent, "cpu.max"), "utf8"), "50000 100000");
    assert.is(readFileSync(join(parent, "memory.max"), "utf8"), String(1 << 30));
    const child = cg.create("s2");
    assert.equal(child.dirs, [join(parent, "s2")], "one unified directory");
    assert.is(readFileSync(join(parent, "s2", "cpu.max"), "utf8"), "max 100000");
    child.setCpuLimit(0.1);
    assert.is(readFileSync(join(parent, "s2", "cpu.max"), "utf8"), "10000 100000");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test.run();
