// The production console watch: where a VM's console log is (QEMU and libvirt command lines,
// config override), precursor matches and production failures as ProductionEvent bodies, rate
// limiting, VMs coming and going.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { failureFingerprint, shadowvm, silentLogger, validateWireMessage } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { SignatureDb } from "../signatures/index.js";
import { ConsoleWatch, consoleLogFromCommandLine, type WatchedVm } from "./console-watch.js";

const root = mkdtempSync(join(tmpdir(), "svm-watch-"));

test("console log discovery from QEMU command lines", () => {
  // the demo VM / plain QEMU: a file chardev behind an isa-serial
  assert.is(
    consoleLogFromCommandLine([
      "qemu-system-x86_64",
      "-name",
      "guest=web-1",
      "-chardev",
      "file,id=charserial0,path=/srv/vms/web-1/console.log",
      "-device",
      "isa-serial,chardev=charserial0,id=serial0",
      "-chardev",
      "file,id=other,path=/tmp/not-a-console.log",
    ]),
    "/srv/vms/web-1/console.log",
  );
  // libvirt <serial type='pty'><log file=.../></serial>: JSON -device, a logfile on the pty
  assert.is(
    consoleLogFromCommandLine([
      "/usr/bin/qemu-system-x86_64",
      "-chardev",
      "pty,id=charserial0,logfile=/var/log/libvirt/qemu/db-1-serial.log,logappend=on",
      "-device",
      '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
    ]),
    "/var/log/libvirt/qemu/db-1-serial.log",
  );
  // libvirt <serial type='file'>, ",," escapes a comma in the path
  assert.is(
    consoleLogFromCommandLine(["qemu", "--chardev", "file,id=charserial0,path=/logs/a,,b.log,append=on"]),
    "/logs/a,b.log",
  );
  assert.is(
    consoleLogFromCommandLine(["qemu", "-serial", "file:/var/log/vm7.console"]),
    "/var/log/vm7.console",
  );
  assert.is(
    consoleLogFromCommandLine(["qemu", "-chardev", "file,id=c0,path=/x.log", "-serial", "chardev:c0"]),
    "/x.log",
  );
  // a pty or socket without a log file: not on disk
  assert.is(
    consoleLogFromCommandLine([
      "qemu",
      "-chardev",
      "pty,id=charserial0",
      "-device",
      "isa-serial,chardev=charserial0",
    ]),
    undefined,
  );
  assert.is(
    consoleLogFromCommandLine(["qemu", "-serial", "unix:/run/qemu-server/101.serial0,server,nowait"]),
    undefined,
  );
  assert.is(consoleLogFromCommandLine([]), undefined);
});

const OOM_LINES = `[ 4242.100000] httpd invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0
[ 4242.100100] CPU: 1 PID: 4711 Comm: httpd Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[ 4242.100200] Mem-Info:
[ 4242.100300] Out of memory: Killed process 4711 (httpd) total-vm:812345kB, anon-rss:512000kB, file-rss:0kB, shmem-rss:0kB, UID:33 pgtables:1200kB oom_score_adj:0
`;

interface Fixture {
  events: shadowvm.v1.IProductionEvent[];
  clock: { now: number };
  vms: WatchedVm[];
  watch: ConsoleWatch;
  db: SignatureDb;
}

async function fixture(overrides: Record<string, string> = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(root, "f-"));
  const db = await SignatureDb.open(join(dir, "signatures"));
  const events: shadowvm.v1.IProductionEvent[] = [];
  const clock = { now: 1_700_000_000_000 };
  const vms: WatchedVm[] = [];
  const watch = new ConsoleWatch({
    vms: () => vms,
    overrides,
    signatures: db,
    sink: {
      async append(body) {
        validateWireMessage("shadowvm.v1.ProductionEvent", body.production_event);
        events.push(body.production_event);
      },
    },
    logger: silentLogger(),
    settleMs: 1000,
    minEventIntervalMs: 60_000,
    now: () => clock.now,
  });
  return { events, clock, vms, watch, db };
}

const HUNG = "INFO: task svm-writer:NUM blocked for more than NUM seconds.";
const panic = {
  title: "kernel panic: hung_task: blocked tasks",
  class: "panic",
  fingerprint: failureFingerprint("kernel panic: hung_task: blocked tasks", "panic"),
  frame: null,
};

