// The collector's and the agent's configuration for the demo loop: everything in one work dir, on
// loopback, with intervals and a risk horizon scaled to a demo that lasts minutes, not days. Written
// as JSON (valid YAML) and validated by the services themselves when they start.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

/** Labels both demo VMs share: fleet correlation gives the unshadowed VM the shadowed one's evidence. */
export const DEMO_FLEET_LABELS = { image: "demo-guest", kernel: "debian-6.1", app_stack: "busybox-httpd" };

export interface CollectorConfigInput {
  dir: string;
  ingestPort: number;
  metricsPort: number;
  apiPort: number;
  alertmanagerUrl: string;
  reportsDir: string;
  horizonH: number;
}

export function demoCollectorConfig(o: CollectorConfigInput): Record<string, unknown> {
  return {
    data_dir: join(o.dir, "collector"),
    log_level: "info",
    ingest: { host: "127.0.0.1", port: o.ingestPort, heartbeat_interval_ms: 2000 },
    // Plain ws:// on loopback: the token and the agent secret never leave the machine.
    tls: { required: false },
    metrics: { host: "127.0.0.1", port: o.metricsPort },
    api: { host: "127.0.0.1", port: o.apiPort },
    risk: {
      horizon_h: o.horizonH,
      telemetry_window_h: 1,
      interval_s: 30,
      check_interval_s: 2,
      telemetry_min_interval_s: 15,
    },
    alerts: {
      alertmanager_urls: [o.alertmanagerUrl],
      resend_interval_s: 30,
      api_base_url: `http://127.0.0.1:${o.apiPort}`,
    },
    reports: { schedule: "", dir: o.reportsDir },
  };
}

export interface AgentConfigInput {
  dir: string;
  collectorUrl: string;
  tokenFile: string;
  metricsPort: number;
  qmpSockets: string[];
  /** VM names the campaigns shadow. */
  campaignVms: string[];
  firstDelayS: number;
  budget: number;
  parallel: number;
  durationS: number;
  telemetryIntervalS: number;
}

export function demoAgentConfig(o: AgentConfigInput): Record<string, unknown> {
  return {
    agent_id: "demo-host",
    data_dir: join(o.dir, "agent"),
    log_level: "info",
    hypervisor: { driver: "qemu", qmp_sockets: o.qmpSockets },
    collector: {
      url: o.collectorUrl,
      enrollment_token_file: o.tokenFile,
      allow_insecure: true,
      reconnect_max_ms: 5000,
    },
    telemetry: {
      interval_s: o.telemetryIntervalS,
      inventory_interval_s: 60,
      // A short window: the operating point follows the leak within seconds.
      operating_point_window_s: 30,
      labels: DEMO_FLEET_LABELS,
    },
    metrics: { host: "127.0.0.1", port: o.metricsPort },
    campaigns: {
      enabled: true,
      first_delay_s: o.firstDelayS,
      // One campaign per VM in a demo.
      interval_s: 24 * 3600,
      vms: o.campaignVms,
      budget: o.budget,
      parallel: o.parallel,
      strategy: "adaptive",
      duration_s: o.durationS,
      control: true,
      // Loads only, and no network impairment: with a budget of a handful of runs, a delay or loss
      // in most profiles would make almost every shadow fail on probe latency alone, and those runs
      // say nothing about the memory boundary. CPU contention up to 1.5x.
      faults: [],
      bounds: { cpu_load: [0, 1.5], net_latency_ms: [0, 0], net_loss_pct: [0, 0] },
    },
  };
}

export function writeJsonConfig(file: string, config: Record<string, unknown>): string {
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  return file;
}
