// QMP events that are failures of the guest, with titles in the spirit of the console parser's:
// they name what happened and nothing that varies between shadows (no device ids that a
// management layer numbers, no addresses, no times), so the fingerprint is the same on every
// shadow, VM and host. The run-state events (STOP, RESUME, host-initiated SHUTDOWN/RESET) are
// handled by the observer, not here.
import type { QmpEvent } from "../hypervisor/qemu/qmp-client.js";
import type { DetectionClass } from "./types.js";

export interface QemuEventFailure {
  title: string;
  class: DetectionClass;
  /** `qemu:<EVENT>`. */
  kind: string;
}

/** Title of a GUEST_PANICKED event (also used to tell consequences of a panic apart). */
export const GUEST_PANICKED_TITLE = "QEMU: guest panicked";

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** One evidence line for an event: name, data and QEMU's timestamp. */
export function eventEvidence(e: QmpEvent): string {
  return `${e.event} ${JSON.stringify(e.data)} at ${new Date(e.timestampMs).toISOString()}`;
}

/**
 * The failure a guest-related QMP event stands for, or null when the event is none (run-state
 * changes, host-initiated stops, informational events).
 */
export function qemuEventFailure(e: QmpEvent): QemuEventFailure | null {
  const d = e.data;
  const kind = `qemu:${e.event}`;
  switch (e.event) {
    case "GUEST_PANICKED":
      return { title: GUEST_PANICKED_TITLE, class: "panic", kind };
    case "GUEST_CRASHLOADED":
      return { title: "QEMU: guest crashed into its crash kernel", class: "panic", kind };
    case "WATCHDOG":
      return { title: "QEMU: guest watchdog fired", class: "hang", kind };
    case "BLOCK_IO_ERROR": {
      if (d["nospace"] === true)
        return { title: "QEMU: block I/O error (no space)", class: "io_error", kind };
      const op = str(d["operation"]) ?? "I/O";
      return { title: `QEMU: block ${op} error`, class: "io_error", kind };
    }
    case "MEMORY_FAILURE": {
      if (d["recipient"] !== "guest") return null; // a host memory error QEMU handled itself
      const flags = (d["flags"] ?? {}) as Record<string, unknown>;
      const action = str(d["action"]) ?? "unknown";
      const required = flags["action-required"] === true ? ", action required" : "";
      return { title: `QEMU: guest memory failure (${action}${required})`, class: "memory_error", kind };
    }
    case "SHUTDOWN":
    case "RESET": {
      if (d["guest"] !== true) return null;
      const reason = str(d["reason"]);
      if (reason === "guest-panic") return { title: GUEST_PANICKED_TITLE, class: "panic", kind };
      if (reason === "guest-shutdown") return { title: "QEMU: guest powered off", class: "crash", kind };
      return { title: "QEMU: guest reset", class: "crash", kind };
    }
    default:
      return null;
  }
}
