// A typed client for the QEMU Machine Protocol (QMP) over a unix socket.
//
// Protocol facts this client relies on (QEMU docs/interop/qmp-spec):
// - On connect the server sends a greeting `{"QMP": {...}}`; the client must send
//   `qmp_capabilities` before any other command.
// - Messages are JSON objects separated by CRLF. Replies carry the request's `id`; events carry
//   `event`, `data` and QEMU's own `timestamp` ({seconds, microseconds}), which is what pause
//   measurements must use (the host clock when Node sees the event is later and jittery).
// - A QMP server socket serves one client at a time, so callers keep connections short unless
//   they need events (a capture holds one for its whole duration).
// - File descriptors (for `getfd`/`add-fd`) travel as SCM_RIGHTS ancillary data with the command
//   that consumes them; Node's net.Socket cannot send them, so connections opened with
//   `fdPassing: true` use the `usocket` native module.
// - Close-on-exec: libuv opens every descriptor Node creates with O_CLOEXEC/SOCK_CLOEXEC (files
//   from fs.openSync included), and Node offers no fcntl, but child_process does not close the
//   other descriptors a child inherits. usocket 1.1.0 creates its sockets (connect, listen,
//   accept) and the descriptors it receives without close-on-exec, so a child spawned while such
//   a connection is open (a shadow QEMU, qemu-img, ip, virsh) would inherit production's QMP
//   connection and keep the monitor busy (it serves one client at a time) for as long as it
//   runs. patches/usocket@1.1.0.patch (applied by pnpm) makes them close-on-exec; a usocket
//   built without it is refused here rather than trusted (see `closeOnExec`).
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { createConnection } from "node:net";
import type { Duplex } from "node:stream";
import { ShadowvmError } from "@shadowvm/shared";
import { loadUsocket, type USocket } from "../usocket.js";

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** QEMU's timestamp of the event in milliseconds since the epoch (microsecond precision). */
  timestampMs: number;
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpConnectOptions {
  /** Deadline for connecting, the greeting and capability negotiation. */
  connectTimeoutMs?: number;
  /** Default deadline of each command. */
  commandTimeoutMs?: number;
  /** Open a connection able to pass file descriptors (needs the usocket module). */
  fdPassing?: boolean;
}

export interface QmpCommandOptions {
  timeoutMs?: number;
  /** File descriptors sent with this command (e.g. for `getfd`). Needs `fdPassing`. */
  fds?: number[];
}

/** QMP error classes (QEMU's ErrorClass), plus our own for transport-level failures. */
export type QmpErrorClass =
  | "GenericError"
  | "CommandNotFound"
  | "DeviceNotActive"
  | "DeviceNotFound"
  | "KVMMissingCap"
  | "Timeout"
  | "Disconnected"
  | "Unreachable"
  | "NotQmp"
  | "Protocol";

