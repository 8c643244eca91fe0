// Issue 4, isolation: a shadow, in either mode, reaches nothing: not the production VM (its
// service, its network), not the host's addresses, not the outside. Every attempt is made from
// inside the shadow's guest (guest channel `probe <host> <port>`: one TCP connect + GET), towards
// listeners this test owns and counts; the one outside address is TEST-NET-3 (203.0.113.1),
// tried once, which the isolation must stop before it leaves the host.
// Positive controls show the attempts are real: the same probe from the production VM (ordinary
// user networking) does reach the host listener; the shadow's guest reaches its own service; in
// netns mode it reaches a listener placed inside its own namespace; the agent reaches the
// shadow's service through its forward.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createServer, type Server, type Socket } from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { captureVm } from "@shadowvm/agent/capture/capture-service";
import { CaptureStore } from "@shadowvm/agent/capture/store/index";
import { GuestChannel } from "@shadowvm/agent/guest/guest-channel";
import { QemuDriver } from "@shadowvm/agent/hypervisor/qemu/qemu-driver";
import { restoreCapture } from "@shadowvm/agent/shadow/restored-capture";
import { type ShadowNetworkMode, startShadow } from "@shadowvm/agent/shadow/shadow-vm";
import { waitFor } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { httpGet, qemuProcesses, tempWorkDir, withDemoVm } from "./support/demo-guest.js";

