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
//
// A journal names the QMP socket the capture used. For the qemu driver that is QEMU's own socket,
// which answers as long as the VM runs. For a libvirt domain it is the QMP bridge of the agent
// process that wrote the journal, which went away with that process: the driver's
// prepareCaptureRecovery serves a bridge at the recorded path again before anything connects to it,
// otherwise recovery would take a running domain for gone.
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

/** What recovery asks of the VMs' driver (capture-service.ts's CaptureDriver has it). */
export interface CaptureRecoveryDriver {
  /**
   * Makes the QMP sockets recorded in interrupted captures' journals answer again where the VM
   * still runs (libvirt: serves a bridge at the recorded path); the qemu driver needs nothing.
   * Called with every journal found, before recovery connects to any of them.
   */
  prepareCaptureRecovery?(journals: CaptureJournal[]): Promise<void>;
}

function readJournal(dir: string): CaptureJournal | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, JOURNAL_FILE), "utf8")) as CaptureJournal;
  } catch {
    return undefined;
  }
}

/** Each staging directory under `stagingRoot` with its journal (undefined: it has none). */
function stagingEntries(stagingRoot: string): { entry: string; journal: CaptureJournal | undefined }[] {
  if (!existsSync(stagingRoot)) return [];
  return readdirSync(stagingRoot).map((entry) => ({ entry, journal: readJournal(join(stagingRoot, entry)) }));
}

/**
 * Recovers every interrupted capture under `stagingRoot`. Never throws for one bad capture; throws
 * when `driver.prepareCaptureRecovery` does (then nothing was recovered: without it a VM that
 * still runs could be taken for gone).
 */
export async function recoverInterruptedCaptures(
  stagingRoot: string,
  logger?: Logger,
  driver?: CaptureRecoveryDriver,
): Promise<RecoveredCapture[]> {
  const log = logger ?? silentLogger();
  const entries = stagingEntries(stagingRoot);
  const journals = entries.flatMap((e) => (e.journal ? [e.journal] : []));
  if (journals.length > 0) await driver?.prepareCaptureRecovery?.(journals);
  const results: RecoveredCapture[] = [];
  for (const { entry, journal } of entries) {
    const dir = join(stagingRoot, entry);
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
