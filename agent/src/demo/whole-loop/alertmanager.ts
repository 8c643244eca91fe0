// A real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port with a temporary
// config (one receiver that drops everything: the alerts stay queryable through its API) and its
// own storage dir, for the demo's whole loop and the alert tests.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, ShadowvmError, waitFor } from "@shadowvm/shared";
import { ServiceProcess } from "./service-process.js";

export const ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager";

/** An alert as Alertmanager's v2 API returns it (GET /api/v2/alerts). */
export interface AlertmanagerAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  updatedAt?: string;
  generatorURL?: string;
  status: { state: string; silencedBy?: string[]; inhibitedBy?: string[] };
}

export interface StartAlertmanagerOptions {
  /** Config, storage and log go here (created if missing). */
  dir: string;
  binary?: string;
  /** Default: a free port. */
  port?: number;
  readyTimeoutMs?: number;
}

export interface Alertmanager {
  readonly url: string;
  readonly port: number;
  readonly logFile: string;
  readonly process: ServiceProcess;
  /** GET /api/v2/alerts, optionally with a matcher such as `alertname="ShadowvmFailureRisk"`. */
  alerts(filter?: string): Promise<AlertmanagerAlert[]>;
  /** SIGTERM, SIGKILL after the deadline. */
  stop(timeoutMs?: number): Promise<void>;
}

export async function startAlertmanager(options: StartAlertmanagerOptions): Promise<Alertmanager> {
  mkdirSync(options.dir, { recursive: true });
  const port = options.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  const configFile = join(options.dir, "alertmanager.yml");
  writeFileSync(
    configFile,
    ["route:", "  receiver: blackhole", "  group_wait: 1s", "receivers:", "  - name: blackhole", ""].join(
      "\n",
    ),
  );
  const logFile = join(options.dir, "alertmanager.log");
  const proc = ServiceProcess.start({
    name: "alertmanager",
    command: options.binary ?? ALERTMANAGER_BIN,
    args: [
      `--config.file=${configFile}`,
      `--storage.path=${join(options.dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--cluster.listen-address=",
      "--log.level=warn",
    ],
    logFile,
  });
  try {
    const state = await waitFor(
      async () => {
        if (!proc.running) return "exited";
        const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) }).catch(
          () => undefined,
        );
        return res?.ok ? "ready" : undefined;
      },
      { timeoutMs: options.readyTimeoutMs ?? 60_000, intervalMs: 100, what: `Alertmanager ready on ${url}` },
    );
    if (state === "exited") proc.assertRunning();
  } catch (err) {
    await proc.stop(2000);
    throw new ShadowvmError("demo", "alertmanager-failed", `${(err as Error).message}; ${proc.tail()}`);
  }
  return {
    url,
    port,
    logFile,
    process: proc,
    async alerts(filter) {
      const q = filter ? `?filter=${encodeURIComponent(filter)}` : "";
      const res = await fetch(`${url}/api/v2/alerts${q}`, { signal: AbortSignal.timeout(5000) });
      if (!res.ok) throw new Error(`GET ${url}/api/v2/alerts: ${res.status}`);
      return (await res.json()) as AlertmanagerAlert[];
    },
    async stop(timeoutMs = 10_000) {
      await proc.stop(timeoutMs);
    },
  };
}
