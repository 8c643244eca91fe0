// Host side of the demo guest's control channel: a virtio-serial port named
// org.shadowvm.guest.0 that QEMU exposes on the host as a unix socket
// (`-chardev socket,id=...,path=...,server=on,wait=off -device virtserialport,...`).
//
// Protocol (deploy/guest/rootfs/usr/sbin/svm-channel): one command per line, one JSON object per
// line back. A command may be prefixed with `#<id> `; the reply then carries `"id": <id>`. This
// client always sends ids and drops replies with another id: a reply to a command whose client
// timed out is written by the guest only when the next client connects (a virtio port blocks
// writes while no host is connected), so it must never be taken for the answer to a new command.
//
// Facts about the transport worth knowing:
// - QEMU's socket chardev serves one client at a time: a second client connects (kernel backlog)
//   but receives nothing until the first disconnects. Keep one GuestChannel per VM.
// - Bytes sent before the guest opened the port wait in QEMU/the socket: connecting early is fine.
// - The guest handles one command at a time; this client serializes commands too.
import { createConnection, type Socket } from "node:net";
import { ShadowvmError } from "@shadowvm/shared";

export type GuestChannelErrorCode =
  | "connect" // socket missing or refused until the deadline
  | "timeout" // no reply within the deadline
  | "closed" // the socket closed (QEMU exited, close() called) while a command was pending
  | "bad-reply" // the guest sent a line that is not a JSON object
  | "bad-command" // the command is empty or spans several lines
  | "guest-error"; // the guest answered ok:false and the caller asked for { check: true }

export class GuestChannelError extends ShadowvmError {
  readonly command: string | undefined;
  readonly reply: GuestReply | undefined;
  constructor(
    code: GuestChannelErrorCode,
    message: string,
    extra?: { command?: string; reply?: GuestReply; cause?: unknown },
  ) {
    super("guest-channel", code, message, extra?.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "GuestChannelError";
    this.command = extra?.command;
    this.reply = extra?.reply;
  }
}

/** Every reply has these; the rest depends on the command. */
export interface GuestReply {
  ok: boolean;
  cmd: string;
  id?: number;
  error?: string;
  [key: string]: unknown;
}

export interface PingReply extends GuestReply {
  pong: true;
  uptime_s: number;
  boot_id: string;
  writer_seq: number;
}

/** The workload's health, as served by GET /cgi-bin/health too. */
export interface GuestHealth {
  status: "ok" | "degraded";
  uptime_s: number;
  boot_id: string;
  boot_count: number;
  writer_seq: number;
  writer_synced_seq: number;
  writer_running: boolean;
  state_ok: boolean;
  state_checked_uptime_s: number;
  load1: number;
  mem_available_kb: number;
}

export interface StatusReply extends GuestReply {
  health: GuestHealth;
}

/** Result of stopping the writer, checking every record, the in-memory state and the file system. */
export interface VerifyReply extends GuestReply {
  records: number;
  first_seq: number;
  last_seq: number;
  /** Invalid records followed by valid ones: corruption. */
  bad: number;
  /** Places where the sequence does not continue by one. */
  gaps: number;
  /** Sequence numbers absent in the gaps. */
  missing: number;
  /** 1 when the last line is an incomplete record (a write cut short). Not counted in `bad`. */
  torn_tail: number;
  /** Last sequence number the writer had fdatasync'ed (from /data/synced). */
  synced_seq: number;
  /** Synced records that are gone: lost durable data. */
  missing_synced: number;
  state_ok: boolean;
  fsck: "clean" | "errors" | "skipped";
  fsck_rc: number;
  remounted: boolean;
  writer_restarted: boolean;
  took_s: number;
}

export interface GuestAddress {
  ifname: string;
  family: "inet" | "inet6";
  address: string;
  prefix: number;
}

export interface IpReply extends GuestReply {
  addresses: GuestAddress[];
  mac: string;
  gateway: string;
}

export interface SignalReply extends GuestReply {
  name?: string;
  signal?: string;
  pids: number[];
}

export interface FillReply extends GuestReply {
  percent: number;
  total_kb: number;
  used_kb: number;
  avail_kb: number;
  fill_bytes: number;
  write_failed: boolean;
}

export interface ClockReply extends GuestReply {
  before: number;
  after: number;
}

export interface GuestChannelOptions {
  /** Deadline for the socket to accept a connection (retried while missing/refused). Default 10 s. */
  connectTimeoutMs?: number;
  /** Default deadline of a command. Default 30 s (`verify` defaults to 180 s). */
  commandTimeoutMs?: number;
}

export interface SendOptions {
  timeoutMs?: number;
  /** Throw GuestChannelError("guest-error") when the reply has ok:false. */
  check?: boolean;
}

interface Pending {
  id: number;
  command: string;
  resolve: (reply: GuestReply) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const MAX_LINE_CHARS = 1024 * 1024;
const CONNECT_RETRY_MS = 100;

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    const onError = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

export class GuestChannel {
  readonly socketPath: string;
  /** Replies received that answered no pending command (stale or unsolicited), for diagnostics. */
  staleReplies = 0;
  private readonly socket: Socket;
  private readonly commandTimeoutMs: number;
  private buffer = "";
  private nextId: number;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closedError: GuestChannelError | undefined;

