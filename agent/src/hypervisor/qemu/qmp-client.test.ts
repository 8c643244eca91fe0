// The QMP client against scripted peers (a unix socket server in this process) for the protocol
// edges, and against a real QEMU for fd passing and events.
import { execFile } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createBareQemuHost } from "../../testing/bare-qemu.js";
import { CONFORMANCE_VMS } from "../driver-conformance.js";
import { loadUsocket, type USocket as USocketType } from "../usocket.js";
import { closeOnExec, QmpClient, QmpError } from "./qmp-client.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-qmp-"));
let n = 0;

const GREETING = `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "" }, capabilities: [] } })}\r\n`;

/** A scripted QMP peer: `onCommand` decides what to send back for each command. */
async function peer(
  onCommand: (cmd: { execute: string; id: string }, sock: Socket) => void,
  greeting = GREETING,
) {
  const path = join(dir, `peer-${n++}.sock`);
  const server: Server = createServer((sock) => {
    if (greeting) sock.write(greeting);
    let buf = "";
    sock.on("data", (d) => {
      buf += d;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const cmd = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (cmd.execute === "qmp_capabilities")
          sock.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`);
        else onCommand(cmd, sock);
      }
    });
    sock.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function rejection(p: Promise<unknown>): Promise<QmpError> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, QmpError);
    return err as QmpError;
  }
  throw new Error("expected a QmpError");
}

test("negotiates capabilities and returns command results", async () => {
  const p = await peer((cmd, sock) =>
    sock.write(`${JSON.stringify({ return: { status: "running" }, id: cmd.id })}\r\n`),
  );
  const qmp = await QmpClient.connect(p.path);
  assert.is(qmp.greeting?.version.qemu.major, 7);
  assert.equal(await qmp.execute("query-status"), { status: "running" });
  qmp.close();
  await p.close();
});

test("a QMP error keeps its class and description", async () => {
  const p = await peer((cmd, sock) =>
    sock.write(
      `${JSON.stringify({ error: { class: "DeviceNotFound", desc: "Device 'x' not found" }, id: cmd.id })}\r\n`,
    ),
  );
  const qmp = await QmpClient.connect(p.path);
  const err = await rejection(qmp.execute("device_del", { id: "x" }));
  assert.is(err.errorClass, "DeviceNotFound");
  assert.match(err.message, "device_del failed");
  assert.match(err.message, "Device 'x' not found");
  qmp.close();
  await p.close();
});

test("a command without a reply times out, and a late reply is ignored", async () => {
  let late: (() => void) | undefined;
  const p = await peer((cmd, sock) => {
    late = () => sock.write(`${JSON.stringify({ return: 1, id: cmd.id })}\r\n`);
  });
  const qmp = await QmpClient.connect(p.path);
  const err = await rejection(qmp.execute("query-status", undefined, { timeoutMs: 100 }));
  assert.is(err.errorClass, "Timeout");
  assert.match(err.message, "no reply within 100 ms");
  late?.();
  qmp.close();
  await p.close();
});

test("events carry QEMU's own timestamp", async () => {
  const p = await peer((cmd, sock) => {
    sock.write(
      `${JSON.stringify({ event: "STOP", data: {}, timestamp: { seconds: 1700000000, microseconds: 123456 } })}\r\n`,
    );
    sock.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`);
  });
  const qmp = await QmpClient.connect(p.path);
  const stop = qmp.waitForEvent("STOP", undefined, 5000);
  await qmp.execute("stop");
  const event = await stop;
  assert.is(event.timestampMs, 1700000000123.456);
  qmp.close();
  await p.close();
});

test("a peer that closes mid-command rejects the command as Disconnected", async () => {
  const p = await peer((_cmd, sock) => sock.destroy());
  const qmp = await QmpClient.connect(p.path);
  const err = await rejection(qmp.execute("query-block"));
  assert.is(err.errorClass, "Disconnected");
  assert.match(err.message, "while waiting for the reply to query-block");
  const after = await rejection(qmp.execute("query-status"));
  assert.match(after.message, "is closed");
  await p.close();
});

