// A capture restored from the encrypted store into plain files that QEMU can open: the frozen
// disk chains (re-linked to each other) and the memory stream. Restored once per capture and
// shared read-only by all of its shadows; every shadow writes only into its own overlays.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { ShadowvmError } from "@shadowvm/shared";
import type { CaptureStore } from "../capture/store/index.js";
import type { VmInventory } from "../hypervisor/driver.js";

const execFileAsync = promisify(execFile);

export interface RestoredDisk {
  node: string;
  device: string | undefined;
  /** Production's top image (how the shadow command line finds -drive disks). */
  productionFile: string;
  /** The restored frozen top image; shadows put their overlays on it. */
  top: string;
  format: string;
  sizeBytes: number;
}

export interface RestoredCapture {
  captureId: string;
  vm: string;
  dir: string;
  memoryFile: string;
  disks: RestoredDisk[];
  inventory: VmInventory;
  productionArgv: string[];
  /** Guest addresses recorded at capture time, when a guest agent answered. */
  guestAddresses: { ip?: string; address?: string; prefix?: number }[];
}

interface CaptureDiskMeta {
  node: string;
  device?: string;
  size_bytes: number;
  chain: { part: string; format: string }[];
}

const DONE_MARKER = "restored.json";

/** Restores (or reuses an earlier restore of) a capture under `cacheRoot/<capture id>`. */
export async function restoreCapture(
  store: CaptureStore,
  captureId: string,
  cacheRoot: string,
): Promise<RestoredCapture> {
  const dir = join(cacheRoot, captureId);
  const marker = join(dir, DONE_MARKER);
  if (existsSync(marker)) return JSON.parse(readFileSync(marker, "utf8")) as RestoredCapture;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    const info = await store.get(captureId);
    const read = async (part: string) => {
      const chunks: Buffer[] = [];
      for await (const c of await store.openPart(captureId, part)) chunks.push(c as Buffer);
      return JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
    };
    const config = (await read("config.json")) as { inventory: VmInventory; command_line: string[] };
    const network = (await read("network.json")) as {
      guest?: { addresses?: RestoredCapture["guestAddresses"] };
    };
    const diskMeta = (info.metadata["disks"] ?? []) as CaptureDiskMeta[];
    const disks: RestoredDisk[] = [];
    for (const d of diskMeta) {
      const files = d.chain.map((c, depth) =>
        join(dir, `disk-${d.node.replace(/[^\w.-]/g, "_")}-${depth}.${c.format}`),
      );
      for (const [depth, c] of d.chain.entries()) await store.restorePart(captureId, c.part, files[depth]!);
      // Re-link each image to its restored backing file (headers still name production's paths).
      for (let depth = 0; depth < d.chain.length - 1; depth++) {
        if (d.chain[depth]!.format !== "qcow2") continue;
        await execFileAsync("qemu-img", [
          "rebase",
          "-u",
          "-b",
          files[depth + 1]!,
          "-F",
          d.chain[depth + 1]!.format,
          files[depth]!,
        ]);
      }
      const production = config.inventory.disks.find((x) => x.node === d.node);
      disks.push({
        node: d.node,
        device: d.device,
        productionFile: production?.file ?? "",
        top: files[0]!,
        format: d.chain[0]!.format,
        sizeBytes: d.size_bytes,
      });
    }
    const memoryFile = join(dir, "memory.migration");
    await store.restorePart(captureId, "memory", memoryFile, { sparse: false });
    const restored: RestoredCapture = {
      captureId,
      vm: info.vm,
      dir,
      memoryFile,
      disks,
      inventory: config.inventory,
      productionArgv: config.command_line,
      guestAddresses: network.guest?.addresses ?? [],
    };
    writeFileSync(marker, JSON.stringify(restored, null, 2), { mode: 0o600 });
    return restored;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new ShadowvmError(
      "shadow",
      "restore_failed",
      `cannot restore capture ${captureId}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}
