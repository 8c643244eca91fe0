// Shadows of libvirt domains: agent-run QEMU processes, exactly like shadows of plain QEMU VMs,
// built from the production QEMU's command line as captured (see docs/libvirt.md for why not
// transient libvirt domains).
//
// libvirt's command line differs from a hand-written one in ways the shadow command-line rewriter
// (shadow/shadow-command-line.ts) does not read, so it is first converted into the equivalent form
// that rewriter understands. Nothing that decides the machine (machine type, CPU, RAM, device
// models, ids, addresses, MACs) changes, so the captured migration stream still loads:
//   -device {JSON}       -> `driver,key=value,...` (same properties; true/false as on/off), so
//                           the rewriter sees which chardev is the serial console or a guest channel
//   -netdev {JSON}       -> `type,id=ID`: the backend (a tap fd libvirt passed, vhost fds, ...)
//                           is replaced by the rewriter with isolated networking anyway
//   -object secret (libvirt's master key, `file=` in libvirt's run directory) -> dropped when
//                           nothing refers to it; a domain that uses libvirt secrets (encrypted
//                           disks, TLS) is refused with a clear error
//   -object memory-backend-file/memfd {JSON} (hugepages, shared memory) -> private
//                           memory-backend-ram with the same id and size
//   descriptors left in any JSON option (`"fd"`, `"fds"`, `"vhostfd"`) -> refused with a clear error
// The chardevs libvirt passes as fds (monitor, serial, channels), `-add-fd` and `/dev/fdset/`
// disks need nothing here: the rewriter drops the monitor and `-add-fd`, gives the serial console
// a file and channels sockets of the shadow's own, and replaces every captured disk's block graph.
import { ShadowvmError } from "@shadowvm/shared";
import type { CaptureStore } from "../../capture/store/index.js";
import { type RestoredCapture, restoreCapture } from "../../shadow/restored-capture.js";

/** A command line of a QEMU that libvirt started (`-name guest=...`, QMP over `-mon`). */
export function isLibvirtCommandLine(argv: string[]): boolean {
  const name = argv.indexOf("-name");
  return name >= 0 && (argv[name + 1] ?? "").startsWith("guest=") && argv.includes("-mon");
}

function unsupported(message: string): ShadowvmError {
  return new ShadowvmError("libvirt", "unsupported", message);
}

function keyvalValue(v: unknown): string | undefined {
  if (typeof v === "string") return v.replaceAll(",", ",,");
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return v ? "on" : "off";
  return undefined; // objects and lists have no keyval form
}

/** `{"driver":"virtio-net-pci","id":"net0",...}` -> `virtio-net-pci,id=net0,...`, if all scalar. */
export function deviceJsonToKeyval(json: Record<string, unknown>): string | undefined {
  const driver = json["driver"];
  if (typeof driver !== "string") return undefined;
  const parts = [driver];
  for (const [k, v] of Object.entries(json)) {
    if (k === "driver") continue;
    const value = keyvalValue(v);
    if (value === undefined) return undefined;
    parts.push(`${k}=${value}`);
  }
  return parts.join(",");
}

const FD_KEYS = /"(fd|fds|vhostfd|vhostfds)"\s*:/;

/** libvirt's QEMU argv -> the equivalent argv the shadow command-line rewriter accepts. */
export function shadowArgvFromLibvirt(argv: string[]): string[] {
  const [binary, ...rest] = argv;
  if (!binary) throw unsupported("the capture has no QEMU command line");
  const out: string[] = [binary];
  const argAfter = (i: number) => rest[i + 1] ?? "";
  for (let i = 0; i < rest.length; i++) {
    const opt = rest[i]!;
    const value = argAfter(i);
    const json = value.trimStart().startsWith("{")
      ? (JSON.parse(value) as Record<string, unknown>)
      : undefined;
    switch (opt) {
      case "-device": {
        if (json) {
          const keyval = deviceJsonToKeyval(json);
          if (keyval === undefined && FD_KEYS.test(value))
            throw unsupported(
              `device ${String(json["id"] ?? json["driver"])} uses descriptors libvirt passed`,
            );
          out.push(opt, keyval ?? value);
        } else out.push(opt, value);
        i++;
        break;
      }
      case "-netdev": {
        if (json) {
          const type = String(json["type"] ?? "tap");
          out.push(opt, `${type},id=${String(json["id"] ?? "").replaceAll(",", ",,")}`);
        } else out.push(opt, value);
        i++;
        break;
      }
      case "-object": {
        const qomType = json?.["qom-type"];
        const id = json?.["id"];
        if (json && qomType === "secret" && typeof id === "string" && json["file"] !== undefined) {
          const used = rest.some((a, j) => j !== i + 1 && a.includes(id));
          if (used)
            throw unsupported(
              `the domain uses libvirt secrets (object ${id}: encrypted disks, TLS or passwords), which a shadow cannot reproduce`,
            );
          i++;
          break;
        }
        if (json && (qomType === "memory-backend-file" || qomType === "memory-backend-memfd")) {
          const keep = Object.fromEntries(
            Object.entries(json).filter(([k]) => ["id", "size", "host-nodes", "policy"].includes(k)),
          );
          out.push(opt, JSON.stringify({ "qom-type": "memory-backend-ram", ...keep }));
          i++;
          break;
        }
        if (json && FD_KEYS.test(value))
          throw unsupported(`object ${String(id)} uses descriptors libvirt passed`);
        out.push(opt, value);
        i++;
        break;
      }
      default:
        // Flags and options the rewriter reads as they are (it knows which options take a value).
        out.push(opt);
    }
  }
  return out;
}

/**
 * Restores a capture (restored-capture.ts) and, when it was taken from a libvirt domain, converts
 * its command line for the shadow rewriter. The result goes to `startShadow` like any other.
 */
export async function restoreLibvirtCapture(
  store: CaptureStore,
  captureId: string,
  cacheRoot: string,
): Promise<RestoredCapture> {
  const restored = await restoreCapture(store, captureId, cacheRoot);
  if (!isLibvirtCommandLine(restored.productionArgv)) return restored;
  return { ...restored, productionArgv: shadowArgvFromLibvirt(restored.productionArgv) };
}