test("a peer that is not QMP is named as such", async () => {
  const garbage = await peer(() => {}, "SSH-2.0-OpenSSH_9.2\r\n");
  const err = await rejection(QmpClient.connect(garbage.path, { connectTimeoutMs: 2000 }));
  assert.is(err.errorClass, "NotQmp");
  assert.match(err.message, "does not speak QMP");
  await garbage.close();

  const silent = await peer(() => {}, "");
  const err2 = await rejection(QmpClient.connect(silent.path, { connectTimeoutMs: 200 }));
  assert.is(err2.errorClass, "NotQmp");
  assert.match(err2.message, "no greeting within 200 ms");
  await silent.close();
});

test("a missing socket and a file that is not a listening socket give clear errors", async () => {
  const missing = await rejection(QmpClient.connect(join(dir, "nope.sock")));
  assert.is(missing.errorClass, "Unreachable");
  assert.match(missing.message, "no QMP socket at");
  const file = join(dir, "regular-file");
  writeFileSync(file, "");
  const refused = await rejection(QmpClient.connect(file));
  assert.is(refused.errorClass, "Unreachable");
  assert.match(refused.message, file);
});

test("passes a file descriptor to a real QEMU with getfd", async () => {
  const host = createBareQemuHost();
  try {
    const vm = await host.start({ ...CONFORMANCE_VMS[1]!, name: "fdpass" });
    const qmp = await QmpClient.connect(vm.qmpSocket, { fdPassing: true });
    assert.ok(qmp.supportsFdPassing);
    const fd = openSync(join(host.dir, "target.bin"), "w");
    await qmp.execute("getfd", { fdname: "target" }, { fds: [fd] });
    closeSync(fd);
    // QEMU now holds a descriptor named "target": closing it works once, then it is unknown.
    await qmp.execute("closefd", { fdname: "target" });
    const err = await rejection(qmp.execute("closefd", { fdname: "target" }));
    assert.match(err.message, "not found");
    // Events from the real QEMU arrive with its timestamps.
    const resumed = qmp.waitForEvent("RESUME", undefined, 10_000);
    const before = Date.now();
    await qmp.execute("cont");
    const event = await resumed;
    assert.ok(Math.abs(event.timestampMs - before) < 10_000, "timestamp near now");
    qmp.close();
  } finally {
    await host.cleanup();
  }
});

/** What a child process started now inherits: its descriptors and what each one is. */
function childDescriptors(): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      "sh",
      ["-c", 'cd /proc/self/fd && for f in *; do echo "$f $(readlink "$f")"; done'],
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
}

