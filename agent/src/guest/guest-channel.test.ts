// GuestChannel against a fake guest: a unix socket server speaking the svm-channel protocol
// (one command per line, "#<id> " prefix echoed as "id", one JSON object per line back).
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { GuestChannel, GuestChannelError } from "./guest-channel.js";

interface FakeGuest {
  path: string;
  server: Server;
  received: string[];
  sockets: Set<Socket>;
  close(): Promise<void>;
}

type Behaviour = (id: string, cmd: string, args: string[], socket: Socket) => void;

function reply(socket: Socket, id: string, cmd: string, body: Record<string, unknown>): void {
  socket.write(`${JSON.stringify({ ...(id ? { id: Number(id) } : {}), cmd, ...body })}\n`);
}

const normal: Behaviour = (id, cmd, args, socket) => {
  switch (cmd) {
    case "ping":
      reply(socket, id, cmd, { ok: true, pong: true, uptime_s: 1.5, boot_id: "b", writer_seq: 7 });
      break;
    case "kill":
      if (args[0] === "httpd")
        reply(socket, id, cmd, { ok: true, name: "httpd", signal: args[1] ?? "KILL", pids: [42] });
      else reply(socket, id, cmd, { ok: false, error: `no process named ${args[0]}` });
      break;
    case "slow":
      setTimeout(() => reply(socket, id, cmd, { ok: true, slow: true }), 300);
      break;
    case "silent":
      break;
    case "garbage":
      socket.write("this is not json\n");
      break;
    case "split":
      // one reply delivered in three chunks, with CRLF
      {
        const line = `${JSON.stringify({ id: Number(id), cmd, ok: true, parts: 3 })}\r\n`;
        socket.write(line.slice(0, 5));
        setTimeout(() => socket.write(line.slice(5, 20)), 20);
        setTimeout(() => socket.write(line.slice(20)), 40);
      }
      break;
    case "hangup":
      socket.destroy();
      break;
    default:
      reply(socket, id, "unknown", { ok: false, error: `unknown command: ${cmd}` });
  }
};

async function fakeGuest(behaviour: Behaviour = normal): Promise<FakeGuest> {
  const dir = mkdtempSync(join(tmpdir(), "guest-channel-test-"));
  const path = join(dir, "guest.sock");
  const received: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.setEncoding("utf8");
    let buf = "";
    socket.on("data", (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        received.push(line);
        const m = /^#(\d+) (.*)$/.exec(line);
        const id = m?.[1] ?? "";
        const words = (m?.[2] ?? line).split(" ");
        behaviour(id, words[0] ?? "", words.slice(1), socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    server,
    received,
    sockets,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function rejects(p: Promise<unknown>): Promise<GuestChannelError> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, GuestChannelError);
    return err as GuestChannelError;
  }
  assert.unreachable("expected a rejection");
  throw new Error("unreachable");
}

test("ping round trip: the command carries an id and the reply is matched by it", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const r = await ch.ping();
    assert.is(r.ok, true);
    assert.is(r.pong, true);
    assert.is(r.writer_seq, 7);
    assert.match(guest.received[0] ?? "", /^#\d+ ping$/);
    assert.is(r.id, Number(/^#(\d+)/.exec(guest.received[0] ?? "")?.[1]));
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("typed helpers format their commands; ok:false is returned, or thrown with check", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const k = await ch.kill("httpd", "TERM");
    assert.equal(k.pids, [42]);
    assert.is(k.signal, "TERM");
    const missing = await ch.kill("nosuch");
    assert.is(missing.ok, false);
    assert.match(missing.error ?? "", /no process named nosuch/);
    const err = await rejects(ch.kill("nosuch", undefined, { check: true }));
    assert.is(err.code, "guest-error");
    assert.is(err.reply?.ok, false);
    const cmds = guest.received.map((l) => l.replace(/^#\d+ /, ""));
    assert.equal(cmds, ["kill httpd TERM", "kill nosuch", "kill nosuch"]);
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("bad commands are refused before anything is sent", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    assert.is((await rejects(ch.send("ping\nverify"))).code, "bad-command");
    assert.is((await rejects(ch.send("   "))).code, "bad-command");
    assert.is((await rejects(ch.kill("a b"))).code, "bad-command");
    assert.is((await rejects(ch.fill(101))).code, "bad-command");
    assert.is((await rejects(ch.clock(1.5))).code, "bad-command");
    assert.equal(guest.received, []);
    assert.is((await ch.ping()).ok, true);
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("a timed-out command fails with code timeout and its late reply is not taken for the next", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const err = await rejects(ch.send("slow", { timeoutMs: 50 }));
    assert.is(err.code, "timeout");
    assert.match(err.message, /slow/);
    // the late {"cmd":"slow"} reply arrives while ping is pending and must be dropped
    const r = await ch.send("ping", { timeoutMs: 2000 });
    assert.is(r.cmd, "ping");
    await new Promise((res) => setTimeout(res, 400));
    assert.is(ch.staleReplies, 1);
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("concurrent sends are serialized and each gets its own reply", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const [a, b, c] = await Promise.all([ch.send("slow"), ch.ping(), ch.send("split")]);
    assert.is(a.cmd, "slow");
    assert.is(b.cmd, "ping");
    assert.is(c.cmd, "split");
    assert.is(c.parts, 3);
    assert.equal(
      guest.received.map((l) => l.replace(/^#\d+ /, "")),
      ["slow", "ping", "split"],
    );
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("a reply that is not JSON fails the pending command with bad-reply", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const err = await rejects(ch.send("garbage", { timeoutMs: 2000 }));
    assert.is(err.code, "bad-reply");
    assert.match(err.message, /this is not json/);
    assert.is((await ch.ping()).ok, true);
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("the far end hanging up fails the pending and later commands with closed", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const err = await rejects(ch.send("hangup", { timeoutMs: 5000 }));
    assert.is(err.code, "closed");
    assert.is(ch.closed, true);
    assert.is((await rejects(ch.ping())).code, "closed");
  } finally {
    await ch.close();
    await guest.close();
  }
});

test("close() while a command is pending rejects it with closed", async () => {
  const guest = await fakeGuest();
  const ch = await GuestChannel.connect(guest.path);
  try {
    const p = ch.send("silent", { timeoutMs: 5000 });
    await new Promise((res) => setTimeout(res, 20));
    await ch.close();
    assert.is((await rejects(p)).code, "closed");
  } finally {
    await guest.close();
  }
});

test("connect retries until the socket appears, and fails with code connect at the deadline", async () => {
  const dir = mkdtempSync(join(tmpdir(), "guest-channel-test-"));
  try {
    const missing = join(dir, "nothing.sock");
    const t0 = Date.now();
    const err = await rejects(GuestChannel.connect(missing, { connectTimeoutMs: 300 }));
    assert.is(err.code, "connect");
    assert.match(err.message, /nothing\.sock/);
    assert.ok(Date.now() - t0 >= 250, "retried until the deadline");

    // a server that appears only after the client started connecting
    const path = join(dir, "late.sock");
    const connecting = GuestChannel.connect(path, { connectTimeoutMs: 5000 });
    const server = createServer((s) => {
      s.setEncoding("utf8");
      s.on("data", (d: string) => {
        const id = /^#(\d+)/.exec(d)?.[1];
        s.write(`{"id":${id},"cmd":"ping","ok":true}\n`);
      });
    });
    setTimeout(() => server.listen(path), 200);
    const ch = await connecting;
    assert.is((await ch.ping()).ok, true);
    await ch.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
