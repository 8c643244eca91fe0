import { test } from "uvu";
import * as assert from "uvu/assert";
import { qemuEventFailure } from "./qemu-events.js";

const ev = (event: string, data: Record<string, unknown> = {}) =>
  qemuEventFailure({ event, data, timestampMs: 1_700_000_000_000 });

test("guest failure events map to stable titles and classes", () => {
  const cases: [string, Record<string, unknown>, string, string][] = [
    ["GUEST_PANICKED", { action: "pause" }, "QEMU: guest panicked", "panic"],
    ["GUEST_PANICKED", { action: "poweroff", info: { type: "hyper-v" } }, "QEMU: guest panicked", "panic"],
    ["GUEST_CRASHLOADED", { action: "run" }, "QEMU: guest crashed into its crash kernel", "panic"],
    ["WATCHDOG", { action: "reset" }, "QEMU: guest watchdog fired", "hang"],
    [
      "BLOCK_IO_ERROR",
      { device: "drive-virtio-disk0", operation: "read", action: "stop" },
      "QEMU: block read error",
      "io_error",
    ],
    [
      "BLOCK_IO_ERROR",
      { "node-name": "libvirt-1-format", operation: "write", nospace: true },
      "QEMU: block I/O error (no space)",
      "io_error",
    ],
    [
      "MEMORY_FAILURE",
      { recipient: "guest", action: "inject", flags: { "action-required": true } },
      "QEMU: guest memory failure (inject, action required)",
      "memory_error",
    ],
    [
      "MEMORY_FAILURE",
      { recipient: "guest", action: "reset", flags: {} },
      "QEMU: guest memory failure (reset)",
      "memory_error",
    ],
    ["SHUTDOWN", { guest: true, reason: "guest-shutdown" }, "QEMU: guest powered off", "crash"],
    ["SHUTDOWN", { guest: true, reason: "guest-reset" }, "QEMU: guest reset", "crash"],
    ["SHUTDOWN", { guest: true, reason: "guest-panic" }, "QEMU: guest panicked", "panic"],
    ["RESET", { guest: true, reason: "guest-reset" }, "QEMU: guest reset", "crash"],
  ];
  for (const [event, data, title, cls] of cases) {
    const f = ev(event, data);
    assert.ok(f, `${event} ${JSON.stringify(data)}`);
    assert.is(f!.title, title);
    assert.is(f!.class, cls);
    assert.is(f!.kind, `qemu:${event}`);
  }
});

test("host-side and informational events are no guest failure", () => {
  assert.is(ev("SHUTDOWN", { guest: false, reason: "host-signal" }), null);
  assert.is(ev("RESET", { guest: false, reason: "host-qmp-system-reset" }), null);
  assert.is(ev("MEMORY_FAILURE", { recipient: "hypervisor", action: "ignore", flags: {} }), null);
  for (const e of ["STOP", "RESUME", "BALLOON_CHANGE", "VSERPORT_CHANGE", "NIC_RX_FILTER_CHANGED"])
    assert.is(ev(e), null);
});

test.run();
