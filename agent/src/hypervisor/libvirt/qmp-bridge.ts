// A QMP socket for one libvirt domain, served by the agent and carried through libvirt.
//
// libvirtd owns the one QMP monitor of each QEMU it runs, so nothing else may connect to it. The
// bridge gives the agent's QMP code (QmpClient: capture, capture recovery, telemetry, detection)
// an ordinary QMP unix socket per domain, and carries everything over libvirt's own interfaces:
//   commands    `virsh qemu-monitor-command <uuid> <json>` in a persistent virsh session per
//               client connection (libvirt's QMP passthrough; libvirt marks the domain tainted
//               "custom-monitor" in its log the first time, and serializes our commands with its own)
//   fds         a command that arrives with file descriptors (SCM_RIGHTS, e.g. `getfd` for the
//               capture's memory file) goes through `virsh qemu-monitor-command --pass-fds`,
//               which hands them to QEMU with the command, as QEMU's own socket would
//   events      QEMU's events of the domain (`virsh qemu-monitor-event`, QEMU timestamps kept),
//               delivered to every client after capability negotiation, like QEMU does; the
//               greeting is sent only once libvirtd has registered the watcher, so no event
//               after it can be missed
//   QEMU exits  libvirt's lifecycle event `Stopped` closes every client connection, as QEMU's
//               own socket closing would
// Files QEMU should open (a `blockdev-add` of a local file, e.g. the capture's overlay) are opened
// by the agent and passed to QEMU as an fd set (`add-fd`, `/dev/fdset/N`), the way libvirt passes
// disks itself: QEMU under libvirt runs as its own user (libvirt-qemu on Debian) and could not
// open a file in the agent's private staging directory by name. The fd set is removed again when
// that node is deleted (`blockdev-del`), found by its `opaque` tag, so nothing leaks in QEMU even
// when another agent process deletes the node.
import { closeSync, constants, existsSync, openSync, unlinkSync } from "node:fs";
import { type Logger, ShadowvmError, silentLogger } from "@shadowvm/shared";
import { loadUsocket, type UServer, type USocket, usocketLoadError } from "../usocket.js";
import { LifecycleWatcher, type MonitorEvent, MonitorEventWatcher } from "./event-watch.js";
import { runVirsh, VirshError, VirshShell } from "./virsh.js";

export interface QmpBridgeOptions {
  uri: string;
  /** The domain's uuid (names can change while the bridge runs). */
  uuid: string;
  /** The domain's name, for messages. */
  name: string;
  /** Where the bridge listens; a stale socket there is replaced. */
  socketPath: string;
  commandTimeoutMs?: number;
  /** The event watchers stop this long after the last client left (they restart on demand). */
  idleWatchMs?: number;
  virshBinary?: string;
  logger?: Logger;
}

/** Tag of the fd sets the bridge creates for a block node (QMP `add-fd` opaque). */
export const FDSET_TAG = "shadowvm-node:";

interface QmpRequest {
  execute?: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

interface Connection {
  socket: USocket;
  shell: VirshShell;
  negotiated: boolean;
  /** Replies are written in request order, like QEMU's own monitor. */
  tail: Promise<void>;
  /** Descriptors received with the data not yet consumed by a command. */
  fds: number[];
  buffer: string;
  closed: boolean;
}

function qmpError(desc: string, errorClass = "GenericError"): Record<string, unknown> {
  return { error: { class: errorClass, desc } };
}

export class QmpBridge {
  readonly socketPath: string;
  readonly uuid: string;
  readonly name: string;
  private readonly options: QmpBridgeOptions;
  private readonly log: Logger;
  private server: UServer | undefined;
  private readonly connections = new Set<Connection>();
  private monitorWatcher: MonitorEventWatcher | undefined;
  private lifecycleWatcher: LifecycleWatcher | undefined;
  private watchersReady: Promise<void> | undefined;
  private greeting: Record<string, unknown> | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(options: QmpBridgeOptions) {
    this.options = options;
    this.socketPath = options.socketPath;
    this.uuid = options.uuid;
    this.name = options.name;
    this.log = options.logger ?? silentLogger();
  }

