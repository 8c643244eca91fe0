// Live, consistent capture of a running QEMU VM: memory, every disk, configuration and network
// state frozen at one instant, with a guest pause of milliseconds.
//
// Technique (proven on this project's machines, see docs/architecture.md):
//  1. Before anything pauses: create a qcow2 overlay file per disk (its header names the original
//     as backing, so an offline `qemu-img commit` can always merge it back) and `blockdev-add` it
//     with `backing: null`, so the pause has no node creation in it.
//  2. Pre-copy migration of RAM to a file passed as an fd (`getfd`), with the capabilities
//     `events` and `pause-before-switchover` and a `downtime-limit` of a few ms.
//  3. On the MIGRATION event `pre-switchover` the guest is paused: `blockdev-snapshot` puts each
//     overlay on top of its disk (the originals are now frozen at exactly the memory's instant)
//     and `migrate-continue` is sent back to back. On `completed`, `cont`.
//     The pause is measured from QEMU's own STOP and RESUME event timestamps.
//  4. Production now runs on the overlays. The frozen images are copied into the capture store in
//     the background (bandwidth-capped), then `block-commit` + `job-complete` merges each overlay
//     back, the overlay nodes are deleted, and the migration settings are restored.
//
// Safety: every step after (1) is undone on failure or timeout (migrate_cancel, commit back,
// `cont`), and a journal in the staging directory lets the next agent start finish the undo if
// the agent dies mid-capture (see capture-recovery.ts). Production never stays on an overlay.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Logger, ShadowvmError, silentLogger } from "@shadowvm/shared";
import type { VmInventory } from "../hypervisor/driver.js";
import { QmpClient, type QmpEvent } from "../hypervisor/qemu/qmp-client.js";

const execFileAsync = promisify(execFile);

/** One file of a disk's frozen backing chain, top first. */
export interface FrozenImage {
  file: string;
  format: string;
  /** Backing file as written in the image header (relative or absolute), if any. */
  backingFile: string | undefined;
}

export interface FrozenDisk {
  node: string;
  device: string | undefined;
  sizeBytes: number;
  chain: FrozenImage[];
}

/** What the journal records while production runs on an overlay. */
export interface CaptureJournal {
  id: string;
  vm: string;
  qmpSocket: string;
  /** The memory file's descriptor name in QEMU's monitor (closed on undo). */
  fdName: string;
  startedAtMs: number;
  /** Where the capture got to; recovery decides what to undo from it. */
  step: "prepared" | "migrating" | "snapshotted" | "resumed" | "copied" | "merged";
  overlays: {
    diskNode: string;
    overlayNode: string;
    overlayFile: string;
    originalFile: string;
    format: string;
  }[];
  savedMigration: {
    parameters: Record<string, unknown>;
    capabilities: { capability: string; state: boolean }[];
  };
}

export interface LiveCaptureOptions {
  /**
   * Opens the capture's QMP session (held for the whole capture: it needs the events). Called
   * after the memory file's descriptor was handed to QEMU over a short connection of its own.
   */
  connect(): Promise<QmpClient>;
  vm: VmInventory;
  /** Staging directory for this capture (0700); holds the journal, overlays and memory file. */
  stagingDir: string;
  /** Called after the guest resumed, with the frozen disks, while production runs on overlays. */
  copyFrozenDisks(disks: FrozenDisk[]): Promise<void>;
  /** Hard deadline for the whole capture; on expiry it aborts and restores production. */
  timeoutMs?: number;
  /** Deadline for pre-copy to reach the switchover point. */
  migrationTimeoutMs?: number;
  /** Allowed downtime for the final stop-and-copy (QEMU's downtime-limit), ms. */
  downtimeLimitMs?: number;
  logger?: Logger;
  /** Called after each journal step is durable (progress reporting; crash-safety tests). */
  onStep?: (step: CaptureJournal["step"]) => void | Promise<void>;
}

export interface LiveCaptureResult {
  id: string;
  pauseMs: number;
  stopTimestampMs: number;
  resumeTimestampMs: number;
  memoryFile: string;
  memoryBytes: number;
  disks: FrozenDisk[];
  startedAtMs: number;
  finishedAtMs: number;
}

export const JOURNAL_FILE = "journal.json";
export const MEMORY_FILE = "memory.migration";

export function writeJournal(dir: string, journal: CaptureJournal): void {
  const tmp = join(dir, `${JOURNAL_FILE}.tmp`);
  writeFileSync(tmp, JSON.stringify(journal, null, 2), { mode: 0o600 });
  // rename is atomic: recovery sees the old or the new journal, never half of one.
  renameSync(tmp, join(dir, JOURNAL_FILE));
}

