// `shadowvm-agent capture <vm>` and `shadowvm-agent captures list|verify|rm`.
import { formatBytes, formatTable } from "@shadowvm/shared";
import { captureSettings, captureStoreLocation, captureVm } from "../capture/capture-service.js";
import { CaptureStore, type PartProgress } from "../capture/store/index.js";
import { type CommandContext, type ParsedCommand, parseCommand, UsageError } from "./cli-context.js";

export const CAPTURE_USAGE = `Usage: shadowvm-agent capture <vm> [--json] [--key-file FILE] [--bandwidth MB/s] [--timeout S]

Takes a live, consistent capture of a running VM (memory, every disk, configuration, network
state at one instant; the guest pauses for milliseconds) into the encrypted, deduplicated capture
store. Prints the capture record (--json: id, vm, pause_ms, memory_bytes, disk_bytes, stored_bytes,
new_bytes, ...). Progress of the copy is shown on stderr when it is a terminal.`;

export const CAPTURES_USAGE = `Usage: shadowvm-agent captures list [--json]
       shadowvm-agent captures verify <id> [--json]   exit code 1 on any integrity failure
       shadowvm-agent captures rm <id>...

Options: --key-file FILE (default: capture.key_file, or <data_dir>/keys/capture-store.key)`;

const STORE_OPTIONS = { "key-file": { type: "string" } } as const;

async function openStore(cmd: ParsedCommand, ctx: CommandContext, readOnly: boolean): Promise<CaptureStore> {
  const where = captureStoreLocation(cmd.config, cmd.values["key-file"] as string | undefined);
  const store = await CaptureStore.open({ dir: where.dir, keyFile: where.keyFile, readOnly });
  if (store.keyFileCreated) {
    ctx.io.err(
      `shadowvm-agent: created a new capture store key at ${where.keyFile} (mode 0600); back it up: captures cannot be read without it`,
    );
  }
  return store;
}

/** A one-line progress bar on a terminal; nothing when stderr is a pipe or a journal. */
function progressReporter(): ((p: PartProgress) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  const started = new Map<string, number>();
  return (p) => {
    const t0 = started.get(p.part) ?? Date.now();
    started.set(p.part, t0);
    const secs = Math.max(0.001, (Date.now() - t0) / 1000);
    const total = p.totalBytes ?? 0;
    const frac = total > 0 ? Math.min(1, p.bytesRead / total) : 0;
    const bar = "#".repeat(Math.round(frac * 30)).padEnd(30, ".");
    process.stderr.write(
      `\r${p.part.padEnd(18)} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(p.bytesRead)} ${(p.bytesRead / secs / 1e6).toFixed(1)} MB/s   ${frac >= 1 ? "\n" : ""}`,
    );
  };
}

export async function captureCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, {
    ...STORE_OPTIONS,
    bandwidth: { type: "string" },
    timeout: { type: "string" },
  });
  const [vmName, ...extra] = cmd.positionals;
  if (!vmName || extra.length)
    throw new UsageError("capture takes exactly one VM (name, uuid or QMP socket path)");
  const bandwidth = Number(cmd.values["bandwidth"] ?? cmd.config.capture.bandwidth_mb_s);
  const timeout = Number(cmd.values["timeout"] ?? cmd.config.capture.timeout_s);
  if (!(bandwidth > 0))
    throw new UsageError(
      `--bandwidth must be a positive number of MB/s (actual: ${cmd.values["bandwidth"]})`,
    );
  if (!(timeout > 0))
    throw new UsageError(`--timeout must be a positive number of seconds (actual: ${cmd.values["timeout"]})`);
  const store = await openStore(cmd, ctx, false);
  const driver = cmd.createDriver();
  try {
    const record = await captureVm({
      driver,
      store,
      vm: vmName,
      ...captureSettings(cmd.config, { bandwidthMbS: bandwidth, timeoutS: timeout }),
      onProgress: progressReporter(),
    });
    if (cmd.values.json) {
      ctx.io.out(JSON.stringify(record, null, 2));
    } else {
      ctx.io.out(
        `captured ${record.vm} as ${record.id}: guest paused ${record.pause_ms.toFixed(1)} ms; memory ${formatBytes(record.memory_bytes)}, disks ${formatBytes(record.disk_bytes)}; stored ${formatBytes(record.stored_bytes)} (${formatBytes(record.new_bytes)} new)`,
      );
    }
    return 0;
  } finally {
    await store.close();
    await driver.close();
  }
}

export async function capturesCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, STORE_OPTIONS);
  const [action, ...ids] = cmd.positionals;
  switch (action) {
    case "list": {
      const store = await openStore(cmd, ctx, true);
      try {
        const { captures, damaged } = await store.scan();
        if (cmd.values.json) {
          ctx.io.out(
            JSON.stringify(
              { captures, damaged: damaged.map((d) => ({ id: d.id, error: d.error.message })) },
              null,
              2,
            ),
          );
        } else {
          ctx.io.out(
            formatTable(
              ["ID", "VM", "CREATED", "PAUSE", "STORED", "NEW", "PARTS"],
              captures.map((c) => [
                c.id,
                c.vm,
                c.created_at,
                typeof c.metadata["pause_ms"] === "number"
                  ? `${(c.metadata["pause_ms"] as number).toFixed(1)}ms`
                  : "-",
                formatBytes(c.stored_bytes),
                formatBytes(c.new_bytes),
                String(c.parts.length),
              ]),
            ),
          );
          for (const d of damaged)
            ctx.io.err(`shadowvm-agent: error: capture ${d.id} cannot be read: ${d.error.message}`);
        }
        return damaged.length ? 1 : 0;
      } finally {
        await store.close();
      }
    }
    case "verify": {
      if (ids.length !== 1) throw new UsageError("captures verify takes exactly one capture id");
      const store = await openStore(cmd, ctx, true);
      try {
        const result = await store.verify(ids[0]!);
        if (cmd.values.json) ctx.io.out(JSON.stringify(result, null, 2));
        else if (result.ok) {
          ctx.io.out(
            `capture ${result.id}: ok (${result.parts_checked} parts, ${result.chunks_checked} chunks, ${formatBytes(result.bytes_checked)})`,
          );
        }
        if (!result.ok)
          for (const p of result.problems)
            ctx.io.err(`shadowvm-agent: error: capture ${result.id}: ${p.message}`);
        return result.ok ? 0 : 1;
      } finally {
        await store.close();
      }
    }
    case "rm": {
      if (ids.length === 0) throw new UsageError("captures rm takes one or more capture ids");
      const store = await openStore(cmd, ctx, false);
      try {
        for (const id of ids) {
          const { gc } = await store.remove(id);
          ctx.io.out(`removed ${id} (freed ${formatBytes(gc.freed_bytes)})`);
        }
        return 0;
      } finally {
        await store.close();
      }
    }
    default:
      throw new UsageError(`captures needs an action: list, verify or rm (actual: ${action ?? "none"})`);
  }
}