  /** Starts listening on `socketPath`. */
  static async start(options: QmpBridgeOptions): Promise<QmpBridge> {
    const bridge = new QmpBridge(options);
    await bridge.listen();
    return bridge;
  }

  get clientCount(): number {
    return this.connections.size;
  }

  private listen(): Promise<void> {
    const usocket = loadUsocket();
    if (!usocket)
      throw new ShadowvmError(
        "libvirt",
        "unsupported",
        "the QMP bridge to libvirt needs the usocket module (fd passing), which is not installed or failed to build",
        { cause: usocketLoadError() },
      );
    const { UServer } = usocket;
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
    const server = new UServer();
    this.server = server;
    return new Promise<void>((resolve, reject) => {
      server.once("error", (err) =>
        reject(
          new ShadowvmError(
            "libvirt",
            "bridge_failed",
            `cannot listen on ${this.socketPath} for domain ${this.name}: ${err?.message}`,
          ),
        ),
      );
      server.on("connection", (socket) => this.accept(socket));
      server.listen(this.socketPath, () => resolve());
    });
  }

  /** Watchers for QEMU events and libvirt lifecycle events, shared by all connections. */
  private ensureWatchers(): Promise<void> {
    if (this.watchersReady && this.monitorWatcher?.running && this.lifecycleWatcher?.running)
      return this.watchersReady;
    this.monitorWatcher?.close();
    this.lifecycleWatcher?.close();
    const watch = { uri: this.options.uri, domain: this.uuid, virshBinary: this.options.virshBinary };
    const monitor = new MonitorEventWatcher(watch);
    const lifecycle = new LifecycleWatcher(watch);
    this.monitorWatcher = monitor;
    this.lifecycleWatcher = lifecycle;
    monitor.on("event", (e) => this.broadcast(e));
    lifecycle.on("event", (e) => {
      if (e.event === "Stopped" || e.event === "Crashed") {
        this.log.info({ domain: this.name, event: e.event, detail: e.detail }, "libvirt domain stopped");
        for (const c of this.connections) this.drop(c);
      }
    });
    const ready = Promise.all([monitor.ready, lifecycle.ready]).then(() => undefined);
    ready.catch(() => {
      monitor.close();
      lifecycle.close();
    });
    this.watchersReady = ready;
    return ready;
  }

  private broadcast(e: MonitorEvent): void {
    const seconds = Math.floor(e.timestampMs / 1000);
    const message = {
      event: e.event,
      data: e.data,
      timestamp: { seconds, microseconds: Math.round((e.timestampMs - seconds * 1000) * 1000) },
    };
    for (const c of this.connections) if (c.negotiated) this.write(c, message);
  }

  private write(c: Connection, message: Record<string, unknown>): void {
    if (c.closed) return;
    c.socket.write(Buffer.from(`${JSON.stringify(message)}\r\n`));
  }

  private drop(c: Connection): void {
    if (c.closed) return;
    c.closed = true;
    this.connections.delete(c);
    if (this.connections.size === 0 && !this.closed) {
      // Idle: stop the two watcher processes after a grace period (periodic clients such as
      // telemetry reconnect well within it and find them still registered).
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => this.stopWatchers(), this.options.idleWatchMs ?? 120_000);
      this.idleTimer.unref();
    }
    for (const fd of c.fds.splice(0)) closeFd(fd);
    c.shell.close().catch(() => undefined);
    c.socket.destroy();
    // usocket's destroy() emits nothing; the client sees EOF.
  }

