// libvirt's own client, virsh, as the driver's way into libvirtd. Two forms:
//
// - `VirshShell`: one long-lived interactive `virsh -c URI` process that commands are written to,
//   one per line. A command costs a libvirt RPC round trip (a few ms) instead of a process start
//   and a new libvirtd connection (30-100 ms), which matters for inventories of many domains and
//   for the capture's pause window. Each command is followed by `echo MARKER` and
//   `echo --err MARKER`, so its stdout and stderr are cut out of the two streams exactly, even
//   when several commands are in flight (virsh runs them in order).
// - `runVirsh`: one process per command, for what the shell cannot do: handing file descriptors
//   to QEMU (`qemu-monitor-command --pass-fds`, the descriptors must be open in virsh itself).
//
// libvirt reports failures as `error: ...` lines on stderr; both forms turn them into a
// VirshError with the libvirt text, which callers translate into one line for the operator.
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { ShadowvmError } from "@shadowvm/shared";

/**
 * Closes every descriptor from $1 up, then execs the rest of the arguments. Node opens its own
 * descriptors close-on-exec, but usocket (fd passing: the QMP bridge's sockets, QmpClient.passFd,
 * descriptors received with SCM_RIGHTS) does not, and a virsh that inherited a client's socket
 * would keep that connection open after the client closed it.
 */
const CLOSE_INHERITED_FDS =
  'k=$1; shift; cd /proc/$$/fd || exit 111; for f in *; do if [ "$f" -ge "$k" ]; then eval "exec $f>&-"; fi; done; cd "$OLDPWD" || exit 111; exec "$@"';

/** Spawns virsh with exactly the descriptors in `stdio` (0, 1, 2, and any passed on purpose). */
export function spawnVirsh(
  binary: string,
  args: string[],
  options: { stdio: StdioOptions & unknown[]; env: NodeJS.ProcessEnv },
): ChildProcess {
  return spawn("bash", ["-c", CLOSE_INHERITED_FDS, "bash", String(options.stdio.length), binary, ...args], {
    stdio: options.stdio,
    env: options.env,
  });
}

export class VirshError extends ShadowvmError {
  /** libvirt's own message(s), without the `error: ` prefixes, joined by "; ". */
  readonly libvirtMessage: string;
  constructor(code: string, message: string, libvirtMessage: string, options?: { cause?: unknown }) {
    super("libvirt", code, message, options);
    this.name = "VirshError";
    this.libvirtMessage = libvirtMessage;
  }
}

/** Classifies a libvirt error text (virsh's stderr) into a stable code. */
export function classifyLibvirtError(text: string): string {
  if (
    /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|End of file while reading|Connection reset/i.test(
      text,
    )
  )
    return "unreachable";
  if (/failed to get domain|Domain not found|no domain with matching/i.test(text)) return "not_found";
  if (/domain is not running|not running|Domain has been undefined/i.test(text)) return "not_running";
  if (/timed out|timeout/i.test(text)) return "timeout";
  return "failed";
}

/** libvirt's stderr lines, `error: ` prefixes removed, as one line. */
export function libvirtErrorText(stderr: string): string {
  return stderr
    .split("\n")
    .map((l) => l.trim().replace(/^error:\s*/, ""))
    .filter((l) => l.length > 0)
    .join("; ");
}

const PLAIN_ARG = /^[\w@%+=:,./-]+$/;

/** Quotes one argument for virsh's own command parser (double quotes, backslash escapes). */
export function quoteVirshArg(arg: string): string {
  if (/[\r\n]/.test(arg))
    throw new ShadowvmError("libvirt", "invalid", "a virsh argument cannot contain a line break");
  if (arg.length > 0 && PLAIN_ARG.test(arg)) return arg;
  return `"${arg.replace(/["\\]/g, "\\$&")}"`;
}

export interface VirshResult {
  stdout: string;
  stderr: string;
}

interface Pending {
  /** Printed by `echo` right before and after the command; never appears literally in the input. */
  begin: string;
  end: string;
  outStarted: boolean;
  outText: string | undefined;
  errText: string | undefined;
  what: string;
  timer: NodeJS.Timeout | undefined;
  resolve(r: VirshResult): void;
  reject(e: Error): void;
}

export interface VirshShellOptions {
  uri: string;
  /** Default deadline of each command. */
  commandTimeoutMs?: number;
  virshBinary?: string;
}

