// The read queries behind the API, the reports and the CLI's tables. Every value from a request is
// a bound parameter ($n); only fixed SQL fragments chosen from a whitelist are concatenated.
import type {
  Capture,
  Failure,
  Host,
  Listed,
  Page,
  RiskScore,
  ShadowRun,
  Signature,
  Vm,
  VmRisk,
} from "@shadowvm/shared";
import { Where } from "../store/sql-where.js";
import type { Queryable } from "./reader-pool.js";
import type { RiskSource } from "./risk-source.js";

/** BIGINT -> number, JSON text -> value (for the listed JSON columns). */
function row(r: Record<string, unknown>, jsonCols: readonly string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) {
    if (typeof v === "bigint") out[k] = Number(v);
    else if (jsonCols.includes(k) && typeof v === "string") {
      try {
        out[k] = JSON.parse(v);
      } catch {
        out[k] = v;
      }
    } else out[k] = v;
  }
  return out;
}

async function listed<T>(
  db: Queryable,
  sql: string,
  w: Where,
  p: Page,
  map: (r: Record<string, unknown>) => T,
): Promise<Listed<T>> {
  const pageSql = w.page(p);
  const rows = await db.query(`${sql} ${pageSql}`, w.values);
  return { items: rows.slice(0, p.limit).map(map), more: rows.length > p.limit };
}

/** The outcomes a shadow run is stored with. */
export const RUN_OUTCOMES = ["unspecified", "ok", "failed", "inconclusive"] as const;

export async function listHosts(db: Queryable, f: { hostname?: string | undefined }, p: Page) {
  const w = new Where().add((x) => `hostname = ${x}`, f.hostname);
  return listed(
    db,
    `SELECT *, json_array_length(vm_uuids)::INTEGER AS vm_count FROM hosts ${w.sql()} ORDER BY agent_id`,
    w,
    p,
    (r) => row(r, ["capabilities", "vm_uuids"]) as unknown as Host,
  );
}

export async function getHost(db: Queryable, agentId: string): Promise<Host | undefined> {
  const rows = await db.query(
    "SELECT *, json_array_length(vm_uuids)::INTEGER AS vm_count FROM hosts WHERE agent_id = $1",
    [agentId],
  );
  return rows[0] ? (row(rows[0], ["capabilities", "vm_uuids"]) as unknown as Host) : undefined;
}

export interface VmFilter {
  agent_id?: string | undefined;
  state?: string | undefined;
  name?: string | undefined;
  assessed?: boolean | undefined;
  min_score?: number | undefined;
  sort?: "risk" | "name" | undefined;
}

const riskKey = (agentId: string, uuid: string) => `${agentId}\u0000${uuid}`;

function riskOf(a: RiskScore | undefined): VmRisk | null {
  return a
    ? { score: a.score, confidence: a.confidence, level: a.level, assessed_at_ms: a.assessed_at_ms }
    : null;
}

/**
 * VMs with their current risk, highest risk first by default. The fleet's VMs and their newest
 * assessments are merged in memory (one row per VM each), then filtered and paged.
 */
export async function listVms(db: Queryable, risk: RiskSource, f: VmFilter, p: Page): Promise<Listed<Vm>> {
  const w = new Where()
    .add((x) => `v.agent_id = ${x}`, f.agent_id)
    .add((x) => `v.state = ${x}`, f.state)
    .add((x) => `v.name = ${x}`, f.name);
  const [rows, current] = await Promise.all([
    db.query(
      `SELECT v.agent_id, v.uuid, v.name, h.hostname, v.state, v.vcpus, v.memory_mb, v.machine_type, v.labels,
              v.updated_at_ms
         FROM vms v LEFT JOIN hosts h USING (agent_id) ${w.sql()}`,
      w.values,
    ),
    risk.currentScores(),
  ]);
  const byVm = new Map(current.map((a) => [riskKey(a.agent_id, a.vm_uuid), a]));
  let vms = rows.map((r) => {
    const v = row(r, ["labels"]) as unknown as Vm;
    v.risk = riskOf(byVm.get(riskKey(v.agent_id, v.uuid)));
    return v;
  });
  if (f.min_score !== undefined) vms = vms.filter((v) => (v.risk?.score ?? -1) >= (f.min_score ?? 0));
  if (f.assessed !== undefined) vms = vms.filter((v) => (v.risk !== null) === f.assessed);
  if ((f.sort ?? "risk") === "risk") {
    vms.sort(
      (a, b) =>
        (b.risk?.score ?? -1) - (a.risk?.score ?? -1) ||
        a.name.localeCompare(b.name) ||
        a.uuid.localeCompare(b.uuid),
    );
  } else vms.sort((a, b) => a.name.localeCompare(b.name) || a.uuid.localeCompare(b.uuid));
  return { items: vms.slice(p.offset, p.offset + p.limit), more: vms.length > p.offset + p.limit };
}

