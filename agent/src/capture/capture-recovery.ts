// Finishes the undo of captures interrupted by an agent crash. Run at agent start-up, before
// anything else touches the VMs.
//
// Each capture keeps a journal (live-capture.ts) in its staging directory while it has changed
// production in any way. For each journal found:
//  - the VM still runs (its QMP socket answers): cancel a migration still in flight, resume the
//    guest if the capture left it paused, merge every overlay that is still in the block graph back
//    into its original, delete the overlay nodes and files, restore the migration settings;
//  - the VM is gone (QEMU exited while production was on an overlay): `qemu-img commit` each
//    overlay file into its original offline, so the writes production made are not lost when the
//    VM is started again from its original disks.
// Then the staging directory (partial memory file, overlays, journal) is deleted.
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Logger, silentLogger } from "@shadowvm/shared";
import { QmpClient } from "../hypervisor/qemu/qmp-client.js";
import { type CaptureJournal, JOURNAL_FILE, undoCapture } from "./live-capture.js";

const execFileAsync = promisify(execFile);

export interface RecoveredCapture {
  id: string;
  vm: string;
  step: CaptureJournal["step"];
  action: "restored-live" | "committed-offline" | "removed-staging";
  error?: string;
}

function readJournal(dir: string): CaptureJournal | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, JOURNAL_FILE), "utf8")) as CaptureJournal;
  } catch {
    return undefined;
  }
}

/** Recovers every interrupted capture under `stagingRoot`. Never throws for one bad capture. */
export async function recoverInterruptedCaptures(
  stagingRoot: string,
  logger?: Logger,
): Promise<RecoveredCapture[]> {
  const log = logger ?? silentLogger();
  if (!existsSync(stagingRoot)) return [];
  const results: RecoveredCapture[] = [];
  for (const entry of readdirSync(stagingRoot)) {
    const dir = join(stagingRoot, entry);
    const journal = readJournal(dir);
    if (!journal) {
      // No journal: the capture never touched production (or the journal write itself was cut).
      rmSync(dir, { recursive: true, force: true });
      results.push({ id: entry, vm: "?", step: "prepared", action: "removed-staging" });
      continue;
    }
    const result: RecoveredCapture = {
      id: journal.id,
      vm: journal.vm,
      step: journal.step,
      action: "restored-live",
    };
    try {
      let qmp: QmpClient | undefined;
      try {
        qmp = await QmpClient.connect(journal.qmpSocket, {
          connectTimeoutMs: 5000,
          commandTimeoutMs: 60_000,
        });
      } catch {
        qmp = undefined;
      }
      if (qmp) {
        try {
          await undoCapture(qmp, journal, { snapshotted: true, fdName: journal.fdName, log });
        } finally {
          qmp.close();
        }
      } else {
        result.action = "committed-offline";
        for (const o of journal.overlays) {
          if (!existsSync(o.overlayFile)) continue;
          // The overlay's header names the original as its backing file, so this merges the
          // writes production made after the freeze back into the original disk.
          await execFileAsync("qemu-img", ["commit", "-q", o.overlayFile]);
        }
      }
      rmSync(dir, { recursive: true, force: true });
      log.warn(
        { capture: journal.id, vm: journal.vm, step: journal.step, action: result.action },
        "recovered interrupted capture",
      );
    } catch (err) {
      result.error = (err as Error).message;
      log.error(
        { capture: journal.id, vm: journal.vm, err: result.error },
        "could not recover interrupted capture; will retry at next start",
      );
    }
    results.push(result);
  }
  return results;
}