const T0 = Date.now();
const log = (m: string) =>
  process.stderr.write(`[isolation +${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);

interface Listener {
  port: number;
  accepted: string[];
  close(): Promise<void>;
}

/** A TCP listener that greets and counts every connection it gets. */
function listen(host: string): Promise<Listener> {
  const accepted: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    accepted.push(`${s.remoteAddress}:${s.remotePort}`);
    sockets.add(s);
    s.on("error", () => undefined);
    s.on("close", () => sockets.delete(s));
    s.end("SVM-LISTENER\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      const a = server.address();
      resolve({
        port: typeof a === "object" && a ? a.port : 0,
        accepted,
        close: () =>
          new Promise((r) => {
            for (const c of sockets) c.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}

const LISTENER_JS = `const s=require("net").createServer(c=>{console.log("ACCEPT "+c.remoteAddress);c.end("SVM-LISTENER\\n")});s.listen(Number(process.argv[2]),process.argv[1],()=>console.log("LISTENING"));`;

/** A listener inside a network namespace; its accepts are read from its stdout. */
async function listenInNetns(
  ns: string,
  host: string,
  port: number,
): Promise<{ child: ChildProcess; accepts: () => number }> {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", LISTENER_JS, host, String(port)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d) => {
    out += d;
  });
  await waitFor(() => out.includes("LISTENING"), {
    timeoutMs: 20_000,
    what: `listener in ${ns} on ${host}:${port}`,
  });
  return { child, accepts: () => out.split("\n").filter((l) => l.startsWith("ACCEPT")).length };
}

interface ProbeReply {
  ok: boolean;
  connected: boolean;
  rc: number;
  response: string;
  error: string;
}

async function probeFrom(channel: GuestChannel, host: string, port: number): Promise<ProbeReply> {
  const r = (await channel.send(`probe ${host} ${port}`, { timeoutMs: 30_000 })) as unknown as ProbeReply;
  assert.ok(r.ok, `probe ${host} ${port} ran: ${JSON.stringify(r)}`);
  return r;
}

const hostIp =
  Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === "IPv4" && !a.internal)?.address ?? "127.0.0.2";

test("shadows reach neither production, nor the host, nor the outside, in user and netns mode", async () => {
  const tag = String(process.pid % 10_000);
  const prodNs = `svmt-prod-${tag}`;
  const vethHost = `svmtph${tag}`;
  const vethNs = `svmtpn${tag}`;
  const data = tempWorkDir("svm-iso-");
  const loopback = await listen("127.0.0.1");
  const anyAddress = await listen("0.0.0.0");
  let prodListener: { child: ChildProcess; accepts: () => number } | undefined;
  const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });
  try {
    // "Production's network": a namespace behind a veth, as a bridge to other VMs would be.
    ip("netns", "add", prodNs);
    ip("link", "add", vethHost, "type", "veth", "peer", "name", vethNs);
    ip("link", "set", vethNs, "netns", prodNs);
    ip("addr", "add", "198.51.100.1/24", "dev", vethHost);
    ip("link", "set", vethHost, "up");
    ip("-n", prodNs, "addr", "add", "198.51.100.2/24", "dev", vethNs);
    ip("-n", prodNs, "link", "set", vethNs, "up");
    ip("-n", prodNs, "link", "set", "lo", "up");
    prodListener = await listenInNetns(prodNs, "198.51.100.2", 8099);

    await withDemoVm({ name: "iso-prod" }, async (vm) => {
      // Positive control: a guest on ordinary user networking does reach the host.
      const prodChannel = await GuestChannel.connect(vm.guestChannelSocket, { connectTimeoutMs: 30_000 });
      try {
        const r = await probeFrom(prodChannel, "10.0.2.2", loopback.port);
        assert.ok(r.connected, `the production guest reaches the host listener: ${JSON.stringify(r)}`);
        const r2 = await probeFrom(prodChannel, "198.51.100.2", 8099);
        assert.ok(r2.connected, `the production guest reaches the production network: ${JSON.stringify(r2)}`);
      } finally {
        await prodChannel.close();
      }
      await waitFor(() => loopback.accepted.length === 1 && prodListener!.accepts() === 1, {
        timeoutMs: 10_000,
        what: "the positive controls' connections counted",
      });
      loopback.accepted.length = 0;
      const prodAcceptsBefore = prodListener!.accepts();

      const store = await CaptureStore.open({ dir: join(data, "captures"), keyFile: join(data, "key") });
      let restoredDir = "";
      try {
        const rec = await captureVm({
          driver: new QemuDriver({ sockets: [vm.qmpSocket] }),
          store,
          vm: vm.qmpSocket,
          stagingRoot: join(data, "staging"),
        });
        const restored = await restoreCapture(store, rec.id, join(data, "restored"));
        restoredDir = restored.dir;
        log(`captured ${rec.id} (pause ${rec.pause_ms.toFixed(1)} ms)`);

        for (const mode of ["user", "netns"] as ShadowNetworkMode[]) {
          const id = `iso-${mode}-${tag}`;
          const shadow = await startShadow(restored, {
            id,
            workDir: join(data, id),
            network: mode,
            netnsName: `svmt-iso-${tag}`,
          });
          let inside: { child: ChildProcess; accepts: () => number } | undefined;
          const channel = await GuestChannel.connect(shadow.guestChannels["org.shadowvm.guest.0"]!, {
            connectTimeoutMs: 30_000,
          });
          try {
            log(`${mode}: shadow running (started in ${shadow.startMs} ms)`);
            const health = await httpGet(shadow.httpPort, "/cgi-bin/health", 20_000);
            assert.is(health.status, 200, `${mode}: the agent reaches the shadow's service`);
            const self = await probeFrom(channel, "127.0.0.1", 80);
            assert.ok(
              self.connected,
              `${mode}: the guest's probe works (its own service): ${JSON.stringify(self)}`,
            );
            if (mode === "netns") {
              inside = await listenInNetns(shadow.netns!.name, "10.0.2.2", 8098);
              const r = await probeFrom(channel, "10.0.2.2", 8098);
              assert.ok(r.connected, `netns: the guest reaches its own namespace: ${JSON.stringify(r)}`);
            }
            const targets: [string, string, number][] = [
              ["the host's loopback (slirp's host alias)", "10.0.2.2", loopback.port],
              ["the production VM's service via the host", "10.0.2.2", vm.httpPort],
              [`the host's address ${hostIp}`, hostIp, anyAddress.port],
              ["a production network peer", "198.51.100.2", 8099],
              ["the host on the production network", "198.51.100.1", anyAddress.port],
              ["the outside (TEST-NET-3)", "203.0.113.1", 80],
            ];
            for (const [what, host, port] of targets) {
              const r = await probeFrom(channel, host, port);
              log(
                `${mode}: ${what} ${host}:${port} -> connected=${r.connected} (${r.error || r.response || `rc ${r.rc}`})`,
              );
              assert.not.ok(
                r.connected,
                `${mode}: ${what} (${host}:${port}) must be unreachable: ${JSON.stringify(r)}`,
              );
            }
            assert.equal(loopback.accepted, [], `${mode}: nothing reached the host loopback listener`);
            assert.equal(anyAddress.accepted, [], `${mode}: nothing reached the host's addresses`);
            assert.is(
              prodListener!.accepts(),
              prodAcceptsBefore,
              `${mode}: nothing reached the production network`,
            );
          } finally {
            log(`${mode}: closing`);
            await channel.close();
            inside?.child.kill("SIGKILL");
            log(`${mode}: stopping the shadow`);
            await shadow.stop();
            log(`${mode}: stopped`);
          }
          assert.equal(qemuProcesses(id), [], `${mode}: the shadow's QEMU is gone`);
          if (mode === "netns") {
            const list = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
            assert.not.ok(list.includes(`svmt-iso-${tag}`), "its namespace is gone");
          }
        }
      } finally {
        log("closing the store");
        await store.close();
        log("store closed");
        if (restoredDir) execFileSync("rm", ["-rf", restoredDir]);
      }
    });
  } finally {
    log("cleaning up");
    prodListener?.child.kill("SIGKILL");
    try {
      ip("netns", "del", prodNs);
    } catch {
      /* not created */
    }
    try {
      ip("link", "del", vethHost);
    } catch {
      /* gone with the namespace */
    }
    log("closing listeners");
    await loopback.close();
    await anyAddress.close();
    log("listeners closed");
    execFileSync("rm", ["-rf", data]);
  }
});

test.run();
