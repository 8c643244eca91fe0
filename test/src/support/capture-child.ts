// A capture run in its own process, for crash tests: it captures the VM behind a QMP socket and,
// when the capture reaches the step named on the command line, says so on stdout and waits to
// be killed (the parent sends SIGKILL, as a crash would).
//   node capture-child.js <qmp socket> <data dir> <step>
import { join } from "node:path";
import { captureVm } from "@shadowvm/agent/capture/capture-service";
import { CaptureStore } from "@shadowvm/agent/capture/store/index";
import { QemuDriver } from "@shadowvm/agent/hypervisor/qemu/qemu-driver";

const [qmpSocket, dataDir, stopAt] = process.argv.slice(2) as [string, string, string];
const store = await CaptureStore.open({
  dir: join(dataDir, "captures"),
  keyFile: join(dataDir, "capture.key"),
});
await captureVm({
  driver: new QemuDriver({ sockets: [qmpSocket] }),
  store,
  vm: qmpSocket,
  stagingRoot: join(dataDir, "staging"),
  async onStep(step) {
    if (step !== stopAt) return;
    process.stdout.write(`AT ${step}\n`);
    await new Promise(() => {}); // until SIGKILL
  },
});
process.stdout.write("DONE\n");
await store.close();
