// The few calls the demo makes to the collector's HTTP query API (/api/v1, docs/api.md) and its
// operations port (/metrics), with a bearer API token. The shapes are the fields the demo reads of
// the API's JSON (the agent does not depend on the collector package).

export interface ApiVm {
  agent_id: string;
  uuid: string;
  name: string;
  state: string;
  vcpus: number;
  memory_mb: number;
  labels: Record<string, string> | null;
  risk: {
    score: number | null;
    confidence: number | null;
    level: string | null;
    assessed_at_ms: number;
  } | null;
}

export interface ApiCapture {
  id: string;
  vm_name: string;
  vm_uuid: string;
  started_at_ms: number;
  finished_at_ms: number | null;
  pause_ms: number | null;
  memory_bytes: number | null;
  stored_bytes: number | null;
  status: string;
  error: string | null;
}

export interface ApiShadowRun {
  id: string;
  campaign_id: string;
  capture_id: string;
  vm_name: string;
  vm_uuid: string;
  profile: Record<string, unknown> | null;
  control: boolean;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  outcome: string;
  failure_count: number;
  notes: unknown;
}

export interface ApiFailure {
  failure_id: string;
  shadow_run_id: string;
  title: string;
  class: string;
  fingerprint: string;
  source: string;
  offset_ms: number | null;
  received_at_ms: number;
  occurred_at_ms: number;
  vm_name: string | null;
  vm_uuid: string | null;
}

export interface ApiRiskSignature {
  fingerprint: string;
  title: string;
  class: string;
  status: string;
  probability: number | null;
  confidence: number;
  confidence_level: string;
  time_to_failure_h: number | null;
}

export interface ApiRiskAssessment {
  agent_id: string;
  vm_uuid: string;
  assessed_at_ms: number;
  score: number | null;
  confidence: number | null;
  level: string | null;
  signatures: ApiRiskSignature[];
  boundary: {
    fingerprint: string;
    dimension: string;
    boundary: number;
    boundary_uncertainty: number;
    level: number | null;
    forecast: number | null;
  }[];
  mitigations: unknown[];
  explanation: string[];
}

interface Page<T> {
  items: T[];
  page: { limit: number; offset: number; next: string | null };
}

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
    return (await this.get<Page<T>>(`${path}${sep}limit=1000`)).items;
  }

  vms(): Promise<ApiVm[]> {
    return this.list<ApiVm>("/api/v1/vms?sort=name");
  }

  captures(): Promise<ApiCapture[]> {
    return this.list<ApiCapture>("/api/v1/captures");
  }

  shadowRuns(): Promise<ApiShadowRun[]> {
    return this.list<ApiShadowRun>("/api/v1/shadow-runs");
  }

  failures(): Promise<ApiFailure[]> {
    return this.list<ApiFailure>("/api/v1/failures");
  }

  /** The VM's newest assessment, or undefined. */
  async risk(uuid: string): Promise<ApiRiskAssessment | undefined> {
    const page = await this.get<Page<ApiRiskAssessment>>(
      `/api/v1/vms/${encodeURIComponent(uuid)}/risk?limit=1`,
    );
    return page.items[0];
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