export async function getVm(
  db: Queryable,
  risk: RiskSource,
  uuid: string,
  agentId?: string,
): Promise<(Vm & { disks: unknown; nics: unknown; pid: number }) | undefined> {
  const w = new Where().add((x) => `v.uuid = ${x}`, uuid).add((x) => `v.agent_id = ${x}`, agentId);
  const rows = await db.query(
    `SELECT v.*, h.hostname FROM vms v LEFT JOIN hosts h USING (agent_id) ${w.sql()}
      ORDER BY v.updated_at_ms DESC LIMIT 1`,
    w.values,
  );
  if (!rows[0]) return undefined;
  const v = row(rows[0], ["labels", "disks", "nics", "qemu_cmdline"]) as unknown as Vm & {
    disks: unknown;
    nics: unknown;
    pid: number;
  };
  delete (v as { qemu_cmdline?: unknown }).qemu_cmdline;
  const history = await risk.riskHistory(v.agent_id, v.uuid, { limit: 1 });
  v.risk = riskOf(history[0]);
  return v;
}

export interface TimeFilter {
  since_ms?: number | undefined;
  until_ms?: number | undefined;
}

export async function listCaptures(
  db: Queryable,
  f: TimeFilter & { vm?: string | undefined; agent_id?: string | undefined; status?: string | undefined },
  p: Page,
) {
  const w = new Where()
    .add((x) => `(vm_uuid = ${x} OR vm_name = ${x})`, f.vm)
    .add((x) => `agent_id = ${x}`, f.agent_id)
    .add((x) => `status = ${x}`, f.status)
    .add((x) => `started_at_ms >= ${x}`, f.since_ms)
    .add((x) => `started_at_ms < ${x}`, f.until_ms);
  return listed(
    db,
    `SELECT agent_id, id, vm_name, vm_uuid, started_at_ms, finished_at_ms, pause_ms, memory_bytes, disk_bytes,
            stored_bytes, new_bytes, config_digest, status, error
       FROM captures ${w.sql()} ORDER BY started_at_ms DESC, agent_id, id`,
    w,
    p,
    (r) => row(r) as unknown as Capture,
  );
}

export interface RunFilter extends TimeFilter {
  vm?: string | undefined;
  agent_id?: string | undefined;
  outcome?: string | undefined;
  strategy?: string | undefined;
  campaign_id?: string | undefined;
  /** Text the profile's JSON form contains, e.g. "disk_io_error" or "\"cpu_load\":0.9". */
  profile?: string | undefined;
  control?: boolean | undefined;
}

export async function listShadowRuns(db: Queryable, f: RunFilter, p: Page) {
  const w = new Where()
    .add((x) => `(vm_uuid = ${x} OR vm_name = ${x})`, f.vm)
    .add((x) => `agent_id = ${x}`, f.agent_id)
    .add((x) => `outcome = ${x}`, f.outcome)
    .add((x) => `strategy = ${x}`, f.strategy)
    .add((x) => `campaign_id = ${x}`, f.campaign_id)
    .add((x) => `contains(CAST(profile AS VARCHAR), ${x})`, f.profile)
    .add((x) => `control = ${x}`, f.control)
    .add((x) => `started_at_ms >= ${x}`, f.since_ms)
    .add((x) => `started_at_ms < ${x}`, f.until_ms);
  return listed(
    db,
    `SELECT agent_id, id, campaign_id, capture_id, vm_name, vm_uuid, profile, strategy, control, started_at_ms,
            finished_at_ms, outcome, failure_count, notes
       FROM shadow_runs ${w.sql()} ORDER BY started_at_ms DESC, agent_id, id`,
    w,
    p,
    (r) => row(r, ["profile", "notes"]) as unknown as ShadowRun,
  );
}