test("a child process started while an fd-passing connection is open does not inherit it", async () => {
  const p = await peer((cmd, sock) => sock.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`));
  const qmp = await QmpClient.connect(p.path, { fdPassing: true });
  const fd = (qmp as unknown as { socket: { fd: number } }).socket.fd;
  const socket = readlinkSync(`/proc/self/fd/${fd}`);
  assert.match(socket, /^socket:\[\d+\]$/);
  const inherited = await childDescriptors();
  assert.not.match(inherited, socket, `the child holds the QMP connection:\n${inherited}`);
  assert.is(closeOnExec(fd), true, "usocket's socket is close-on-exec");
  qmp.close();
  await p.close();
});

test("usocket's listening, accepted and received descriptors are close-on-exec too (the libvirt bridge's)", async () => {
  const usocket = loadUsocket();
  assert.ok(usocket, "usocket is installed");
  const { UServer, USocket } = usocket;
  const path = join(dir, `userver-${n++}.sock`);
  const server = new UServer();
  const accepted = new Promise<USocketType>((r) => server.on("connection", r));
  await new Promise<void>((r) => server.listen(path, r));
  const client = new USocket();
  await new Promise<void>((r) => {
    client.once("connected", () => r());
    client.connect(path);
  });
  const peerSocket = await accepted;
  peerSocket.on("data", () => {});
  const received = new Promise<number[]>((r) => peerSocket.on("fds", r));
  // A file opened by Node, as live capture does for the migration stream: libuv opens it O_CLOEXEC.
  const file = openSync(join(dir, "passed.bin"), "w");
  assert.is(closeOnExec(file), true, "fs.openSync is close-on-exec");
  client.write({ data: Buffer.from("x"), fds: [file] } as unknown as Buffer);
  const [got] = await received;
  const fds = { listening: server.fd!, client: client.fd!, accepted: peerSocket.fd!, received: got! };
  const targets = Object.fromEntries(
    Object.entries(fds).map(([k, fd]) => [k, readlinkSync(`/proc/self/fd/${fd}`)]),
  );
  const inherited = await childDescriptors();
  for (const [what, fd] of Object.entries(fds)) {
    assert.not.ok(
      inherited.split("\n").some((l) => l.endsWith(` ${targets[what]}`)),
      `the child inherited the ${what} descriptor (${targets[what]}):\n${inherited}`,
    );
    assert.is(closeOnExec(fd), true, `${what} descriptor ${fd} is close-on-exec`);
  }
  closeSync(file);
  closeSync(got!);
  client.destroy();
  peerSocket.destroy();
  server.close();
});

// usocket closes its libuv poll handle asynchronously; the handle must outlive a wrapper that is
// garbage-collected in between (patches/usocket@1.1.0.patch). Before the patch this aborted Node
// in uv__finish_close within the first few hundred connections. It runs in a child with
// --expose-gc, so that an abort is reported here instead of killing the test runner.
test("usocket sockets destroyed and garbage-collected at once do not abort the process", async () => {
  const usocketPath = createRequire(import.meta.url).resolve("usocket");
  const script = `
    const { UServer, USocket } = require(${JSON.stringify(usocketPath)});
    const path = ${JSON.stringify(join(dir, `gc-${n++}.sock`))};
    const server = new UServer();
    server.on("connection", (s) => { s.destroy(); gc(); });
    server.listen(path, async () => {
      let closed = 0;
      for (let i = 0; i < 1000; i++) {
        await new Promise((done) => {
          const c = new USocket();
          c.on("error", done);
          c.once("connected", () => { c.on("data", () => {}); c.once("end", () => { c.destroy(); gc(); closed++; done(); }); });
          c.connect(path);
        });
      }
      server.close();
      gc();
      setImmediate(() => console.log("closed " + closed));
    });`;
  const { code, signal, stdout, stderr } = await new Promise<{
    code: number | null;
    signal: string | null;
    stdout: string;
    stderr: string;
  }>((resolve) => {
    const child = execFile(process.execPath, ["--expose-gc", "-e", script], (_err, stdout, stderr) =>
      resolve({ code: child.exitCode, signal: child.signalCode, stdout, stderr }),
    );
  });
  assert.is(signal, null, `the process died of ${signal}: ${stderr}`);
  assert.is(code, 0, stderr);
  assert.is(stdout.trim(), "closed 1000", "every connection was made and closed on both sides");
});

test("without fdPassing, sending descriptors is refused before anything is sent", async () => {
  const p = await peer((cmd, sock) => sock.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`));
  const qmp = await QmpClient.connect(p.path);
  const err = await rejection(qmp.execute("getfd", { fdname: "x" }, { fds: [0] }));
  assert.match(err.message, "needs a connection opened with fdPassing");
  qmp.close();
  await p.close();
});

test("reconnect after the peer dropped the connection, then commands work again", async () => {
  let connections = 0;
  const p = await peer((cmd, sock) => {
    connections++;
    // The first command's connection dies (a monitor restart); later ones answer.
    if (connections === 1) sock.destroy();
    else sock.write(`${JSON.stringify({ return: { status: "running" }, id: cmd.id })}\r\n`);
  });
  const qmp = await QmpClient.connect(p.path);
  const lost = await rejection(qmp.execute("query-status"));
  assert.is(lost.errorClass, "Disconnected");
  await qmp.reconnect({ attempts: 3, backoffMs: 10 });
  assert.not.ok(qmp.isClosed);
  assert.equal(await qmp.execute("query-status"), { status: "running" });
  qmp.close();
  await p.close();
});

test.run();