  private accept(socket: USocket): void {
    const c: Connection = {
      socket,
      shell: new VirshShell({
        uri: this.options.uri,
        commandTimeoutMs: this.options.commandTimeoutMs,
        virshBinary: this.options.virshBinary,
      }),
      negotiated: false,
      tail: Promise.resolve(),
      fds: [],
      buffer: "",
      closed: false,
    };
    if (this.closed) {
      socket.destroy();
      return;
    }
    clearTimeout(this.idleTimer);
    this.connections.add(c);
    socket.on("fds", (fds) => {
      c.fds.push(...fds);
    });
    socket.on("data", (chunk: Buffer | string) => {
      c.buffer += chunk.toString();
      for (let nl = c.buffer.indexOf("\n"); nl >= 0; nl = c.buffer.indexOf("\n")) {
        const line = c.buffer.slice(0, nl).trim();
        c.buffer = c.buffer.slice(nl + 1);
        if (line) this.onLine(c, line);
      }
    });
    socket.on("end", () => this.drop(c));
    socket.on("close", () => this.drop(c));
    socket.on("error", () => this.drop(c));
    this.sendGreeting(c).catch((err) => {
      this.log.warn({ domain: this.name, err: (err as Error).message }, "QMP bridge: no greeting");
      this.drop(c);
    });
  }

  private async sendGreeting(c: Connection): Promise<void> {
    await this.ensureWatchers();
    if (!this.greeting) {
      const version = (await this.forward(c, { execute: "query-version" }))["return"];
      if (!version) throw new ShadowvmError("libvirt", "failed", "query-version through libvirt failed");
      this.greeting = { QMP: { version, capabilities: [] } };
    }
    this.write(c, this.greeting);
  }

  private onLine(c: Connection, line: string): void {
    let request: QmpRequest;
    try {
      request = JSON.parse(line) as QmpRequest;
    } catch {
      this.write(c, qmpError("JSON parse error"));
      return;
    }
    const id = request.id;
    const fds = ["getfd", "add-fd"].includes(request.execute ?? "") ? c.fds.splice(0) : [];
    const reply = this.handle(c, request, fds).catch((err: unknown) => {
      const text = err instanceof Error ? err.message : String(err);
      if (err instanceof VirshError && ["not_running", "not_found", "unreachable"].includes(err.code)) {
        // QEMU is gone for us (domain stopped, libvirtd away): close like QEMU's socket would.
        setImmediate(() => this.drop(c));
      }
      return qmpError(`libvirt: ${text}`);
    });
    c.tail = c.tail.then(async () => {
      const message = await reply;
      if (id !== undefined) message["id"] = id;
      else delete message["id"];
      this.write(c, message);
    });
  }

  private async handle(c: Connection, request: QmpRequest, fds: number[]): Promise<Record<string, unknown>> {
    try {
      const command = request.execute;
      if (typeof command !== "string") return qmpError("Expected 'execute'");
      if (command === "qmp_capabilities") {
        if (c.negotiated) return qmpError("Capabilities negotiation is already complete", "CommandNotFound");
        c.negotiated = true;
        return { return: {} };
      }
      if (!c.negotiated)
        return qmpError("Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound");
      if (command === "blockdev-add") return await this.blockdevAdd(c, request);
      if (command === "blockdev-del") return await this.blockdevDel(c, request);
      if (fds.length > 0) return await this.forwardWithFds(c, request, fds);
      return await this.forward(c, request);
    } finally {
      for (const fd of fds) closeFd(fd);
    }
  }

  /** One command through libvirt's QMP passthrough; the reply object as QEMU sent it. */
  private async forward(c: Connection, request: QmpRequest): Promise<Record<string, unknown>> {
    const { stdout } = await c.shell.run(["qemu-monitor-command", this.uuid, passthroughJson(request)]);
    return parseReply(stdout);
  }

  private async forwardWithFds(
    c: Connection,
    request: QmpRequest,
    fds: number[],
  ): Promise<Record<string, unknown>> {
    // Everything sent before on this connection has reached QEMU first.
    await c.shell.run(["echo"]);
    const { stdout } = await runVirsh(
      [
        "qemu-monitor-command",
        this.uuid,
        "--pass-fds",
        fds.map((_, i) => String(3 + i)).join(","),
        passthroughJson(request),
      ],
      {
        uri: this.options.uri,
        fds,
        timeoutMs: this.options.commandTimeoutMs,
        virshBinary: this.options.virshBinary,
      },
    );
    return parseReply(stdout);
  }

