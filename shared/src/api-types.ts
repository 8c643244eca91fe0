// The JSON the collector's HTTP query API (/api/v1, docs/api.md) answers with, as TypeScript types:
// the collector's queries build these and whoever reads the API (the whole-loop demo) reads them.
// The OpenAPI document is generated from the collector's zod schemas (collector/src/api/api-app.ts),
// not from these types; the two describe the same fields.

/** Which part of a list: at most `limit` items from `offset` on (the list routes' query parameters). */
export interface Page {
  limit: number;
  offset: number;
}

/** The `page` object of a list response ("Page" in the OpenAPI document). */
export interface PageLinks extends Page {
  /** URL of the next page; null on the last page. */
  next: string | null;
}

/** What every list route answers: one page of items and the link to the next. */
export interface ListResponse<T> {
  items: T[];
  page: PageLinks;
}

/** A list query's page of items, before the API turns `more` into the `page` links. */
export interface Listed<T> {
  items: T[];
  /** True when rows exist beyond this page. */
  more: boolean;
}

export interface Host {
  agent_id: string;
  hostname: string;
  cpus: number;
  memory_bytes: number;
  kernel: string;
  hypervisor_driver: string;
  hypervisor_version: string;
  capabilities: string[];
  vm_uuids: string[];
  vm_count: number;
  updated_at_ms: number;
}

export interface VmRisk {
  score: number | null;
  confidence: number | null;
  level: string | null;
  assessed_at_ms: number;
}

export interface Vm {
  agent_id: string;
  uuid: string;
  name: string;
  hostname: string | null;
  state: string;
  vcpus: number;
  memory_mb: number;
  machine_type: string;
  labels: Record<string, string>;
  updated_at_ms: number;
  risk: VmRisk | null;
}

export interface Capture {
  agent_id: string;
  id: string;
  vm_name: string;
  vm_uuid: string;
  started_at_ms: number;
  finished_at_ms: number;
  pause_ms: number;
  memory_bytes: number;
  disk_bytes: number;
  stored_bytes: number;
  new_bytes: number;
  config_digest: string;
  status: string;
  error: string;
}

export interface ShadowRun {
  agent_id: string;
  id: string;
  campaign_id: string;
  capture_id: string;
  vm_name: string;
  vm_uuid: string;
  profile: unknown;
  strategy: string;
  control: boolean;
  started_at_ms: number;
  finished_at_ms: number;
  outcome: string;
  failure_count: number;
  notes: unknown;
}

export interface Failure {
  failure_id: string;
  agent_id: string;
  shadow_run_id: string;
  title: string;
  class: string;
  frame: string;
  fingerprint: string;
  corrupted: boolean;
  evidence: string[];
  offset_ms: number;
  source: string;
  received_at_ms: number;
  /** Where: the production VM whose shadow failed, and the profile it ran under (null if the run is unknown). */
  vm_uuid: string | null;
  vm_name: string | null;
  profile: unknown;
  /** When: the run's start + offset_ms, or received_at_ms when the run is unknown. */
  occurred_at_ms: number;
}

export interface Signature {
  fingerprint: string;
  title: string;
  class: string;
  count: number;
  first_seen_ms: number;
  last_seen_ms: number;
  /** Where: the hosts (agents) that reported it and the production VMs whose shadows hit it. */
  agents: string[];
  vms: string[];
  profiles: unknown[];
}

export interface RiskSignature {
  fingerprint: string;
  title: string;
  class: string;
  status: string;
  probability: number | null;
  confidence: number;
  confidence_level: string;
  time_to_failure_h: number | null;
}

export interface RiskBoundary {
  fingerprint: string;
  dimension: string;
  boundary: number;
  boundary_uncertainty: number;
  level: number | null;
  /** The operating point forecast at the end of the horizon (hours ahead). */
  forecast: number | null;
  horizon_h: number;
}

/** A VM's current risk without the details (what lists need). */
export interface RiskScore {
  agent_id: string;
  vm_uuid: string;
  assessed_at_ms: number;
  /** The highest failure probability over the VM's signatures (null: none has one). */
  score: number | null;
  /** Confidence of that most probable signature (0..1) and its level. */
  confidence: number | null;
  level: string | null;
}

/** A VM's risk in one round: its score and the signatures, boundaries and mitigations behind it. */
export interface RiskAssessment extends RiskScore {
  signatures: RiskSignature[];
  boundary: RiskBoundary[];
  mitigations: unknown[];
  explanation: string[];
}

/** A VM's risk history, newest first (GET /vms/{uuid}/risk). */
export interface RiskHistory {
  vm_uuid: string;
  agent_id: string;
  items: RiskAssessment[];
}

export interface Alert {
  id: string;
  vm_uuid: string;
  vm_name: string;
  fingerprint: string;
  title: string;
  severity: string;
  state: string;
  message: string;
  mitigation: string;
  probability: number | null;
  confidence: number;
  created_at_ms: number;
  resolved_at_ms: number | null;
}
