#!/usr/bin/env node
// Capture benchmark (issue 3): guest pause over N live captures of the demo VM while its writer
// works, capture throughput, stored bytes per GiB of guest RAM+disk, and the share of new bytes
// in a second capture taken a minute after the first.
//   npx tsc -b shared agent && node test/bench/capture-bench.mjs [--captures 20] [--gap-s 60]
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { captureVm } from "../../agent/dist/capture/capture-service.js";
import { CaptureStore } from "../../agent/dist/capture/store/index.js";
import { startDemoVm } from "../../agent/dist/demo/demo-vm.js";
import { QemuDriver } from "../../agent/dist/hypervisor/qemu/qemu-driver.js";

const { values } = parseArgs({
  options: { captures: { type: "string", default: "20" }, "gap-s": { type: "string", default: "60" } },
});
const n = Number(values.captures);
const gapS = Number(values["gap-s"]);
const dir = mkdtempSync("/tmp/svm-capbench-");
const vm = await startDemoVm({
  name: "capbench",
  workDir: join(dir, "vm"),
  extraKernelArgs: "shadowvm.writer_rate=20",
});
const pct = (xs, p) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
try {
  await vm.waitReady(180_000);
  const driver = new QemuDriver({ sockets: [vm.qmpSocket] });
  const storeDir = join(dir, "store");
  const store = await CaptureStore.open({ dir: storeDir, keyFile: join(dir, "key") });
  const pauses = [];
  const records = [];
  for (let i = 0; i < n; i++) {
    const t0 = Date.now();
    const r = await captureVm({ driver, store, vm: vm.qmpSocket, stagingRoot: join(dir, "staging") });
    records.push({ ...r, wallMs: Date.now() - t0 });
    pauses.push(r.pause_ms);
    // One store: the second capture, a minute after the first, deduplicates against it.
    if (i === 0) {
      await new Promise((res) => setTimeout(res, gapS * 1000)); // the "a minute later" of the issue
    }
  }
  const first = records[0];
  const second = records[1];
  const inputBytes = first.memory_bytes + first.disk_bytes;
  const guestGiB =
    (vm.guest.memory_mb * 1024 * 1024 + vm.guest.data_disk.virtual_mb * 1024 * 1024) / 1024 ** 3;
  console.log(
    JSON.stringify(
      {
        captures: n,
        pause_ms: {
          p50: pct(pauses, 50),
          max: Math.max(...pauses),
          min: Math.min(...pauses),
          all: pauses.map((p) => Number(p.toFixed(2))),
        },
        first_capture: {
          wall_ms: first.wallMs,
          input_bytes: inputBytes,
          throughput_mb_s: inputBytes / 1e6 / (first.wallMs / 1000),
          stored_bytes: first.stored_bytes,
        },
        stored_bytes_per_gib_guest: first.stored_bytes / guestGiB,
        second_capture: {
          after_s: gapS,
          new_bytes: second?.new_bytes,
          stored_bytes: second?.stored_bytes,
          new_pct: second ? (100 * second.new_bytes) / second.stored_bytes : null,
        },
      },
      null,
      2,
    ),
  );
  await store.close();
} finally {
  await vm.stop();
  rmSync(dir, { recursive: true, force: true });
}