export class QmpError extends ShadowvmError {
  readonly errorClass: QmpErrorClass;
  readonly command: string | undefined;
  constructor(errorClass: QmpErrorClass, message: string, command?: string, options?: { cause?: unknown }) {
    super("qmp", errorClass, message, options);
    this.name = "QmpError";
    this.errorClass = errorClass;
    this.command = command;
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Longest QMP line accepted; query-qmp-schema is ~200 KB, so this leaves ample room. */
const MAX_LINE_BYTES = 32 * 1024 * 1024;

/** Linux's O_CLOEXEC as /proc/<pid>/fdinfo prints it in `flags` (octal). */
const O_CLOEXEC = 0o2000000;

/**
 * Whether this process's descriptor `fd` is close-on-exec (read from /proc/self/fdinfo, since
 * Node has no fcntl); undefined where that cannot be read (no /proc, or no such descriptor).
 */
export function closeOnExec(fd: number): boolean | undefined {
  let info: string;
  try {
    info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  } catch {
    return undefined;
  }
  const flags = /^flags:\s*([0-7]+)/m.exec(info);
  return flags ? (Number.parseInt(flags[1]!, 8) & O_CLOEXEC) !== 0 : undefined;
}

function describeConnectError(path: string, err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "ENOENT":
      return `no QMP socket at ${path} (is the VM running, and is this the path given to -qmp?)`;
    case "ECONNREFUSED":
      return `nothing listens on ${path} (a stale socket left by a VM that exited?)`;
    case "EACCES":
    case "EPERM":
      return `permission denied opening ${path} (run the agent as a user allowed to use QEMU's sockets)`;
    case "ENOTSOCK":
      return `${path} is not a unix socket`;
    default:
      return `cannot connect to QMP socket ${path}: ${err.message}`;
  }
}

export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [Error | undefined] }> {
  readonly path: string;
  greeting: QmpGreeting | undefined;
  private socket: Duplex | undefined;
  private fdPassing = false;
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private commandTimeoutMs = 10_000;
  private closed = false;
  private closeReason: Error | undefined;

  private constructor(path: string) {
    super();
    this.path = path;
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(path);
    client.commandTimeoutMs = options.commandTimeoutMs ?? 10_000;
    await client.open(options);
    return client;
  }

  /**
   * Hands `fd` to QEMU as the named descriptor `fdname` (QMP `getfd`) over a short-lived
   * connection of its own. Named descriptors belong to the monitor, not the connection, so a later
   * ordinary connection can use `fd:<fdname>`; keeping the native fd-passing socket open only for
   * this one command keeps long-running sessions on Node's own, well-trodden socket code.
   */
  static async passFd(
    path: string,
    fdname: string,
    fd: number,
    options: QmpConnectOptions = {},
  ): Promise<void> {
    const client = await QmpClient.connect(path, { ...options, fdPassing: true });
    try {
      await client.execute("getfd", { fdname }, { fds: [fd] });
    } finally {
      client.close();
    }
  }

  get supportsFdPassing(): boolean {
    return this.fdPassing;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private open(options: QmpConnectOptions): Promise<void> {
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    this.closed = false;
    this.closeReason = undefined;
    this.buffer = "";
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.destroySocket();
        reject(err);
      };
      const timer = setTimeout(
        () =>
          fail(
            new QmpError(
              this.greeting ? "Timeout" : "NotQmp",
              this.greeting
                ? `QMP capability negotiation on ${this.path} did not finish within ${timeoutMs} ms`
                : `${this.path} does not speak QMP: no greeting within ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );

      let socket: Duplex;
      if (options.fdPassing) {
        const usocket = loadUsocket();
        if (!usocket) {
          fail(
            new QmpError(
              "Unreachable",
              "file descriptor passing needs the usocket module, which is not installed or failed to build",
            ),
          );
          return;
        }
        socket = new usocket.USocket();
        this.fdPassing = true;
      } else {
        socket = createConnection({ path: this.path });
      }
      this.socket = socket;
      socket.on("error", (err: NodeJS.ErrnoException) => {
        if (!settled)
          fail(new QmpError("Unreachable", describeConnectError(this.path, err), undefined, { cause: err }));
        else
          this.handleClose(
            new QmpError("Disconnected", `QMP connection to ${this.path} failed: ${err.message}`),
          );
      });
      socket.on("close", () => {
        if (!settled)
          fail(new QmpError("NotQmp", `${this.path} closed the connection before sending a QMP greeting`));
        else this.handleClose(undefined);
      });
      socket.on("end", () => {
        if (settled) this.handleClose(undefined);
      });
      // usocket must not be read from before it is connected (its native handle asserts).
      const attachReader = () =>
        socket.on("data", (chunk: Buffer | string) => {
          try {
            this.onData(chunk.toString(), (greeting) => {
              this.greeting = greeting;
              this.execute("qmp_capabilities", undefined, { timeoutMs })
                .then(() => {
                  if (settled) return;
                  settled = true;
                  clearTimeout(timer);
                  resolve();
                })
                .catch(fail);
            });
          } catch (err) {
            if (!settled) fail(err as Error);
            else this.handleClose(err as Error);
          }
        });
      if (options.fdPassing) {
        socket.once("connected", () => {
          const fd = (socket as Duplex & { fd?: number }).fd;
          if (fd !== undefined && closeOnExec(fd) === false) {
            fail(
              new QmpError(
                "Unreachable",
                "the usocket module was built without patches/usocket@1.1.0.patch: its sockets are not close-on-exec and every process the agent starts would inherit this QMP connection; reinstall dependencies with pnpm so the patch applies",
              ),
            );
            return;
          }
          attachReader();
        });
        (socket as USocket).connect(this.path);
      } else {
        attachReader();
      }
    });
  }

  private onData(text: string, onGreeting: (g: QmpGreeting) => void): void {
    this.buffer += text;
    if (this.buffer.length > MAX_LINE_BYTES) {
      throw new QmpError("Protocol", `QMP peer ${this.path} sent a line longer than ${MAX_LINE_BYTES} bytes`);
    }
    for (let nl = this.buffer.indexOf("\n"); nl >= 0; nl = this.buffer.indexOf("\n")) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line);
      } catch {
        const what = this.greeting ? "sent a line that is not JSON" : "does not speak QMP";
        throw new QmpError(
          this.greeting ? "Protocol" : "NotQmp",
          `${this.path} ${what}: ${line.slice(0, 80)}`,
        );
      }
      this.dispatch(msg, onGreeting);
    }
  }

  private dispatch(msg: Record<string, unknown>, onGreeting: (g: QmpGreeting) => void): void {
    if (!this.greeting) {
      if (typeof msg["QMP"] !== "object" || msg["QMP"] === null) {
        throw new QmpError(
          "NotQmp",
          `${this.path} does not speak QMP: first message was ${JSON.stringify(msg).slice(0, 80)}`,
        );
      }
      onGreeting(msg["QMP"] as QmpGreeting);
      return;
    }
    if (typeof msg["event"] === "string") {
      const ts = msg["timestamp"] as { seconds?: number; microseconds?: number } | undefined;
      const timestampMs =
        ts && typeof ts.seconds === "number" ? ts.seconds * 1000 + (ts.microseconds ?? 0) / 1000 : Date.now();
      this.emit("event", {
        event: msg["event"],
        data: (msg["data"] as Record<string, unknown>) ?? {},
        timestampMs,
      });
      return;
    }
    const id = msg["id"];
    const pending = typeof id === "string" ? this.pending.get(id) : undefined;
    if (!pending) return; // a reply to a command that already timed out
    this.pending.delete(id as string);
    clearTimeout(pending.timer);
    if ("error" in msg) {
      const error = (msg["error"] as { class?: string; desc?: string }) ?? {};
      pending.reject(
        new QmpError(
          (error.class as QmpErrorClass) ?? "GenericError",
          `QMP command ${pending.command} failed on ${this.path}: ${error.desc ?? "unknown error"} (${error.class ?? "GenericError"})`,
          pending.command,
        ),
      );
    } else {
      pending.resolve(msg["return"]);
    }
  }

  /** Runs one command. Rejects with QmpError on a QMP error, timeout or disconnect. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: QmpCommandOptions = {},
  ): Promise<T> {
    if (this.closed || !this.socket) {
      return Promise.reject(
        new QmpError(
          "Disconnected",
          `QMP connection to ${this.path} is closed; cannot run ${command}${this.closeReason ? ` (${this.closeReason.message})` : ""}`,
          command,
        ),
      );
    }
    if (options.fds?.length && !this.fdPassing) {
      return Promise.reject(
        new QmpError(
          "Protocol",
          `${command}: passing file descriptors needs a connection opened with fdPassing`,
          command,
        ),
      );
    }
    const id = `c${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new QmpError(
            "Timeout",
            `QMP command ${command} on ${this.path} got no reply within ${timeoutMs} ms`,
            command,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const line = Buffer.from(
        `${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`,
      );
      if (options.fds?.length) this.socket!.write({ data: line, fds: options.fds });
      else this.socket!.write(line);
    });
  }

  /** Runs an HMP command through QMP (for the few things QMP lacks, e.g. `mce`). */
  async hmp(commandLine: string, options?: QmpCommandOptions): Promise<string> {
    return this.execute<string>("human-monitor-command", { "command-line": commandLine }, options);
  }

  /**
   * Resolves with the first event named `name` (and matching `predicate`) that arrives after this
   * call. Register before triggering what emits it, or the event may be missed.
   */
  waitForEvent(
    name: string,
    predicate: (e: QmpEvent) => boolean = () => true,
    timeoutMs = 30_000,
  ): Promise<QmpEvent> {
    const waiter = new Promise<QmpEvent>((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !predicate(e)) return;
        cleanup();
        resolve(e);
      };
      const onClose = (reason: Error | undefined) => {
        cleanup();
        reject(
          new QmpError(
            "Disconnected",
            `QMP connection to ${this.path} closed while waiting for event ${name}${reason ? `: ${reason.message}` : ""}`,
          ),
        );
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpError("Timeout", `no ${name} event from ${this.path} within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", onEvent);
        this.off("close", onClose);
      };
      this.on("event", onEvent);
      this.on("close", onClose);
    });
    // A waiter registered ahead of a command that then failed is never awaited; its later
    // rejection must not crash the process. Whoever awaits it still sees the rejection.
    waiter.catch(() => undefined);
    return waiter;
  }

  /** Reconnects after a lost connection (e.g. QEMU restarted its monitor), with retries. */
  async reconnect(
    options: QmpConnectOptions & { attempts?: number; backoffMs?: number } = {},
  ): Promise<void> {
    this.destroySocket();
    const attempts = options.attempts ?? 5;
    let lastError: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        this.greeting = undefined;
        await this.open({ ...options, fdPassing: options.fdPassing ?? this.fdPassing });
        return;
      } catch (err) {
        lastError = err;
        if (err instanceof QmpError && err.errorClass === "NotQmp") break;
        await new Promise((r) => setTimeout(r, (options.backoffMs ?? 200) * 2 ** i));
      }
    }
    throw lastError;
  }

  private handleClose(reason: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(
        new QmpError(
          "Disconnected",
          `QMP connection to ${this.path} closed while waiting for the reply to ${p.command} (did the VM exit?)`,
          p.command,
        ),
      );
      this.pending.delete(id);
    }
    this.emit("close", reason);
  }

  private destroySocket(): void {
    const socket = this.socket;
    this.socket = undefined;
    if (socket) {
      socket.removeAllListeners("data");
      socket.on("error", () => {});
      socket.destroy();
    }
    this.handleClose(undefined);
  }

  /** Closes the connection; pending commands are rejected. */
  close(): void {
    this.destroySocket();
  }
}