  private constructor(socketPath: string, socket: Socket, options: GuestChannelOptions) {
    this.socketPath = socketPath;
    this.socket = socket;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    // random start: ids of an earlier client's late replies must not match ours
    this.nextId = 1 + Math.floor(Math.random() * 1_000_000_000);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", () => {
      /* reported through "close" */
    });
    socket.on("close", () => {
      this.closedError ??= new GuestChannelError("closed", `guest channel ${socketPath} closed`);
      this.failPending(this.closedError);
    });
  }

  /** Connect to the host end of the channel, retrying while the socket is missing or refuses. */
  static async connect(socketPath: string, options: GuestChannelOptions = {}): Promise<GuestChannel> {
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    for (;;) {
      try {
        const socket = await connectOnce(socketPath);
        return new GuestChannel(socketPath, socket, options);
      } catch (err) {
        lastError = err;
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "ECONNREFUSED" && code !== "EAGAIN") break;
      }
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
    }
    const reason = lastError instanceof Error ? lastError.message : String(lastError);
    throw new GuestChannelError(
      "connect",
      `cannot connect to guest channel ${socketPath} within ${timeoutMs} ms: ${reason}`,
      { cause: lastError },
    );
  }

  /** Send one command line and resolve with the guest's JSON reply. Commands run one at a time. */
  send(command: string, options: SendOptions = {}): Promise<GuestReply> {
    const line = command.trim();
    if (line === "" || /[\r\n]/.test(line)) {
      return Promise.reject(
        new GuestChannelError(
          "bad-command",
          `a guest command is one non-empty line, got ${JSON.stringify(command)}`,
          {
            command,
          },
        ),
      );
    }
    const run = this.queue.then(() => this.sendNow(line, options));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private sendNow(command: string, options: SendOptions): Promise<GuestReply> {
    if (this.closedError) return Promise.reject(this.closedError);
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const id = this.nextId++;
    return new Promise<GuestReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending?.id !== id) return;
        this.pending = undefined;
        reject(
          new GuestChannelError(
            "timeout",
            `guest did not answer "${command}" within ${timeoutMs} ms on ${this.socketPath}`,
            { command },
          ),
        );
      }, timeoutMs);
      this.pending = {
        id,
        command,
        timer,
        resolve: (reply) => {
          if (options.check && reply.ok !== true) {
            reject(
              new GuestChannelError(
                "guest-error",
                `guest refused "${command}": ${reply.error ?? JSON.stringify(reply)}`,
                {
                  command,
                  reply,
                },
              ),
            );
          } else {
            resolve(reply);
          }
        },
        reject,
      };
      this.socket.write(`#${id} ${command}\n`);
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf("\n"); nl >= 0; nl = this.buffer.indexOf("\n")) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, "");
      this.buffer = this.buffer.slice(nl + 1);
      if (line.trim() !== "") this.onLine(line);
    }
    if (this.buffer.length > MAX_LINE_CHARS) {
      this.buffer = "";
      this.failPending(
        new GuestChannelError("bad-reply", `guest sent a line longer than ${MAX_LINE_CHARS} chars`),
      );
    }
  }

  private onLine(line: string): void {
    let reply: unknown;
    try {
      reply = JSON.parse(line);
    } catch {
      reply = undefined;
    }
    if (typeof reply !== "object" || reply === null || Array.isArray(reply)) {
      this.failPending(
        new GuestChannelError(
          "bad-reply",
          `guest sent a line that is not a JSON object: ${line.slice(0, 200)}`,
        ),
      );
      return;
    }
    const r = reply as GuestReply;
    const pending = this.pending;
    if (!pending || r.id !== pending.id) {
      this.staleReplies++;
      return;
    }
    this.pending = undefined;
    clearTimeout(pending.timer);
    pending.resolve(r);
  }

  private failPending(err: GuestChannelError): void {
    const pending = this.pending;
    if (!pending) return;
    this.pending = undefined;
    clearTimeout(pending.timer);
    pending.reject(
      new GuestChannelError(
        err.code as GuestChannelErrorCode,
        `${err.message} (while awaiting "${pending.command}")`,
        {
          command: pending.command,
        },
      ),
    );
  }

  async ping(options?: SendOptions): Promise<PingReply> {
    return this.send("ping", options) as Promise<PingReply>;
  }

  async status(options?: SendOptions): Promise<StatusReply> {
    return this.send("status", options) as Promise<StatusReply>;
  }

  /** Stops the writer, checks everything, runs e2fsck -fn on the unmounted disk, restarts. */
  async verify(options: SendOptions = {}): Promise<VerifyReply> {
    return this.send("verify", { timeoutMs: 180_000, ...options }) as Promise<VerifyReply>;
  }

  async ip(options?: SendOptions): Promise<IpReply> {
    return this.send("ip", options) as Promise<IpReply>;
  }

  /** Send a signal (default KILL) to the guest processes named `name` (comm; svm-NAME too). */
  async kill(name: string, signal?: string, options?: SendOptions): Promise<SignalReply> {
    return this.send(
      `kill ${word(name)}${signal ? ` ${word(signal)}` : ""}`,
      options,
    ) as Promise<SignalReply>;
  }

  /** SIGSTOP the processes named `name`; `cont()` resumes them. */
  async stop(name: string, options?: SendOptions): Promise<SignalReply> {
    return this.send(`stop ${word(name)}`, options) as Promise<SignalReply>;
  }

  /** SIGCONT the processes named `name`, or every process stopped with `stop`. */
  async cont(name?: string, options?: SendOptions): Promise<SignalReply> {
    return this.send(name ? `cont ${word(name)}` : "cont", options) as Promise<SignalReply>;
  }

  /** (Re)start a workload service: httpd, writer, state, leak, io, cpu. */
  async start(name: string, options?: SendOptions): Promise<SignalReply> {
    return this.send(`start ${word(name)}`, options) as Promise<SignalReply>;
  }

  /** Fill the data disk to `percent` of its size (0 removes the fill file). */
  async fill(percent: number, options: SendOptions = {}): Promise<FillReply> {
    if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
      throw new GuestChannelError("bad-command", `fill percent must be 0-100, got ${percent}`);
    }
    return this.send(`fill ${percent}`, { timeoutMs: 120_000, ...options }) as Promise<FillReply>;
  }

  /** Jump the guest's clock by `seconds` (may be negative). */
  async clock(seconds: number, options?: SendOptions): Promise<ClockReply> {
    if (!Number.isInteger(seconds)) {
      throw new GuestChannelError("bad-command", `clock takes whole seconds, got ${seconds}`);
    }
    return this.send(`clock ${seconds}`, options) as Promise<ClockReply>;
  }

  /** Write `key` to /proc/sysrq-trigger (`c` crashes the kernel). The reply comes first. */
  async sysrq(key: string, options?: SendOptions): Promise<GuestReply> {
    return this.send(`sysrq ${word(key)}`, options);
  }

  /**
   * Write `key` to /proc/sysrq-trigger `seconds` from now (guest time), from a background
   * `svm-timebomb`; `kill("timebomb")` defuses it.
   */
  async sysrqAfter(key: string, seconds: number, options?: SendOptions): Promise<GuestReply> {
    if (!Number.isInteger(seconds) || seconds < 0) {
      throw new GuestChannelError("bad-command", `sysrq takes whole seconds >= 0, got ${seconds}`);
    }
    return this.send(`sysrq ${word(key)} ${seconds}`, options);
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Close the connection; a pending command fails with code "closed". */
  close(): Promise<void> {
    this.closedError ??= new GuestChannelError(
      "closed",
      `guest channel ${this.socketPath} closed by the client`,
    );
    this.failPending(this.closedError);
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once("close", () => resolve());
      this.socket.destroy();
    });
  }
}

function word(s: string): string {
  if (!/^[A-Za-z0-9_.+-]+$/.test(s)) {
    throw new GuestChannelError(
      "bad-command",
      `guest command arguments are single words, got ${JSON.stringify(s)}`,
    );
  }
  return s;
}