export async function getShadowRun(db: Queryable, id: string, agentId?: string) {
  const w = new Where().add((x) => `id = ${x}`, id).add((x) => `agent_id = ${x}`, agentId);
  const rows = await db.query(
    `SELECT agent_id, id, campaign_id, capture_id, vm_name, vm_uuid, profile, strategy, control, started_at_ms,
            finished_at_ms, outcome, failure_count, notes
       FROM shadow_runs ${w.sql()} ORDER BY updated_at_ms DESC LIMIT 1`,
    w.values,
  );
  return rows[0] ? (row(rows[0], ["profile", "notes"]) as unknown as ShadowRun) : undefined;
}

export interface FailureFilter extends TimeFilter {
  fingerprint?: string | undefined;
  class?: string | undefined;
  vm?: string | undefined;
  shadow_run_id?: string | undefined;
  agent_id?: string | undefined;
}

const FAILURE_SELECT = `SELECT f.failure_id, f.agent_id, f.shadow_run_id, f.title, f.class, f.frame, f.fingerprint,
       f.corrupted, f.evidence, f.offset_ms, f.source, f.received_at_ms, r.vm_uuid, r.vm_name, r.profile,
       coalesce(r.started_at_ms + f.offset_ms, f.received_at_ms) AS occurred_at_ms
  FROM failures f LEFT JOIN shadow_runs r ON r.agent_id = f.agent_id AND r.id = f.shadow_run_id`;

export async function listFailures(db: Queryable, f: FailureFilter, p: Page) {
  const w = new Where()
    .add((x) => `f.fingerprint = ${x}`, f.fingerprint)
    .add((x) => `f.class = ${x}`, f.class)
    .add((x) => `(r.vm_uuid = ${x} OR r.vm_name = ${x})`, f.vm)
    .add((x) => `f.shadow_run_id = ${x}`, f.shadow_run_id)
    .add((x) => `f.agent_id = ${x}`, f.agent_id)
    .add((x) => `coalesce(r.started_at_ms + f.offset_ms, f.received_at_ms) >= ${x}`, f.since_ms)
    .add((x) => `coalesce(r.started_at_ms + f.offset_ms, f.received_at_ms) < ${x}`, f.until_ms);
  return listed(
    db,
    `${FAILURE_SELECT} ${w.sql()} ORDER BY occurred_at_ms DESC, f.failure_id`,
    w,
    p,
    (r) => row(r, ["evidence", "profile"]) as unknown as Failure,
  );
}

export interface SignatureFilter extends TimeFilter {
  class?: string | undefined;
  vm?: string | undefined;
  q?: string | undefined;
  sort?: "count" | "last_seen" | undefined;
}

/** Signatures over the fleet (one row per fingerprint, summed over the agents that saw it). */
const SIGNATURE_SELECT = `SELECT fingerprint, any_value(title ORDER BY updated_at_ms DESC) AS title,
       any_value(class ORDER BY updated_at_ms DESC) AS class, sum(count)::BIGINT AS count,
       min(first_seen_ms) AS first_seen_ms, max(last_seen_ms) AS last_seen_ms,
       list(DISTINCT agent_id ORDER BY agent_id) AS agents,
       list_sort(list_distinct(flatten(list(CAST(vms AS VARCHAR[]))))) AS vms,
       to_json(flatten(list(CAST(profiles AS JSON[])))) AS profiles
  FROM signatures`;