/** virsh's prompt; an interactive virsh echoes each input line after it. */
const PROMPT = /^virsh [#>] /;

/** A persistent interactive virsh. Commands run in order; a dead shell is restarted on demand. */
export class VirshShell {
  readonly uri: string;
  private readonly commandTimeoutMs: number;
  private readonly binary: string;
  private child: ChildProcess | undefined;
  private queue: Pending[] = [];
  private outBuf = "";
  private errBuf = "";
  private nextMarker = 1;
  private closed = false;

  constructor(options: VirshShellOptions) {
    this.uri = options.uri;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    this.binary = options.virshBinary ?? "virsh";
  }

  private ensureChild(): ChildProcess {
    if (this.child) return this.child;
    const child = spawnVirsh(this.binary, ["-q", "-c", this.uri], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, LC_ALL: "C", LANG: "C" },
    });
    this.child = child;
    this.outBuf = "";
    this.errBuf = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      this.outBuf += d;
      this.drain();
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      this.errBuf += d;
      this.drain();
    });
    child.stdin!.on("error", () => undefined);
    child.once("error", (err) => this.onExit(child, `cannot run ${this.binary}: ${err.message}`));
    child.once("close", (code, signal) =>
      this.onExit(child, `virsh exited (${signal ? `signal ${signal}` : `code ${code}`})`),
    );
    return child;
  }

  private onExit(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    // Whatever virsh said last (typically "failed to connect to the hypervisor") is the reason.
    const said = libvirtErrorText(this.errBuf.replace(/^error: @@svm-E\d+@@$/gm, ""));
    const pending = this.queue;
    this.queue = [];
    for (const p of pending) {
      if (p.timer) clearTimeout(p.timer);
      const text = libvirtErrorText([p.errText ?? "", said].join("\n")) || why;
      const code = classifyLibvirtError(text);
      p.reject(new VirshError(code === "failed" ? "unreachable" : code, text, text));
    }
  }

  private drain(): void {
    for (const p of this.queue) {
      if (p.outText !== undefined) continue;
      if (!p.outStarted) {
        const at = this.outBuf.indexOf(p.begin);
        if (at < 0) break;
        this.outBuf = this.outBuf.slice(at + p.begin.length);
        p.outStarted = true;
      }
      const at = this.outBuf.indexOf(p.end);
      if (at < 0) break;
      p.outText = this.outBuf.slice(0, at);
      this.outBuf = this.outBuf.slice(at + p.end.length);
    }
    for (const p of this.queue) {
      if (p.errText !== undefined) continue;
      const at = this.errBuf.indexOf(p.end);
      if (at < 0) break;
      p.errText = this.errBuf.slice(0, at).replace(/error: $/, "");
      this.errBuf = this.errBuf.slice(at + p.end.length).replace(/^\n/, "");
    }
    while (this.queue[0]?.outText !== undefined && this.queue[0].errText !== undefined) {
      const p = this.queue.shift()!;
      if (p.timer) clearTimeout(p.timer);
      // Between the markers: the echoed input lines (after a prompt), the output, blank lines.
      const stdout = p
        .outText!.split("\n")
        .filter((l) => !PROMPT.test(l))
        .join("\n")
        .replace(/^\n+|\n+$/g, "");
      const stderr = p.errText!.trim();
      if (/^error:/m.test(stderr)) {
        const text = libvirtErrorText(stderr);
        p.reject(new VirshError(classifyLibvirtError(text), text, text));
      } else p.resolve({ stdout, stderr });
    }
  }

  /** Runs one virsh command (argv without `virsh`); rejects with VirshError on a libvirt error. */
  run(args: string[], options: { timeoutMs?: number } = {}): Promise<VirshResult> {
    if (this.closed) {
      return Promise.reject(
        new VirshError("closed", "the virsh session is closed", "the virsh session is closed"),
      );
    }
    let line: string;
    try {
      line = args.map(quoteVirshArg).join(" ");
    } catch (err) {
      return Promise.reject(err);
    }
    const k = this.nextMarker++;
    const child = this.ensureChild();
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<VirshResult>((resolve, reject) => {
      const pending: Pending = {
        begin: `@@svm-B${k}@@`,
        end: `@@svm-E${k}@@`,
        outStarted: false,
        outText: undefined,
        errText: undefined,
        what: args[0] ?? "",
        timer: undefined,
        resolve,
        reject,
      };
      pending.timer = setTimeout(() => {
        // The shell is stuck behind this command: kill it, so later commands get a fresh one.
        const text = `virsh ${pending.what} got no answer from libvirtd within ${timeoutMs} ms`;
        this.queue = this.queue.filter((p) => p !== pending);
        reject(new VirshError("timeout", text, text));
        this.restart();
      }, timeoutMs);
      this.queue.push(pending);
      // The quotes split each marker in the input, so only echo's output contains it whole.
      child.stdin!.write(`echo "@@svm-B"${k}@@\n${line}\necho "@@svm-E"${k}@@\necho --err "@@svm-E"${k}@@\n`);
    });
  }

  /** Kills the current virsh (pending commands fail); the next command starts a new one. */
  private restart(): void {
    const child = this.child;
    if (!child) return;
    this.onExit(child, "virsh session restarted after a timeout");
    child.kill("SIGKILL");
  }

  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((r) => child.once("close", () => r()));
    child.stdin!.end("quit\n");
    const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
    await exited;
    clearTimeout(timer);
  }
}

export interface RunVirshOptions {
  uri: string;
  /** File descriptors made available to virsh as fds 3, 4, ... (for `--pass-fds`). */
  fds?: number[];
  timeoutMs?: number;
  virshBinary?: string;
}

/** One virsh process for one command. Rejects with VirshError on a libvirt error. */
export function runVirsh(args: string[], options: RunVirshOptions): Promise<VirshResult> {
  const fds = options.fds ?? [];
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawnVirsh(options.virshBinary ?? "virsh", ["-q", "-c", options.uri, ...args], {
      stdio: ["ignore", "pipe", "pipe", ...fds],
      env: { ...process.env, LC_ALL: "C", LANG: "C" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new VirshError("failed", `cannot run virsh: ${err.message}`, err.message, { cause: err }));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) {
        resolve({ stdout: stdout.replace(/\n+$/, ""), stderr });
        return;
      }
      const text =
        libvirtErrorText(stderr) ||
        (signal ? `virsh ${args[0]} killed after ${timeoutMs} ms` : `virsh ${args[0]} exited with ${code}`);
      reject(new VirshError(signal ? "timeout" : classifyLibvirtError(text), text, text));
    });
  });
}
