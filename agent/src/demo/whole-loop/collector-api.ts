// The few calls the demo makes to the collector's HTTP query API (/api/v1, docs/api.md) and its
// operations port (/metrics), with a bearer API token. The API's JSON shapes are shared's
// (shared/src/api-types.ts), the same types the collector builds its answers with.
import type {
  Capture,
  Failure,
  ListResponse,
  RiskAssessment,
  RiskHistory,
  ShadowRun,
  Vm,
} from "@shadowvm/shared";

export class CollectorApi {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    readonly metricsUrl?: string,
  ) {}

  async get<T>(path: string): Promise<T> {
    const res = await fetch(`${this.baseUrl}${path}`, {
      headers: { authorization: `Bearer ${this.token}` },
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${(await res.text()).slice(0, 200)}`);
    return (await res.json()) as T;
  }

  async list<T>(path: string): Promise<T[]> {
    const sep = path.includes("?") ? "&" : "?";
    return (await this.get<ListResponse<T>>(`${path}${sep}limit=1000`)).items;
  }

  vms(): Promise<Vm[]> {
    return this.list<Vm>("/api/v1/vms?sort=name");
  }

  captures(): Promise<Capture[]> {
    return this.list<Capture>("/api/v1/captures");
  }

  shadowRuns(): Promise<ShadowRun[]> {
    return this.list<ShadowRun>("/api/v1/shadow-runs");
  }

  failures(): Promise<Failure[]> {
    return this.list<Failure>("/api/v1/failures");
  }

  /** The VM's newest assessment, or undefined. */
  async risk(uuid: string): Promise<RiskAssessment | undefined> {
    const history = await this.get<RiskHistory>(`/api/v1/vms/${encodeURIComponent(uuid)}/risk?limit=1`);
    return history.items[0];
  }

  /** A counter or gauge from the operations port's /metrics (summed over its label sets). */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    if (!this.metricsUrl) return 0;
    const res = await fetch(`${this.metricsUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let sum = 0;
    for (const line of text.split("\n")) {
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const l = m[2] ?? "";
      if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) sum += Number(m[3]);
    }
    return sum;
  }
}