test("a precursor of this VM's signature and a real failure on its console become events", async () => {
  const f = await fixture();
  const log = join(root, "web-1.console.log");
  writeFileSync(log, "[    1.000000] Linux version 6.1.0 (old boot output, before the agent came)\n");
  f.vms.push({
    uuid: "uuid-web-1",
    name: "web-1",
    commandLine: [
      "qemu",
      "-chardev",
      `file,id=charserial0,path=${log}`,
      "-device",
      "isa-serial,chardev=charserial0",
    ],
  });
  await f.db.recordRun({ vm: "uuid-web-1", failures: [{ ...panic, precursors: [HUNG] }], finishedAtMs: 5 });
  // another VM's signature: its precursors are not this VM's business
  await f.db.recordRun({
    vm: "uuid-db-1",
    failures: [{ ...panic, fingerprint: "fp-other", precursors: ["random: crng init done"] }],
  });
  await f.watch.tick();
  assert.equal([...f.watch.watched.values()], [{ name: "web-1", path: log, source: "cmdline" }]);
  appendFileSync(log, "[ 4000.000000] random: crng init done\n");
  appendFileSync(log, "[ 4100.000000] INFO: task svm-writer:991 blocked for more than 122 seconds.\n");
  f.clock.now += 10;
  await f.watch.tick();
  assert.is(f.events.length, 1);
  const e = f.events[0]!;
  assert.is(e.kind, shadowvm.v1.ProductionEventKind.PRODUCTION_EVENT_KIND_PRECURSOR);
  assert.equal(
    [e.vm_uuid, e.vm_name, e.fingerprint, e.title, e.class, e.pattern, e.suppressed],
    ["uuid-web-1", "web-1", panic.fingerprint, panic.title, "panic", HUNG, 0],
  );
  assert.is(e.line, "[ 4100.000000] INFO: task svm-writer:991 blocked for more than 122 seconds.");
  assert.is(e.ts_ms, f.clock.now);

  // The OOM killer on the production console: a FAILURE with the parser's fingerprint, once the
  // report is complete (its last line), time = when its first line arrived.
  const at = f.clock.now;
  appendFileSync(log, OOM_LINES);
  await f.watch.tick();
  const oom = f.events.find((x) => x.kind === shadowvm.v1.ProductionEventKind.PRODUCTION_EVENT_KIND_FAILURE);
  assert.ok(oom, JSON.stringify(f.events));
  assert.is(oom!.title, "OOM kill of httpd");
  assert.is(oom!.class, "oom");
  assert.is(oom!.fingerprint, failureFingerprint("OOM kill of httpd", "oom"));
  assert.ok(oom!.line!.includes("invoked oom-killer"));
  assert.is(oom!.ts_ms, at);
  assert.is(oom!.pattern, "");

  // The hung task itself is a failure on production too (completed once the console settled).
  appendFileSync(log, "[ 4200.0] INFO: task svm-writer:991 blocked for more than 242 seconds.\n");
  f.clock.now += 1000;
  await f.watch.tick();
  const precursors = () => f.events.filter((x) => x.kind === 1);
  assert.ok(
    f.events.some((x) => x.kind === 2 && x.class === "hang"),
    JSON.stringify(f.events.map((x) => x.title)),
  );
  // Rate limit: that second warning came within the interval: held back, and counted in the next
  // event once the interval has passed.
  assert.is(precursors().length, 1);
  f.clock.now += 60_000;
  appendFileSync(log, "[ 4300.0] INFO: task svm-writer:991 blocked for more than 363 seconds.\n");
  await f.watch.tick();
  assert.is(precursors().length, 2);
  assert.is(precursors()[1]!.suppressed, 1);
  assert.ok(f.watch.stats.suppressed >= 1);
  assert.equal(
    [precursors()[1]!.precursor_runs_with, precursors()[1]!.precursor_runs_without],
    [1, 0],
    "how far the line warned in the shadows: 1 run with the failure, none without",
  );
  // A passed shadow run that printed the line: the watch reloads the counts and sends them on.
  await f.db.recordCleanRun({ vm: "uuid-web-1", consolePatterns: [HUNG] });
  f.clock.now += 700_000;
  await f.watch.tick();
  appendFileSync(log, "[ 5000.0] INFO: task svm-writer:991 blocked for more than 484 seconds.\n");
  await f.watch.tick();
  assert.is(precursors().length, 3);
  assert.equal([precursors()[2]!.precursor_runs_with, precursors()[2]!.precursor_runs_without], [1, 1]);
  await f.watch.stop();
  await f.db.close();
});

test("config override by name; a report completed by the console falling quiet; VMs that go away", async () => {
  const log = join(root, "override.log");
  writeFileSync(log, "");
  const f = await fixture({ "db-1": log });
  f.vms.push({ uuid: "uuid-db-1", name: "db-1", commandLine: [] });
  f.vms.push({ uuid: "uuid-no-console", name: "pty-only", commandLine: ["qemu", "-serial", "pty"] });
  await f.watch.tick();
  assert.equal([...f.watch.watched.keys()], ["uuid-db-1"]);
  assert.is(f.watch.watched.get("uuid-db-1")!.source, "config");
  // An I/O error burst completes only after 200 quiet lines, or when the console settles.
  appendFileSync(
    log,
    "[ 10.0] blk_update_request: I/O error, dev vda, sector 12345 op 0x1:(WRITE) flags 0x800\n",
  );
  await f.watch.tick();
  assert.is(f.events.length, 0);
  f.clock.now += 1500;
  await f.watch.tick();
  assert.equal(
    f.events.map((e) => [e.kind, e.title, e.class]),
    [[2, "I/O error on vda", "io_error"]],
  );
  f.vms.splice(0);
  await f.watch.tick();
  assert.is(f.watch.watched.size, 0);
  await f.watch.stop();
  await f.db.close();
});

test.after(() => rmSync(root, { recursive: true, force: true }));

test.run();
