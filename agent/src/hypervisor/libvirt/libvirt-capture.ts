// Live capture of a libvirt domain: the capture service (capture/capture-service.ts) and its
// technique (capture/live-capture.ts) unchanged, over the domain's QMP bridge (qmp-bridge.ts).
//
// The capture talks QMP to `vm.address`, which for a libvirt domain is its bridge; every command
// goes through libvirt's QMP passthrough, the memory file's fd through `--pass-fds`, and the
// STOP/RESUME/MIGRATION events come from libvirt with QEMU's own timestamps, so the guarantees
// are the qemu driver's: memory and every disk frozen at the same instant (the overlays are
// snapshotted while the guest is paused at `pre-switchover`), the pause measured by QEMU.
// libvirt stays in charge: it sees the guest pause and resume through the same events (its state
// goes paused, then running), the block graph ends as libvirt built it (overlays committed back
// and deleted), and the migration settings are restored; libvirt logs the domain as tainted
// ("custom-monitor") because QMP passthrough was used.
import { readdirSync, readFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import type { Logger } from "@shadowvm/shared";
import { recoverInterruptedCaptures } from "../../capture/capture-recovery.js";
import { type CaptureRecord, type CaptureVmOptions, captureVm } from "../../capture/capture-service.js";
import { type CaptureJournal, JOURNAL_FILE } from "../../capture/live-capture.js";
import type { QemuDriver } from "../qemu/qemu-driver.js";
import type { LibvirtDriver } from "./libvirt-driver.js";

export interface CaptureLibvirtVmOptions extends Omit<CaptureVmOptions, "driver"> {
  driver: LibvirtDriver;
}

/** What the capture service uses of its driver; LibvirtDriver provides the same. */
type CaptureDriver = Pick<QemuDriver, "getVm" | "connect">;

function asCaptureDriver(driver: LibvirtDriver): QemuDriver {
  const used: CaptureDriver = driver; // type-checks that the methods the service calls match
  // capture-service types its driver as QemuDriver (a class with private state) but calls only
  // getVm() and connect(address), checked above.
  return used as unknown as QemuDriver;
}

/**
 * Captures one running libvirt domain into the store (see capture-service.ts for the layout).
 * Interrupted captures of earlier agent processes are recovered first (recoverLibvirtCaptures).
 */
export async function captureLibvirtVm(options: CaptureLibvirtVmOptions): Promise<CaptureRecord> {
  await recoverLibvirtCaptures(options.driver, options.stagingRoot, options.logger);
  return captureVm({ ...options, driver: asCaptureDriver(options.driver) });
}

/** True when something accepts connections on the unix socket at `path`. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * Crash recovery of interrupted captures of libvirt domains. A journal names the bridge socket
 * of the agent process that wrote it (`<bridge dir>/<uuid>.qmp`); for a domain that still runs,
 * this driver serves a bridge at that very path (unless another live agent process still does),
 * then the common recovery (capture-recovery.ts) undoes the capture through it: migration
 * cancelled, guest resumed, overlays merged back. A domain that no longer runs gets no bridge, and
 * the common recovery commits its overlays offline.
 */
export async function recoverLibvirtCaptures(
  driver: LibvirtDriver,
  stagingRoot: string,
  logger?: Logger,
): ReturnType<typeof recoverInterruptedCaptures> {
  let entries: string[];
  try {
    entries = readdirSync(stagingRoot);
  } catch {
    return [];
  }
  const journals: CaptureJournal[] = [];
  for (const entry of entries) {
    try {
      journals.push(
        JSON.parse(readFileSync(join(stagingRoot, entry, JOURNAL_FILE), "utf8")) as CaptureJournal,
      );
    } catch {
      // no journal: nothing of production to restore (the common recovery removes the dir)
    }
  }
  if (journals.length > 0) {
    const { vms } = await driver.listVms();
    for (const journal of journals) {
      const uuid = /([0-9a-f-]{36})\.qmp$/.exec(journal.qmpSocket)?.[1];
      const vm = vms.find((v) => v.uuid === uuid);
      if (!vm || vm.address === journal.qmpSocket || (await socketAnswers(journal.qmpSocket))) continue;
      await driver.serveBridgeAt(vm.uuid, vm.name, journal.qmpSocket);
    }
  }
  return recoverInterruptedCaptures(stagingRoot, logger);
}