interface BlockImageInfo {
  filename: string;
  format: string;
  "virtual-size": number;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  "backing-image"?: BlockImageInfo;
}

interface QueryBlockEntry {
  qdev?: string;
  inserted?: { "node-name"?: string; image: BlockImageInfo; ro: boolean };
}

async function recordStep(
  dir: string,
  journal: CaptureJournal,
  onStep: LiveCaptureOptions["onStep"],
): Promise<void> {
  writeJournal(dir, journal);
  await onStep?.(journal.step);
}

/** The backing chain of each writable disk, read from QEMU (top first). */
export async function readDiskChains(qmp: QmpClient): Promise<FrozenDisk[]> {
  const blocks = await qmp.execute<QueryBlockEntry[]>("query-block");
  const disks: FrozenDisk[] = [];
  for (const b of blocks) {
    const ins = b.inserted;
    if (!ins?.["node-name"] || ins.ro) continue;
    const chain: FrozenImage[] = [];
    for (let img: BlockImageInfo | undefined = ins.image; img; img = img["backing-image"]) {
      chain.push({ file: img.filename, format: img.format, backingFile: img["backing-filename"] });
    }
    disks.push({
      node: ins["node-name"],
      device: b.qdev?.replace(/^\/machine\/peripheral(-anon)?\//, "").replace(/\/virtio-backend$/, ""),
      sizeBytes: ins.image["virtual-size"],
      chain,
    });
  }
  return disks;
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ShadowvmError("capture", "timeout", `${what} did not finish within ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Runs one live capture. On any failure production is restored before the error is thrown. */
export async function liveCapture(options: LiveCaptureOptions): Promise<LiveCaptureResult> {
  const { vm, stagingDir } = options;
  const log = options.logger ?? silentLogger();
  const id = randomUUID();
  const startedAtMs = Date.now();
  const deadlineAt = startedAtMs + (options.timeoutMs ?? 30 * 60_000);
  const remaining = () => Math.max(1, deadlineAt - Date.now());
  mkdirSync(stagingDir, { recursive: true, mode: 0o700 });
  const memoryFile = join(stagingDir, MEMORY_FILE);
  const fdName = `svm-capture-${id.slice(0, 8)}`;
  const fd = openSync(memoryFile, "w", 0o600);
  try {
    await QmpClient.passFd(vm.address, fdName, fd);
  } finally {
    closeSync(fd);
  }
  const qmp = await options.connect();
  try {
    return await captureWithSession(qmp, options, { id, startedAtMs, remaining, memoryFile, fdName, log });
  } catch (err) {
    await qmp.execute("closefd", { fdname: fdName }).catch(() => undefined);
    throw err;
  } finally {
    qmp.close();
  }
}

interface SessionContext {
  id: string;
  startedAtMs: number;
  remaining(): number;
  memoryFile: string;
  fdName: string;
  log: Logger;
}

async function captureWithSession(
  qmp: QmpClient,
  options: LiveCaptureOptions,
  { id, startedAtMs, remaining, memoryFile, fdName, log }: SessionContext,
): Promise<LiveCaptureResult> {
  const { vm, stagingDir } = options;
  const status = await qmp.execute<{ status: string }>("query-status");
  if (status.status !== "running") {
    throw new ShadowvmError(
      "capture",
      "not_running",
      `VM ${vm.name} is ${status.status}; a live capture needs a running VM`,
    );
  }
  const migrate = await qmp.execute<{ status?: string }>("query-migrate");
  if (
    migrate.status &&
    ["setup", "active", "pre-switchover", "device", "cancelling"].includes(migrate.status)
  ) {
    throw new ShadowvmError(
      "capture",
      "busy",
      `VM ${vm.name} already has a migration in progress (${migrate.status})`,
    );
  }
  const disks = await readDiskChains(qmp);
  const journal: CaptureJournal = {
    id,
    vm: vm.name,
    qmpSocket: vm.address,
    fdName,
    startedAtMs,
    step: "prepared",
    overlays: disks.map((d, i) => ({
      diskNode: d.node,
      overlayNode: `svm-ovl-${id.slice(0, 8)}-${i}`,
      overlayFile: join(stagingDir, `overlay-${i}.qcow2`),
      originalFile: d.chain[0]!.file,
      format: d.chain[0]!.format,
    })),
    savedMigration: {
      parameters: await qmp.execute("query-migrate-parameters"),
      capabilities: await qmp.execute("query-migrate-capabilities"),
    },
  };
  await recordStep(stagingDir, journal, options.onStep);

  let snapshotted = false;
  let stopTs: number | undefined;
  let resumeTs: number | undefined;
  const onEvent = (e: QmpEvent) => {
    if (e.event === "STOP" && stopTs === undefined) stopTs = e.timestampMs;
    if (e.event === "RESUME" && stopTs !== undefined && resumeTs === undefined) resumeTs = e.timestampMs;
  };
  qmp.on("event", onEvent);
  try {
    // 1. Overlays, created and attached before anything pauses.
    for (const [i, o] of journal.overlays.entries()) {
      await execFileAsync("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        o.originalFile,
        "-F",
        o.format,
        o.overlayFile,
        String(disks[i]!.sizeBytes),
      ]);
      await qmp.execute("blockdev-add", {
        driver: "qcow2",
        "node-name": o.overlayNode,
        file: { driver: "file", filename: o.overlayFile },
        backing: null,
      });
    }

    // 2. Migration of RAM into a file passed as an fd.
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "events", state: true },
        { capability: "pause-before-switchover", state: true },
      ],
    });
    await qmp.execute("migrate-set-parameters", {
      "downtime-limit": options.downtimeLimitMs ?? 1,
      "max-bandwidth": 4 * 1024 ** 3,
    });
    const migrationEvent = (wanted: string[]) =>
      qmp.waitForEvent("MIGRATION", (e) => wanted.includes(String(e.data["status"])), remaining());
    const preSwitchover = migrationEvent(["pre-switchover", "failed", "cancelled"]);
    journal.step = "migrating";
    await recordStep(stagingDir, journal, options.onStep);
    await qmp.execute("migrate", { uri: `fd:${fdName}` });
    const reached = await withDeadline(
      preSwitchover,
      Math.min(remaining(), options.migrationTimeoutMs ?? 10 * 60_000),
      "pre-copy migration",
    );
    if (reached.data["status"] !== "pre-switchover") {
      throw new ShadowvmError(
        "capture",
        "migration_failed",
        `memory migration ended with status ${String(reached.data["status"])}`,
      );
    }

    // 3. The guest is paused: freeze the disks at this instant and let the migration finish.
    const completed = migrationEvent(["completed", "failed", "cancelled"]);
    const snapshots = journal.overlays.map((o) =>
      qmp.execute("blockdev-snapshot", { node: o.diskNode, overlay: o.overlayNode }),
    );
    const continued = qmp.execute("migrate-continue", { state: "pre-switchover" });
    await Promise.all(snapshots);
    snapshotted = true;
    journal.step = "snapshotted";
    await recordStep(stagingDir, journal, options.onStep);
    await continued;
    const done = await completed;
    if (done.data["status"] !== "completed") {
      throw new ShadowvmError(
        "capture",
        "migration_failed",
        `memory migration ended with status ${String(done.data["status"])}`,
      );
    }
    const resumed = qmp.waitForEvent("RESUME", undefined, remaining());
    await contAfterMigration(qmp);
    await resumed;
    journal.step = "resumed";
    await recordStep(stagingDir, journal, options.onStep);
    log.info(
      { capture: id, vm: vm.name, pause_ms: (resumeTs ?? 0) - (stopTs ?? 0) },
      "guest resumed on overlays",
    );

    // 4. Copy the frozen images while production runs on the overlays, then merge back.
    await withDeadline(options.copyFrozenDisks(disks), remaining(), "copying the frozen disks");
    journal.step = "copied";
    await recordStep(stagingDir, journal, options.onStep);
    await mergeOverlays(qmp, journal, remaining());
    snapshotted = false;
    journal.step = "merged";
    await recordStep(stagingDir, journal, options.onStep);
    await restoreMigrationSettings(qmp, journal);

    if (stopTs === undefined || resumeTs === undefined) {
      throw new ShadowvmError(
        "capture",
        "no_pause_events",
        "QEMU sent no STOP/RESUME events for the switchover",
      );
    }
    return {
      id,
      pauseMs: resumeTs - stopTs,
      stopTimestampMs: stopTs,
      resumeTimestampMs: resumeTs,
      memoryFile,
      memoryBytes: statSync(memoryFile).size,
      disks,
      startedAtMs,
      finishedAtMs: Date.now(),
    };
  } catch (err) {
    log.warn(
      { capture: id, vm: vm.name, err: (err as Error).message },
      "capture failed; restoring production",
    );
    await undoCapture(qmp, journal, { snapshotted, fdName, log }).catch((undoErr) => {
      log.error(
        { capture: id, err: (undoErr as Error).message },
        "could not fully restore production; recovery will retry",
      );
      throw new ShadowvmError(
        "capture",
        "undo_failed",
        `capture failed (${(err as Error).message}) and restoring production failed too (${(undoErr as Error).message}); the journal in ${stagingDir} lets the next agent start finish the undo`,
        { cause: err },
      );
    });
    throw err;
  } finally {
    qmp.off("event", onEvent);
  }
}

/**
 * `cont` right after the MIGRATION `completed` event. QEMU emits the event from the migration
 * thread before its cleanup has run in the main loop, and `cont` in that window fails with
 * "Migration is not finalized yet"; retrying at once (bounded) costs the guest only that window.
 */
async function contAfterMigration(qmp: QmpClient, deadlineMs = 5000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      await qmp.execute("cont");
      return;
    } catch (err) {
      if (!(err instanceof Error) || !/not finalized/.test(err.message) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

/** Active commit of each overlay into its original, then removal of the overlay nodes. */
export async function mergeOverlays(
  qmp: QmpClient,
  journal: CaptureJournal,
  timeoutMs: number,
): Promise<void> {
  const graph = await qmp.execute<{ "node-name": string }[]>("query-named-block-nodes", { flat: true });
  const present = new Set(graph.map((n) => n["node-name"]));
  for (const o of journal.overlays) {
    if (!present.has(o.overlayNode)) continue;
    const jobId = `${o.overlayNode}-commit`;
    const isActive = await overlayIsActive(qmp, o.overlayNode);
    if (isActive) {
      const ready = qmp.waitForEvent("BLOCK_JOB_READY", (e) => e.data["device"] === jobId, timeoutMs);
      const finished = qmp.waitForEvent("BLOCK_JOB_COMPLETED", (e) => e.data["device"] === jobId, timeoutMs);
      // base-node: only into the disk frozen by this capture, never further down its chain.
      await qmp.execute("block-commit", {
        "job-id": jobId,
        device: o.overlayNode,
        "base-node": o.diskNode,
        "auto-dismiss": true,
      });
      await ready;
      await qmp.execute("job-complete", { id: jobId });
      const result = await finished;
      if (result.data["error"]) {
        throw new ShadowvmError(
          "capture",
          "merge_failed",
          `merging overlay ${o.overlayNode} failed: ${String(result.data["error"])}`,
        );
      }
    }
    await qmp.execute("blockdev-del", { "node-name": o.overlayNode });
    rmSync(o.overlayFile, { force: true });
  }
}

/** True when the overlay is the top of a device's graph (so production writes into it). */
async function overlayIsActive(qmp: QmpClient, overlayNode: string): Promise<boolean> {
  const blocks = await qmp.execute<QueryBlockEntry[]>("query-block");
  return blocks.some((b) => b.inserted?.["node-name"] === overlayNode);
}

export async function restoreMigrationSettings(qmp: QmpClient, journal: CaptureJournal): Promise<void> {
  const caps = journal.savedMigration.capabilities.filter((c) =>
    ["events", "pause-before-switchover"].includes(c.capability),
  );
  if (caps.length) await qmp.execute("migrate-set-capabilities", { capabilities: caps });
  const p = journal.savedMigration.parameters;
  await qmp.execute("migrate-set-parameters", {
    "downtime-limit": p["downtime-limit"],
    "max-bandwidth": p["max-bandwidth"],
  });
}

/** Puts production back as it was: migration cancelled, guest running, overlays merged away. */
export async function undoCapture(
  qmp: QmpClient,
  journal: CaptureJournal,
  ctx: { snapshotted: boolean; fdName?: string; log: Logger },
): Promise<void> {
  const migrate = await qmp.execute<{ status?: string }>("query-migrate");
  if (migrate.status && !["completed", "failed", "cancelled", "none"].includes(migrate.status)) {
    const ended = qmp.waitForEvent(
      "MIGRATION",
      (e) => ["cancelled", "failed", "completed"].includes(String(e.data["status"])),
      60_000,
    );
    await qmp.execute("migrate_cancel");
    await ended.catch(() => undefined);
  }
  if (ctx.fdName) await qmp.execute("closefd", { fdname: ctx.fdName }).catch(() => undefined);
  const status = await qmp.execute<{ status: string }>("query-status");
  if (status.status !== "running") await contAfterMigration(qmp);
  await mergeOverlays(qmp, journal, 10 * 60_000);
  await restoreMigrationSettings(qmp, journal);
  for (const o of journal.overlays) rmSync(o.overlayFile, { force: true });
  ctx.log.info({ capture: journal.id }, "production restored after failed capture");
}
