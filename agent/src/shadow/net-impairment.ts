// Network delay, loss and bandwidth for one shadow without netem: QEMU's own netdev filters hand
// every packet of the shadow's NIC to the agent and take it back.
//
// Per network backend and direction (`tx` = sent by the guest, `rx` = towards the guest), one
// `filter-redirector` with an outdev chardev (QEMU -> agent: each packet the filter sees, which
// then no longer goes on by itself) and an indev chardev (agent -> QEMU: packets written there
// continue past the filter in the filter's direction). Both chardevs are unix sockets in the
// shadow's directory where the agent listens; everything is added at run time over QMP
// (chardev-add, object-add) and removed again, so an unimpaired shadow has no filter at all.
//
// Frames on those sockets (net/filter-mirror.c, vnet_hdr_support=on): 4-byte big-endian packet
// length, 4-byte big-endian vnet header length, the packet. The agent passes frames on unchanged
// after dropping a share of them (loss) and holding each until `arrival + delay`, no earlier than
// the previous one's release plus its serialization time at the configured rate (bandwidth), so
// order is kept, as on a wire. Works the same with user-mode networking and with a tap.
import { rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { QmpClient } from "../hypervisor/qemu/qmp-client.js";

export interface NetImpairment {
  /** Added one-way delay on packets the guest sends, ms. */
  delayMs: number;
  /** Share of packets dropped in each direction, percent. */
  lossPct: number;
  /** Bandwidth per direction, kbit/s (undefined = unlimited). */
  rateKbit?: number;
}

export interface DirectionStats {
  packets: number;
  bytes: number;
  dropped: number;
}

type Direction = "tx" | "rx";

interface Pipe {
  netdev: string;
  dir: Direction;
  servers: Server[];
  out: Socket | undefined;
  in: Socket | undefined;
  buffer: Buffer;
  queue: { frame: Buffer; at: number }[];
  timer: NodeJS.Timeout | undefined;
  lastRelease: number;
  stats: DirectionStats;
}

/** Splits complete frames off the front of `buf`; returns them and the rest. */
export function splitFrames(buf: Buffer): { frames: Buffer[]; rest: Buffer } {
  const frames: Buffer[] = [];
  let off = 0;
  while (buf.length - off >= 8) {
    const len = buf.readUInt32BE(off);
    if (buf.length - off < 8 + len) break;
    frames.push(buf.subarray(off, off + 8 + len));
    off += 8 + len;
  }
  return { frames, rest: buf.subarray(off) };
}

/** When a frame may leave: after the delay, and after the previous one has been "sent" at the rate. */
export function releaseTime(
  arrival: number,
  sizeBytes: number,
  lastRelease: number,
  delayMs: number,
  rateKbit: number | undefined,
): number {
  const serialization = rateKbit ? (sizeBytes * 8) / rateKbit : 0; // kbit/s = bit/ms
  return Math.max(arrival + delayMs, lastRelease + serialization);
}

export class NetImpairer {
  private impairment: NetImpairment;
  private readonly pipes: Pipe[] = [];
  private readonly qmp: QmpClient;
  private readonly added: { objects: string[]; chardevs: string[] } = { objects: [], chardevs: [] };
  private closed = false;
  /** Random source for loss (tests inject a fixed one). */
  random: () => number = Math.random;

  private constructor(qmp: QmpClient, impairment: NetImpairment) {
    this.qmp = qmp;
    this.impairment = { ...impairment };
  }

  /** Puts the agent in the path of every packet of the given network backends. */
  static async attach(
    qmp: QmpClient,
    socketDir: string,
    netdevs: string[],
    impairment: NetImpairment,
  ): Promise<NetImpairer> {
    const n = new NetImpairer(qmp, impairment);
    try {
      for (const [i, netdev] of netdevs.entries()) {
        for (const dir of ["tx", "rx"] as const) await n.addPipe(socketDir, i, netdev, dir);
      }
    } catch (err) {
      await n.close();
      throw err;
    }
    return n;
  }

  private async addPipe(socketDir: string, index: number, netdev: string, dir: Direction): Promise<void> {
    const pipe: Pipe = {
      netdev,
      dir,
      servers: [],
      out: undefined,
      in: undefined,
      buffer: Buffer.alloc(0),
      queue: [],
      timer: undefined,
      lastRelease: 0,
      stats: { packets: 0, bytes: 0, dropped: 0 },
    };
    this.pipes.push(pipe);
    const base = `svm-nf${index}-${dir}`;
    const listen = async (role: "out" | "in"): Promise<string> => {
      const path = join(socketDir, `${base}-${role}.sock`);
      rmSync(path, { force: true });
      const server = createServer((sock) => {
        sock.on("error", () => undefined);
        if (role === "out") {
          pipe.out = sock;
          sock.on("data", (d: Buffer) => this.onData(pipe, d));
        } else {
          pipe.in = sock;
          sock.on("data", () => undefined);
        }
      });
      pipe.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(path, () => resolve());
      });
      return path;
    };
    for (const role of ["out", "in"] as const) {
      const path = await listen(role);
      const id = `${base}-${role}`;
      await this.qmp.execute("chardev-add", {
        id,
        backend: { type: "socket", data: { addr: { type: "unix", data: { path } }, server: false } },
      });
      this.added.chardevs.push(id);
    }
    await this.qmp.execute("object-add", {
      "qom-type": "filter-redirector",
      id: base,
      netdev,
      queue: dir,
      outdev: `${base}-out`,
      indev: `${base}-in`,
      vnet_hdr_support: true,
    });
    this.added.objects.push(base);
  }

  private onData(pipe: Pipe, data: Buffer): void {
    pipe.buffer = pipe.buffer.length ? Buffer.concat([pipe.buffer, data]) : data;
    const { frames, rest } = splitFrames(pipe.buffer);
    pipe.buffer = Buffer.from(rest);
    const now = performance.now();
    for (const frame of frames) {
      pipe.stats.packets++;
      pipe.stats.bytes += frame.length - 8;
      if (this.impairment.lossPct > 0 && this.random() * 100 < this.impairment.lossPct) {
        pipe.stats.dropped++;
        continue;
      }
      const delay = pipe.dir === "tx" ? this.impairment.delayMs : 0;
      const at = releaseTime(now, frame.length - 8, pipe.lastRelease, delay, this.impairment.rateKbit);
      pipe.lastRelease = at;
      pipe.queue.push({ frame: Buffer.from(frame), at });
    }
    this.pump(pipe);
  }

  private pump(pipe: Pipe): void {
    if (pipe.timer || this.closed) return;
    const now = performance.now();
    while (pipe.queue.length && pipe.queue[0]!.at <= now + 0.5) {
      const { frame } = pipe.queue.shift()!;
      pipe.in?.write(frame);
    }
    const next = pipe.queue[0];
    if (next) {
      pipe.timer = setTimeout(
        () => {
          pipe.timer = undefined;
          this.pump(pipe);
        },
        Math.max(0, next.at - now),
      );
    }
  }

  /** Changes the impairment from now on (a latency spike, its end). */
  set(impairment: NetImpairment): void {
    this.impairment = { ...impairment };
  }

  get current(): NetImpairment {
    return { ...this.impairment };
  }

  stats(): Record<string, DirectionStats> {
    return Object.fromEntries(this.pipes.map((p) => [`${p.netdev}/${p.dir}`, { ...p.stats }]));
  }

  /** Removes the filters (the NIC's traffic flows directly again) and closes the sockets. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.added.objects.reverse())
      await this.qmp.execute("object-del", { id }).catch(() => undefined);
    for (const id of this.added.chardevs.reverse())
      await this.qmp.execute("chardev-remove", { id }).catch(() => undefined);
    for (const p of this.pipes) {
      if (p.timer) clearTimeout(p.timer);
      p.out?.destroy();
      p.in?.destroy();
      for (const s of p.servers) s.close();
    }
  }
}
