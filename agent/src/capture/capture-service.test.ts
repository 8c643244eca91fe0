// captureVm's crash recovery goes through the driver, without QEMU: a staging directory holds the
// journal of a capture whose agent died; the QMP socket the journal names is served by a scripted
// QMP peer in this process, the way the libvirt driver serves a bridge at the recorded path.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ShadowvmError } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { FakeDriver } from "../hypervisor/fake/fake-driver.js";
import { QmpClient } from "../hypervisor/qemu/qmp-client.js";
import { type CaptureDriver, captureVm } from "./capture-service.js";
import { type CaptureJournal, JOURNAL_FILE, writeJournal } from "./live-capture.js";
import { CaptureStore } from "./store/index.js";

const root = mkdtempSync(join(tmpdir(), "capture-service-test-"));
test.after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/**
 * A production VM left as a capture killed at `snapshotted` leaves it: guest paused, migration
 * waiting at pre-switchover. Answers QMP on `path` and records the commands it gets.
 */
async function pausedProduction(path: string) {
  const state = { status: "paused", migration: "pre-switchover", commands: [] as string[] };
  const server: Server = createServer((sock) => {
    const send = (msg: unknown) => sock.write(`${JSON.stringify(msg)}\r\n`);
    send({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "" }, capabilities: [] } });
    let buf = "";
    sock.on("data", (d) => {
      buf += d;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const cmd = JSON.parse(buf.slice(0, i)) as { execute: string; id: string };
        buf = buf.slice(i + 1);
        if (cmd.execute !== "qmp_capabilities") state.commands.push(cmd.execute);
        const reply = (ret: unknown) => send({ return: ret, id: cmd.id });
        switch (cmd.execute) {
          case "query-migrate":
            reply({ status: state.migration });
            break;
          case "migrate_cancel":
            state.migration = "cancelled";
            reply({});
            send({
              event: "MIGRATION",
              data: { status: "cancelled" },
              timestamp: { seconds: 1, microseconds: 0 },
            });
            break;
          case "query-status":
            reply({ status: state.status, running: state.status === "running" });
            break;
          case "cont":
            state.status = "running";
            reply({});
            break;
          case "query-named-block-nodes":
            reply([]); // the overlay node is not (or no more) in the block graph
            break;
          default:
            reply({});
        }
      }
    });
    sock.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { state, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A staging root holding one interrupted capture's journal (and its overlay file). */
function interruptedCapture(qmpSocket: string): { stagingRoot: string; journal: CaptureJournal } {
  const dir = join(root, `case-${n++}`);
  const stagingRoot = join(dir, "staging");
  const stagingDir = join(stagingRoot, "c-interrupted");
  mkdirSync(stagingDir, { recursive: true, mode: 0o700 });
  const overlayFile = join(stagingDir, "disk0.overlay.qcow2");
  // Not an image: an offline `qemu-img commit` of it fails, so only a live undo removes it.
  writeFileSync(overlayFile, "not an image");
  const journal: CaptureJournal = {
    id: "c-interrupted",
    vm: "web-1",
    qmpSocket,
    fdName: "shadowvm-capture-c-interrupted",
    startedAtMs: Date.now() - 60_000,
    step: "snapshotted",
    overlays: [
      {
        diskNode: "disk0",
        overlayNode: "shadowvm-overlay-disk0",
        overlayFile,
        originalFile: join(dir, "disk0.qcow2"),
        format: "qcow2",
      },
    ],
    savedMigration: {
      parameters: { "downtime-limit": 300, "max-bandwidth": 134217728 },
      capabilities: [
        { capability: "events", state: false },
        { capability: "pause-before-switchover", state: false },
      ],
    },
  };
  writeJournal(stagingDir, journal);
  return { stagingRoot, journal };
}

/** The fake driver (it knows no VM, so captureVm stops right after recovery) that speaks QMP. */
class QmpFakeDriver extends FakeDriver implements CaptureDriver {
  connect(address: string): Promise<QmpClient> {
    return QmpClient.connect(address, { connectTimeoutMs: 2000, commandTimeoutMs: 5000 });
  }
}

/** Like the libvirt driver: the recorded socket answers only once it prepared recovery. */
class PreparingDriver extends QmpFakeDriver {
  readonly prepared: { ids: string[]; socketExisted: boolean }[] = [];
  production: Awaited<ReturnType<typeof pausedProduction>> | undefined;

  async prepareCaptureRecovery(journals: CaptureJournal[]): Promise<void> {
    this.prepared.push({
      ids: journals.map((j) => j.id),
      socketExisted: existsSync(journals[0]!.qmpSocket),
    });
    this.production = await pausedProduction(journals[0]!.qmpSocket);
  }
}

/** captureVm on a VM the driver does not know: recovery runs, then the capture fails. */
async function captureUnknownVm(driver: CaptureDriver, stagingRoot: string): Promise<ShadowvmError> {
  const dir = join(stagingRoot, "..");
  const store = await CaptureStore.open({ dir: join(dir, "captures"), keyFile: join(dir, "store.key") });
  try {
    await captureVm({ driver, store, vm: "web-1", stagingRoot });
  } catch (err) {
    assert.instance(err, ShadowvmError);
    return err as ShadowvmError;
  } finally {
    await store.close();
  }
  throw new Error("expected captureVm to fail: the driver knows no VM");
}

/** What undoing a capture stopped at `snapshotted` sends, in order. */
const LIVE_UNDO = [
  "query-migrate",
  "migrate_cancel",
  "closefd",
  "query-status",
  "cont",
  "query-named-block-nodes",
  "migrate-set-capabilities",
  "migrate-set-parameters",
];

test("captureVm has the driver prepare recovery with the interrupted journals, then undoes them live", async () => {
  const { stagingRoot, journal } = interruptedCapture(join(root, "dead-agent-bridge.qmp"));
  const driver = new PreparingDriver();
  try {
    const err = await captureUnknownVm(driver, stagingRoot);
    assert.is(err.code, "not_found", "the capture itself went on after recovery");
    assert.equal(driver.production?.state.commands, LIVE_UNDO, "the capture was undone through QMP");
    assert.is(driver.production?.state.status, "running", "the guest was resumed");
    assert.is(driver.production?.state.migration, "cancelled");
    assert.equal(readdirSync(stagingRoot), [], "journal and overlay removed: nothing left to recover");
    assert.equal(
      driver.prepared,
      [{ ids: [journal.id], socketExisted: false }],
      "prepareCaptureRecovery got the journal once, before anything was served at its socket",
    );
  } finally {
    await driver.production?.close();
  }
});

test("a driver with nothing to prepare (qemu): the recorded socket answers as it is", async () => {
  const socket = join(root, "qemu-own.qmp");
  const production = await pausedProduction(socket);
  try {
    const { stagingRoot } = interruptedCapture(socket);
    const err = await captureUnknownVm(new QmpFakeDriver(), stagingRoot);
    assert.is(err.code, "not_found");
    assert.equal(production.state.commands, LIVE_UNDO);
    assert.is(production.state.status, "running");
    assert.equal(readdirSync(stagingRoot), []);
  } finally {
    await production.close();
  }
});

test("no interrupted capture: the driver is not asked to prepare anything", async () => {
  const { stagingRoot } = interruptedCapture(join(root, "unused.qmp"));
  rmSync(join(stagingRoot, "c-interrupted", JOURNAL_FILE)); // a capture that never touched production
  const driver = new PreparingDriver();
  const err = await captureUnknownVm(driver, stagingRoot);
  assert.is(err.code, "not_found");
  assert.equal(driver.prepared, []);
  assert.equal(readdirSync(stagingRoot), [], "its staging directory is removed");
});

test.run();
