// Events of one domain, as libvirt forwards them: QEMU's own QMP events (`virsh qemu-monitor-event`,
// with QEMU's timestamps, so pause measurements stay QEMU's) and libvirt lifecycle events
// (`virsh event --event lifecycle`: the domain stopped, crashed, ...).
//
// A watcher is useful only once libvirtd has registered it: an event emitted before that is lost.
// virsh prints nothing when registration completes, so the watcher runs with libvirt's client
// logging of RPC messages at level info (LIBVIRT_LOG_FILTERS=2:rpc.netclient) on stderr and is
// ready when the successful reply to its register call arrives:
//   RPC_CLIENT_MSG_RX: ... prog=536903815 vers=1 proc=4 type=1 status=0   (QEMU monitor events)
//   RPC_CLIENT_MSG_RX: ... prog=536903814 vers=1 proc=316 type=1 status=0 (domain events)
// (program and procedure numbers from libvirt's qemu_protocol.x and remote_protocol.x: QEMU_PROGRAM
// 0x20008087, QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_REGISTER 4; REMOTE_PROGRAM 0x20008086,
// REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY 316). libvirtd has added the callback
// before it sends that reply, so every later event reaches the watcher.
import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { classifyLibvirtError, libvirtErrorText, spawnVirsh, VirshError } from "./virsh.js";

const QEMU_PROGRAM = 0x20008087;
const REMOTE_PROGRAM = 0x20008086;
const PROC_QEMU_MONITOR_EVENT_REGISTER = 4;
const PROC_DOMAIN_EVENT_CALLBACK_REGISTER_ANY = 316;

export interface MonitorEvent {
  event: string;
  data: Record<string, unknown>;
  /** QEMU's timestamp, ms since the epoch (microsecond precision). */
  timestampMs: number;
}

export interface LifecycleEvent {
  /** libvirt's words: Started, Suspended, Resumed, Stopped, Shutdown, Crashed, ... */
  event: string;
  detail: string;
}

/** Parses one line of `virsh qemu-monitor-event` output. */
export function parseMonitorEventLine(line: string): MonitorEvent | undefined {
  const m = /^(?:\S+ \S+: )?event (\S+) at (\d+)\.(\d{1,6}) for domain '.*': (.*)$/.exec(line.trim());
  if (!m) return undefined;
  let data: Record<string, unknown> = {};
  const details = m[4]!;
  if (details !== "<null>") {
    try {
      data = JSON.parse(details) as Record<string, unknown>;
    } catch {
      data = { raw: details };
    }
  }
  return {
    event: m[1]!,
    data,
    timestampMs: Number(m[2]) * 1000 + Number(m[3]!.padEnd(6, "0")) / 1000,
  };
}

/** Parses one line of `virsh event --event lifecycle` output. */
export function parseLifecycleLine(line: string): LifecycleEvent | undefined {
  const m = /^(?:\S+ \S+: )?event 'lifecycle' for domain '.*': (\S+)\s*(.*)$/.exec(line.trim());
  return m ? { event: m[1]!, detail: m[2]!.trim() } : undefined;
}

export interface WatchOptions {
  uri: string;
  /** Domain name or uuid (uuid preferred: names can change). */
  domain: string;
  /** Deadline for libvirtd to register the watcher. */
  readyTimeoutMs?: number;
  virshBinary?: string;
}

abstract class VirshWatcher<E> extends EventEmitter<{ event: [E]; exit: [Error | undefined] }> {
  private child: ChildProcess | undefined;
  private stopped = false;
  readonly ready: Promise<void>;

  protected constructor(options: WatchOptions, args: string[], program: number, proc: number, what: string) {
    super();
    const child = spawnVirsh(options.virshBinary ?? "virsh", ["-c", options.uri, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        LC_ALL: "C",
        LANG: "C",
        LIBVIRT_LOG_FILTERS: "2:rpc.netclient 4:*",
        LIBVIRT_LOG_OUTPUTS: "2:stderr",
      },
    });
    this.child = child;
    let out = "";
    let err = "";
    let errors = "";
    const registered = new RegExp(
      `RPC_CLIENT_MSG_RX: .*prog=${program} vers=\\d+ proc=${proc} type=1 status=(\\d+)`,
    );
    this.ready = new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (e?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) {
          reject(e);
          this.close();
        } else resolve();
      };
      const timeoutMs = options.readyTimeoutMs ?? 10_000;
      const timer = setTimeout(
        () =>
          settle(
            new VirshError(
              "timeout",
              `libvirtd did not register the ${what} watcher for domain ${options.domain} within ${timeoutMs} ms`,
              "",
            ),
          ),
        timeoutMs,
      );
      child.stderr!.setEncoding("utf8").on("data", (d: string) => {
        err += d;
        for (let nl = err.indexOf("\n"); nl >= 0; nl = err.indexOf("\n")) {
          const line = err.slice(0, nl);
          err = err.slice(nl + 1);
          const m = registered.exec(line);
          if (m && m[1] === "0") settle();
          const e = /^(?:\S+ \S+: \d+: error : \S+ : |error: )(.*)$/.exec(line);
          if (e) errors += `${e[1]}\n`;
        }
      });
      child.once("close", (code, signal) => {
        this.child = undefined;
        const text = libvirtErrorText(errors) || `virsh exited (${signal ?? code})`;
        const error = new VirshError(classifyLibvirtError(text), text, text);
        settle(error);
        if (!this.stopped) this.emit("exit", error);
        else this.emit("exit", undefined);
      });
      child.once("error", (e) =>
        settle(new VirshError("failed", `cannot run virsh: ${e.message}`, e.message)),
      );
    });
    this.ready.catch(() => undefined);
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      for (let nl = out.indexOf("\n"); nl >= 0; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        const event = this.parse(line);
        if (event) this.emit("event", event);
      }
    });
  }

  protected abstract parse(line: string): E | undefined;

  get running(): boolean {
    return this.child !== undefined;
  }

  /** Stops watching (the virsh process is killed). */
  close(): void {
    this.stopped = true;
    this.child?.kill("SIGTERM");
  }
}

/** QEMU monitor events of one domain, with QEMU's timestamps. Await `ready` before relying on it. */
export class MonitorEventWatcher extends VirshWatcher<MonitorEvent> {
  constructor(options: WatchOptions) {
    super(
      options,
      ["qemu-monitor-event", "--domain", options.domain, "--loop"],
      QEMU_PROGRAM,
      PROC_QEMU_MONITOR_EVENT_REGISTER,
      "QEMU monitor event",
    );
  }
  protected parse(line: string): MonitorEvent | undefined {
    return parseMonitorEventLine(line);
  }
}

/** libvirt lifecycle events of one domain. */
export class LifecycleWatcher extends VirshWatcher<LifecycleEvent> {
  constructor(options: WatchOptions) {
    super(
      options,
      ["event", "--domain", options.domain, "--event", "lifecycle", "--loop"],
      REMOTE_PROGRAM,
      PROC_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
      "lifecycle event",
    );
  }
  protected parse(line: string): LifecycleEvent | undefined {
    return parseLifecycleLine(line);
  }
}