export async function listSignatures(db: Queryable, f: SignatureFilter, p: Page) {
  const w = new Where()
    .add((x) => `class = ${x}`, f.class)
    .add((x) => `list_contains(CAST(vms AS VARCHAR[]), ${x})`, f.vm)
    .add((x) => `(contains(lower(title), lower(${x})) OR fingerprint = ${x})`, f.q)
    .add((x) => `last_seen_ms >= ${x}`, f.since_ms)
    .add((x) => `first_seen_ms < ${x}`, f.until_ms);
  const order = f.sort === "last_seen" ? "last_seen_ms DESC" : "count DESC";
  return listed(
    db,
    `${SIGNATURE_SELECT} ${w.sql()} GROUP BY fingerprint ORDER BY ${order}, fingerprint`,
    w,
    p,
    (r) => row(r, ["profiles"]) as unknown as Signature,
  );
}

export async function getSignature(db: Queryable, fingerprint: string): Promise<Signature | undefined> {
  const rows = await db.query(`${SIGNATURE_SELECT} WHERE fingerprint = $1 GROUP BY fingerprint`, [
    fingerprint,
  ]);
  return rows[0] ? (row(rows[0], ["profiles"]) as unknown as Signature) : undefined;
}

/** Where and when a signature occurred: per production VM, its failures' count and time span. */
export async function signatureOccurrences(db: Queryable, fingerprint: string) {
  const rows = await db.query(
    `SELECT f.agent_id, r.vm_uuid, any_value(r.vm_name) AS vm_name, count(*)::BIGINT AS failures,
            count(DISTINCT f.shadow_run_id)::BIGINT AS runs,
            min(coalesce(r.started_at_ms + f.offset_ms, f.received_at_ms)) AS first_ms,
            max(coalesce(r.started_at_ms + f.offset_ms, f.received_at_ms)) AS last_ms
       FROM failures f LEFT JOIN shadow_runs r ON r.agent_id = f.agent_id AND r.id = f.shadow_run_id
      WHERE f.fingerprint = $1
      GROUP BY f.agent_id, r.vm_uuid ORDER BY failures DESC, f.agent_id, r.vm_uuid LIMIT 1000`,
    [fingerprint],
  );
  return rows.map(
    (r) =>
      row(r) as {
        agent_id: string;
        vm_uuid: string | null;
        vm_name: string | null;
        failures: number;
        runs: number;
        first_ms: number;
        last_ms: number;
      },
  );
}

/** Failed and passed runs of one VM with their profiles: the failure boundary's raw points. */
export async function boundaryPoints(db: Queryable, agentId: string, vmUuid: string, limit = 500) {
  const rows = await db.query(
    `SELECT id, outcome, control, profile, failure_count, started_at_ms FROM shadow_runs
      WHERE agent_id = $1 AND vm_uuid = $2 AND outcome IN ('ok', 'failed')
      ORDER BY started_at_ms DESC LIMIT $3`,
    [agentId, vmUuid, limit],
  );
  return rows.map(
    (r) =>
      row(r, ["profile"]) as {
        id: string;
        outcome: string;
        control: boolean;
        profile: Record<string, unknown> | null;
        failure_count: number;
        started_at_ms: number;
      },
  );
}

/** One signature's failures on one VM: how many shadow runs showed it, and when it was last seen. */
export interface VmSignatureCount {
  fingerprint: string;
  title: string;
  class: string;
  failures: number;
  last_ms: number;
}

/** The signatures a VM's shadows showed, most frequent first (the evidence behind its risk). */
export async function vmSignatureCounts(
  db: Queryable,
  agentId: string,
  vmUuid: string,
  limit: number,
): Promise<VmSignatureCount[]> {
  const rows = await db.query(
    `SELECT f.fingerprint, any_value(f.title) AS title, any_value(f.class) AS class, count(*)::BIGINT AS failures,
            max(r.started_at_ms + f.offset_ms) AS last_ms
       FROM failures f JOIN shadow_runs r ON r.agent_id = f.agent_id AND r.id = f.shadow_run_id
      WHERE r.agent_id = $1 AND r.vm_uuid = $2
      GROUP BY f.fingerprint ORDER BY failures DESC, f.fingerprint LIMIT $3`,
    [agentId, vmUuid, limit],
  );
  return rows.map((s) => ({
    fingerprint: String(s["fingerprint"]),
    title: String(s["title"]),
    class: String(s["class"]),
    failures: Number(s["failures"]),
    last_ms: Number(s["last_ms"] ?? 0),
  }));
}