  private async blockdevAdd(c: Connection, request: QmpRequest): Promise<Record<string, unknown>> {
    const args = request.arguments ?? {};
    const file = args["file"] as Record<string, unknown> | undefined;
    const nodeName = args["node-name"];
    const filename = file?.["filename"];
    if (
      !file ||
      typeof file !== "object" ||
      file["driver"] !== "file" ||
      typeof filename !== "string" ||
      filename.startsWith("/dev/fdset/") ||
      typeof nodeName !== "string"
    )
      return this.forward(c, request);
    const readOnly = args["read-only"] === true || file["read-only"] === true;
    let fd: number;
    try {
      fd = openSync(filename, readOnly ? constants.O_RDONLY : constants.O_RDWR);
    } catch (err) {
      return qmpError(`Could not open '${filename}': ${(err as Error).message}`);
    }
    let added: Record<string, unknown>;
    try {
      added = await this.forwardWithFds(
        c,
        { execute: "add-fd", arguments: { opaque: `${FDSET_TAG}${nodeName}` } },
        [fd],
      );
    } finally {
      closeFd(fd);
    }
    const fdset = (added["return"] as { "fdset-id"?: number } | undefined)?.["fdset-id"];
    if (fdset === undefined) return added;
    const rewritten = {
      ...request,
      arguments: { ...args, file: { ...file, filename: `/dev/fdset/${fdset}` } },
    };
    const reply = await this.forward(c, rewritten);
    if (reply["error"]) await this.removeFdsets(c, nodeName).catch(() => undefined);
    return reply;
  }

  private async blockdevDel(c: Connection, request: QmpRequest): Promise<Record<string, unknown>> {
    const reply = await this.forward(c, request);
    const nodeName = request.arguments?.["node-name"];
    if (!reply["error"] && typeof nodeName === "string") await this.removeFdsets(c, nodeName);
    return reply;
  }

  /** Removes the fd sets the bridge created for a node (found by their opaque tag). */
  private async removeFdsets(c: Connection, nodeName: string): Promise<void> {
    const sets = (await this.forward(c, { execute: "query-fdsets" }))["return"] as
      | { "fdset-id": number; fds: { fd: number; opaque?: string }[] }[]
      | undefined;
    for (const set of sets ?? []) {
      if (set.fds.some((f) => f.opaque === `${FDSET_TAG}${nodeName}`)) {
        await this.forward(c, { execute: "remove-fd", arguments: { "fdset-id": set["fdset-id"] } });
      }
    }
  }

  private stopWatchers(): void {
    this.monitorWatcher?.close();
    this.lifecycleWatcher?.close();
    this.monitorWatcher = undefined;
    this.lifecycleWatcher = undefined;
    this.watchersReady = undefined;
  }

  /** True while the event watchers run (for tests and diagnostics). */
  get watching(): boolean {
    return !!this.monitorWatcher?.running || !!this.lifecycleWatcher?.running;
  }

  /** Stops listening, closes every client connection and the watchers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idleTimer);
    for (const c of [...this.connections]) this.drop(c);
    this.stopWatchers();
    this.server?.close();
    this.server = undefined;
    try {
      unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
  }
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/** The request as libvirt's passthrough wants it: QMP JSON without our id (libvirt sets its own). */
function passthroughJson(request: QmpRequest): string {
  return JSON.stringify({
    execute: request.execute,
    ...(request.arguments !== undefined ? { arguments: request.arguments } : {}),
  });
}

function parseReply(stdout: string): Record<string, unknown> {
  const line = stdout
    .split("\n")
    .map((l) => l.trim())
    .find((l) => l.startsWith("{"));
  if (!line) return qmpError(`libvirt returned no QMP reply (${stdout.slice(0, 120) || "empty output"})`);
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return qmpError(`libvirt returned a reply that is not JSON: ${line.slice(0, 120)}`);
  }
}
