// The correlation engine: reads shadow runs, failures, inventory and telemetry from DuckDB (the
// trends are DuckDB regressions), applies the model of risk-model.ts per VM and signature (own
// shadows first, fleet evidence for VMs not yet shadowed), then what the VM's own production console
// showed (production_events: precursors raise probability and confidence, a failure of the
// signature marks it observed in production), and stores one round of assessments in
// risk_assessments (history) and risk_rounds. docs/risk-model.md describes the tables.
import type { DuckDBConnection, DuckDBValue } from "@duckdb/node-api";
import { formatHours } from "@shadowvm/shared";
import type { CollectorConfig } from "../config/collector-config.js";
import { Where } from "../store/sql-where.js";
import { type MitigationStep, mitigationsFor } from "./mitigations.js";
import {
  type BoundaryEstimate,
  type Confidence,
  confidenceLevel,
  confidenceOf,
  crossingProbability,
  type DimensionBoundary,
  estimateBoundary,
  extrapolationFactor,
  FORECAST_DIMENSIONS,
  type ForecastDimension,
  OPERATING_POINT_KEY,
  precursorPrecision,
  type RunPoint,
  reachText,
  type Trend,
  timeToBoundary,
  trendFromMoments,
  withPrecursor,
} from "./risk-model.js";

/**
 * The signature(s) each run counts for: its primary failure. The run's other failures are its
 * consequences or echoes (a machine check's panic after the machine check); a run with no primary
 * marked (an agent from before Failure.primary) counts all of its failures.
 */
const RUN_SIGNATURES_SQL = `
  SELECT DISTINCT f.agent_id, f.shadow_run_id, f.fingerprint, f.title, f.class
  FROM failures f
  WHERE f.is_primary OR NOT EXISTS (
    SELECT 1 FROM failures p
    WHERE p.agent_id = f.agent_id AND p.shadow_run_id = f.shadow_run_id AND p.is_primary)`;

/**
 * Signatures a VM's unstressed control shadows failed with, on how many distinct live captures of
 * one campaign (the newest such campaign per VM and signature). One capture failing can be the
 * capture's fault (a vCPU caught mid-instruction); within a campaign a fresh capture is taken only
 * after a control failed, so several failing the same way there are consecutive captures of a VM
 * that fails unstressed. Captures of different campaigns, with healthy ones between, are not.
 */
const UNSTRESSED_SQL = `
  WITH run_sig AS (${RUN_SIGNATURES_SQL})
  SELECT r.vm_uuid, any_value(r.vm_name) AS vm_name, r.agent_id, f.fingerprint,
    any_value(f.title) AS title, any_value(f.class) AS class,
    count(DISTINCT r.capture_id) AS captures, count(*) AS runs, max(r.finished_at_ms) AS last_ms,
    list(DISTINCT r.id ORDER BY r.id) AS run_ids
  FROM shadow_runs r
  JOIN run_sig f ON f.agent_id = r.agent_id AND f.shadow_run_id = r.id
  WHERE r.control AND r.outcome = 'failed' AND r.finished_at_ms > $1
  GROUP BY r.vm_uuid, r.agent_id, r.campaign_id, f.fingerprint
  HAVING count(DISTINCT r.capture_id) >= $2
  QUALIFY row_number() OVER (PARTITION BY r.vm_uuid, f.fingerprint ORDER BY max(r.finished_at_ms) DESC) = 1`;

/** A signature the VM's unstressed control shadows failed with on several captures. */
export interface UnstressedFailure {
  captures: number;
  runs: number;
  last_ms: number;
  run_ids: string[];
}

export type RiskConfig = CollectorConfig["risk"];

export type AssessmentStatus = "assessed" | "no_telemetry" | "not_forecastable";

/** One row of risk_assessments. */
export interface RiskAssessment {
  computed_at_ms: number;
  vm_uuid: string;
  vm_name: string;
  agent_id: string;
  fingerprint: string;
  title: string;
  class: string;
  /** "own": this VM's shadows; "fleet": shadows of VMs sharing an image/kernel/app-stack label. */
  source: "own" | "fleet";
  status: AssessmentStatus;
  /** Probability of crossing the boundary within the horizon; null = no risk claimed. */
  probability: number | null;
  confidence: number;
  confidence_level: Confidence["level"];
  time_to_failure_h: number | null;
  horizon_h: number;
  dimension: string;
  boundary: number;
  boundary_uncertainty: number;
  level: number | null;
  slope_per_h: number | null;
  forecast: number | null;
  forecast_error: number | null;
  samples: number;
  runs: number;
  failing_runs: number;
  contradicting_runs: number;
  run_ids: string[];
  fleet_peers: { vm_uuid: string; vm_name: string; label: string; value: string }[];
  explanation: string;
  mitigations: MitigationStep[];
  /**
   * Per-dimension boundaries and the confidence factors; `precursor` and `production_failure` when
   * the production console showed them (the two fields below are read from there).
   */
  detail: Record<string, unknown>;
  /** The newest precursor of this signature seen on the VM's console within risk.precursor_window_h. */
  precursor?: ProductionSighting | null;
  /** The signature's failure was seen on the VM's own console within risk.production_failure_window_h. */
  observed_in_production?: boolean;
  /** The VM's unstressed control shadows failed with it on several captures (risk.unstressed_*). */
  fails_unstressed?: boolean;
}

/** A production console event, summarised per (VM, signature, kind) over the window. */
export interface ProductionSighting {
  /** The newest one. */
  seen_at_ms: number;
  line: string;
  pattern: string;
  /** Events in the window, plus the occurrences the agent folded into them. */
  count: number;
  /**
   * For precursors, as the newest event says: shadow runs the line preceded the failure in, and
   * runs that showed it and went their full time without (0 and 0 from older agents).
   */
  runs_with?: number;
  runs_without?: number;
  /** For precursors: its precision (precursorPrecision; null: not known) and whether it counted. */
  precision?: number | null;
  counted?: boolean;
  /** For precursors: probability and confidence before they were raised (null: none claimed). */
  probability_before?: number | null;
  confidence_before?: number;
}

export interface Queryable {
  query(sql: string, values?: DuckDBValue[]): Promise<Record<string, unknown>[]>;
}

/** A DuckDB connection as a Queryable (plain JS rows). */
export function queryable(conn: DuckDBConnection): Queryable {
  return {
    async query(sql, values) {
      return (await conn.runAndReadAll(sql, values)).getRowObjectsJS() as Record<string, unknown>[];
    },
  };
}

interface VmInfo {
  uuid: string;
  name: string;
  agent_id: string;
  vcpus: number;
  memory_mb: number;
  labels: Record<string, string>;
}

/** A VM the collector knows only from shadow runs (no inventory yet): no size, no labels. */
function vmSeenInRuns(uuid: string, name: string, agentId: string): VmInfo {
  return { uuid, name, agent_id: agentId, vcpus: 0, memory_mb: 0, labels: {} };
}

interface RunRow {
  id: string;
  agent_id: string;
  vm_uuid: string;
  vm_name: string;
  outcome: string;
  values: Record<string, number>;
}

interface Signature {
  fingerprint: string;
  title: string;
  class: string;
}

const num = (v: unknown): number => (typeof v === "bigint" ? Number(v) : Number(v ?? 0));

function parseJson<T>(v: unknown, fallback: T): T {
  if (v === null || v === undefined) return fallback;
  if (typeof v !== "string") return v as T;
  try {
    return JSON.parse(v) as T;
  } catch {
    return fallback;
  }
}

/** A stress profile's JSON form as dimension values (faults as fault:<kind> = rate). */
export function profileValues(profile: unknown): Record<string, number> {
  const p = (profile ?? {}) as Record<string, unknown>;
  const values: Record<string, number> = {};
  for (const k of ["cpu_load", "memory_load", "io_load", "net_latency_ms", "net_loss_pct"]) {
    const v = p[k];
    if (typeof v === "number" && Number.isFinite(v)) values[k] = v;
  }
  for (const f of Array.isArray(p["faults"]) ? (p["faults"] as Record<string, unknown>[]) : []) {
    const key = `fault:${String(f["kind"])}`;
    values[key] = Math.max(values[key] ?? 0, Number(f["rate"] ?? 0));
  }
  return values;
}

const TREND_SQL = `
WITH s AS (
  SELECT vm_uuid, (ts_ms - $1) / 3600000.0 AS t,
    TRY_CAST(json_extract_string(extra, '$.${OPERATING_POINT_KEY.cpu_load}') AS DOUBLE) AS cpu_load,
    TRY_CAST(json_extract_string(extra, '$.${OPERATING_POINT_KEY.memory_load}') AS DOUBLE) AS memory_load,
    TRY_CAST(json_extract_string(extra, '$.${OPERATING_POINT_KEY.io_load}') AS DOUBLE) AS io_load
  FROM samples
  WHERE scope = 2 AND vm_uuid IS NOT NULL AND extra IS NOT NULL AND ts_ms > $2 AND ts_ms <= $1
)
${FORECAST_DIMENSIONS.map(
  (d) => `SELECT vm_uuid, '${d}' AS dim, regr_count(${d}, t) AS n, regr_avgx(${d}, t) AS mean_t,
    regr_avgy(${d}, t) AS mean_y, regr_sxx(${d}, t) AS sxx, regr_sxy(${d}, t) AS sxy,
    regr_syy(${d}, t) AS syy, max(t) FILTER (WHERE ${d} IS NOT NULL) AS last_t,
    min(t) FILTER (WHERE ${d} IS NOT NULL) AS first_t
  FROM s GROUP BY vm_uuid`,
).join("\nUNION ALL\n")}`;

export class RiskEngine {
  constructor(
    private readonly db: Queryable,
    private readonly config: RiskConfig,
  ) {}

  /** Computes one round of assessments at `now` (does not store them). */
  async compute(now = Date.now()): Promise<RiskAssessment[]> {
    const cfg = this.config;
    const [vmRows, runRows, failureRows, trendRows, eventRows, unstressedRows] = await Promise.all([
      this.db.query(`SELECT uuid, arg_max(name, updated_at_ms) AS name, arg_max(agent_id, updated_at_ms) AS agent_id,
          arg_max(vcpus, updated_at_ms) AS vcpus, arg_max(memory_mb, updated_at_ms) AS memory_mb,
          arg_max(CAST(labels AS VARCHAR), updated_at_ms) AS labels
        FROM vms GROUP BY uuid`),
      this.db.query(`SELECT agent_id, id, vm_uuid, vm_name, outcome, CAST(profile AS VARCHAR) AS profile
        FROM shadow_runs WHERE NOT control AND outcome IN ('ok', 'failed') AND profile IS NOT NULL`),
      this.db.query(RUN_SIGNATURES_SQL),
      this.db.query(TREND_SQL, [now, now - cfg.telemetry_window_h * 3_600_000]),
      this.db.query(
        `SELECT vm_uuid, fingerprint, kind, max(ts_ms) AS last_ms, arg_max(line, ts_ms) AS line,
            arg_max(pattern, ts_ms) AS pattern, count(*) + sum(suppressed) AS n,
            arg_max(runs_with, ts_ms) AS runs_with, arg_max(runs_without, ts_ms) AS runs_without
          FROM production_events
          WHERE ts_ms <= $1 AND ts_ms > CASE kind WHEN 'precursor' THEN $2 ELSE $3 END
          GROUP BY vm_uuid, fingerprint, kind`,
        [
          now + 60_000, // agents' clocks may run a little ahead
          now - cfg.precursor_window_h * 3_600_000,
          now - cfg.production_failure_window_h * 3_600_000,
        ],
      ),
      this.db.query(UNSTRESSED_SQL, [now - cfg.unstressed_window_h * 3_600_000, cfg.unstressed_min_captures]),
    ]);
    const sightings = new Map<string, ProductionSighting>();
    for (const e of eventRows) {
      sightings.set(`${e["vm_uuid"]}\u0000${e["fingerprint"]}\u0000${e["kind"]}`, {
        seen_at_ms: num(e["last_ms"]),
        line: String(e["line"] ?? ""),
        pattern: String(e["pattern"] ?? ""),
        count: num(e["n"]),
        ...(e["kind"] === "precursor"
          ? { runs_with: num(e["runs_with"] ?? 0), runs_without: num(e["runs_without"] ?? 0) }
          : {}),
      });
    }
    const vms = new Map<string, VmInfo>();
    for (const r of vmRows) {
      const labels = parseJson<Record<string, unknown>>(r["labels"], {});
      vms.set(String(r["uuid"]), {
        uuid: String(r["uuid"]),
        name: String(r["name"]),
        agent_id: String(r["agent_id"]),
        vcpus: num(r["vcpus"]),
        memory_mb: num(r["memory_mb"]),
        labels: Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, String(v)])),
      });
    }
    const runs: RunRow[] = runRows.map((r) => ({
      id: String(r["id"]),
      agent_id: String(r["agent_id"]),
      vm_uuid: String(r["vm_uuid"]),
      vm_name: String(r["vm_name"]),
      outcome: String(r["outcome"]),
      values: profileValues(parseJson(r["profile"], {})),
    }));
    for (const r of runs) {
      if (!vms.has(r.vm_uuid)) vms.set(r.vm_uuid, vmSeenInRuns(r.vm_uuid, r.vm_name, r.agent_id));
    }
    // Signatures per run (agent_id + run id), and every signature's title and class.
    const runSigs = new Map<string, Set<string>>();
    const sigs = new Map<string, Signature>();
    for (const f of failureRows) {
      const key = `${f["agent_id"]}\u0000${f["shadow_run_id"]}`;
      const fp = String(f["fingerprint"]);
      let set = runSigs.get(key);
      if (!set) {
        set = new Set();
        runSigs.set(key, set);
      }
      set.add(fp);
      if (!sigs.has(fp))
        sigs.set(fp, { fingerprint: fp, title: String(f["title"]), class: String(f["class"]) });
    }
    const sigsOf = (r: RunRow) => runSigs.get(`${r.agent_id}\u0000${r.id}`) ?? new Set<string>();
    const trends = new Map<string, Map<ForecastDimension, Trend>>();
    for (const t of trendRows) {
      const n = num(t["n"]);
      if (n === 0) continue;
      const uuid = String(t["vm_uuid"]);
      let m = trends.get(uuid);
      if (!m) {
        m = new Map();
        trends.set(uuid, m);
      }
      m.set(
        t["dim"] as ForecastDimension,
        trendFromMoments({
          n,
          mean_t: num(t["mean_t"]),
          mean_y: num(t["mean_y"]),
          sxx: num(t["sxx"]),
          sxy: num(t["sxy"]),
          syy: num(t["syy"]),
          last_t: num(t["last_t"]),
          first_t: num(t["first_t"]),
        }),
      );
    }
    const runsByVm = new Map<string, RunRow[]>();
    for (const r of runs) {
      let list = runsByVm.get(r.vm_uuid);
      if (!list) {
        list = [];
        runsByVm.set(r.vm_uuid, list);
      }
      list.push(r);
    }
    /** Runs as points for one signature: failed with it, or ok; runs failing otherwise are left out. */
    const pointsFor = (list: readonly RunRow[], fp: string): RunPoint[] =>
      list.flatMap((r): RunPoint[] => {
        if (sigsOf(r).has(fp)) return [{ run_id: r.id, values: r.values, failed: true }];
        if (r.outcome === "ok") return [{ run_id: r.id, values: r.values, failed: false }];
        return [];
      });

    const out: RiskAssessment[] = [];
    for (const vm of [...vms.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const own = runsByVm.get(vm.uuid) ?? [];
      if (own.length > 0) {
        const fps = new Set<string>();
        for (const r of own) for (const fp of sigsOf(r)) fps.add(fp);
        for (const fp of fps) {
          const sig = sigs.get(fp)!;
          out.push(
            this.assess(now, vm, sig, estimateBoundary(pointsFor(own, fp)), trends.get(vm.uuid), "own", []),
          );
        }
        continue;
      }
      // Not yet shadowed: evidence from shadows of VMs sharing a fleet label.
      const peers: RiskAssessment["fleet_peers"] = [];
      for (const key of cfg.fleet_label_keys) {
        const value = vm.labels[key];
        if (value === undefined || value === "") continue;
        for (const other of vms.values()) {
          if (other.uuid !== vm.uuid && other.labels[key] === value && runsByVm.has(other.uuid))
            peers.push({ vm_uuid: other.uuid, vm_name: other.name, label: key, value });
        }
      }
      if (peers.length === 0) continue;
      const peerRuns = [...new Set(peers.map((p) => p.vm_uuid))].flatMap((u) => runsByVm.get(u) ?? []);
      const fps = new Set<string>();
      for (const r of peerRuns) for (const fp of sigsOf(r)) fps.add(fp);
      for (const fp of fps) {
        const withSig = new Set(peerRuns.filter((r) => sigsOf(r).has(fp)).map((r) => r.vm_uuid));
        const relevant = peers.filter((p) => withSig.has(p.vm_uuid));
        out.push(
          this.assess(
            now,
            vm,
            sigs.get(fp)!,
            estimateBoundary(pointsFor(peerRuns, fp)),
            trends.get(vm.uuid),
            "fleet",
            relevant,
          ),
        );
      }
    }
    this.addUnstressed(out, unstressedRows, vms, trends, now);
    return out.map((a) => this.withProduction(a, sightings));
  }

  /**
   * Signatures the VM fails with unstressed (UNSTRESSED_SQL) replace what the boundary said: its
   * present state fails within a shadow run, so P = 1 and the time to failure is now. A signature
   * only the controls showed gets an assessment of its own.
   */
  private addUnstressed(
    out: RiskAssessment[],
    rows: Record<string, unknown>[],
    vms: ReadonlyMap<string, VmInfo>,
    trends: Map<string, Map<ForecastDimension, Trend>>,
    now: number,
  ): void {
    for (const row of rows) {
      const uuid = String(row["vm_uuid"]);
      // A VM known only from these runs (no inventory yet, every stressed run inconclusive).
      const vm = vms.get(uuid) ?? vmSeenInRuns(uuid, String(row["vm_name"]), String(row["agent_id"]));
      const fp = String(row["fingerprint"]);
      const u: UnstressedFailure = {
        captures: num(row["captures"]),
        runs: num(row["runs"]),
        last_ms: num(row["last_ms"]),
        run_ids: (row["run_ids"] as unknown[]).map(String),
      };
      let i = out.findIndex((a) => a.vm_uuid === vm.uuid && a.fingerprint === fp && a.source === "own");
      if (i < 0) {
        const sig = { fingerprint: fp, title: String(row["title"]), class: String(row["class"]) };
        i = out.push(this.assess(now, vm, sig, estimateBoundary([]), trends.get(vm.uuid), "own", [])) - 1;
      }
      out[i] = this.failingUnstressed(out[i]!, u);
    }
  }

  private failingUnstressed(a: RiskAssessment, u: UnstressedFailure): RiskAssessment {
    // Each further capture that fails the same way adds to the confidence; two give 0.8 (high).
    const confidence = Math.min(0.95, 0.5 + 0.15 * u.captures);
    const runs = `${u.run_ids.slice(0, 4).join(", ")}${u.run_ids.length > 4 ? ", ..." : ""}`;
    return {
      ...a,
      status: "assessed",
      probability: 1,
      confidence,
      confidence_level: confidenceLevel(confidence),
      time_to_failure_h: 0,
      detail: { ...a.detail, unstressed: u },
      fails_unstressed: true,
      explanation: `Fails without stress: ${a.vm_name}'s unstressed control shadows failed with "${a.title}" on ${u.captures} separate live captures (control runs ${runs}, the last at ${new Date(u.last_ms).toISOString()}), so its present state fails within a shadow run with nothing added. ${a.explanation}`,
      mitigations: [
        {
          action: `restart ${a.vm_name} in a controlled way now (or move its service off it), before "${a.title}" happens on its own`,
          because: `its state, captured live ${u.captures} times, failed with ${a.class} in every unstressed control shadow; the control shadows' consoles (runs ${runs}) show how`,
        },
        ...a.mitigations,
      ],
    };
  }

  /**
   * What the VM's own console showed (docs/risk-model.md, "Precursors and production failures"):
   * a precursor raises P and the confidence (withPrecursor), a failure marks the assessment
   * observed in production; both are named in the explanation.
   */
  private withProduction(a: RiskAssessment, sightings: Map<string, ProductionSighting>): RiskAssessment {
    const key = `${a.vm_uuid}\u0000${a.fingerprint}\u0000`;
    const pre = sightings.get(`${key}precursor`);
    const failed = sightings.get(`${key}failure`);
    if (!pre && !failed) return a;
    const cfg = this.config;
    const out: RiskAssessment = { ...a, detail: { ...a.detail } };
    const when = (ms: number) =>
      `${new Date(ms).toISOString().replace(/\.\d+Z$/, "Z")} (${formatHours((a.computed_at_ms - ms) / 3_600_000)} ago)`;
    const quote = (s: string) => JSON.stringify(s.length > 160 ? `${s.slice(0, 157)}...` : s);
    if (pre) {
      const precision = precursorPrecision(pre.runs_with ?? 0, pre.runs_without ?? 0);
      const counted = precision === null || precision >= cfg.precursor_min_precision;
      const sighting: ProductionSighting = {
        ...pre,
        precision,
        counted,
        probability_before: a.probability,
        confidence_before: a.confidence,
      };
      const record =
        precision === null
          ? `a line that preceded "${a.title}" in shadows`
          : `a line that preceded "${a.title}" in ${pre.runs_with} of the ${pre.runs_with! + pre.runs_without!} shadow runs that showed it (precision ${precision.toFixed(2)})`;
      let effect: string;
      if (!counted)
        effect = `not counted: stressed shadows print it whether or not they fail (precision under risk.precursor_min_precision ${cfg.precursor_min_precision})`;
      else if (a.probability !== null) {
        const raised = withPrecursor(
          a.probability,
          a.confidence,
          cfg.precursor_weight * (precision ?? 1),
          cfg.precursor_confidence_weight * (precision ?? 1),
        );
        out.probability = raised.probability;
        out.confidence = raised.confidence;
        out.confidence_level = raised.level;
        effect = `P raised from ${a.probability.toFixed(2)} to ${raised.probability.toFixed(2)}, confidence from ${a.confidence.toFixed(2)} to ${raised.confidence.toFixed(2)} (${raised.level})`;
      } else effect = "no probability is claimed without a forecast, so none is raised";
      // An uncounted precursor stays in the detail and the explanation, but raises no flag.
      if (counted) out.precursor = sighting;
      out.detail["precursor"] = sighting;
      out.explanation += ` Precursor seen on ${a.vm_name}'s production console at ${when(pre.seen_at_ms)}: ${quote(pre.line)} (pattern ${quote(pre.pattern)}, ${pre.count} time(s) in the last ${cfg.precursor_window_h} h), ${record}: ${effect}.`;
    }
    if (failed) {
      out.observed_in_production = true;
      out.detail["production_failure"] = failed;
      out.explanation = `Observed in production: "${a.title}" on ${a.vm_name}'s console at ${when(failed.seen_at_ms)} (${quote(failed.line)}, ${failed.count} time(s) in the last ${cfg.production_failure_window_h} h). ${out.explanation}`;
    }
    return out;
  }

  private assess(
    now: number,
    vm: VmInfo,
    sig: Signature,
    b: BoundaryEstimate,
    trends: Map<ForecastDimension, Trend> | undefined,
    source: "own" | "fleet",
    peers: RiskAssessment["fleet_peers"],
  ): RiskAssessment {
    const cfg = this.config;
    const horizon = cfg.horizon_h;
    const { dom, alike, compared } = this.assessedDimension(b, trends);
    const base: RiskAssessment = {
      computed_at_ms: now,
      vm_uuid: vm.uuid,
      vm_name: vm.name,
      agent_id: vm.agent_id,
      fingerprint: sig.fingerprint,
      title: sig.title,
      class: sig.class,
      source,
      status: "assessed",
      probability: null,
      confidence: 0,
      confidence_level: "low",
      time_to_failure_h: null,
      horizon_h: horizon,
      dimension: dom?.dimension ?? "",
      boundary: dom?.boundary ?? 0,
      boundary_uncertainty: dom?.uncertainty ?? 0,
      level: null,
      slope_per_h: null,
      forecast: null,
      forecast_error: null,
      samples: 0,
      runs: b.runs,
      failing_runs: b.failing,
      contradicting_runs: dom?.contradicting ?? 0,
      run_ids: b.failing_run_ids,
      fleet_peers: peers,
      explanation: "",
      mitigations: [],
      detail: { dimensions: b.dimensions },
      precursor: null,
      observed_in_production: false,
    };
    const where =
      source === "own"
        ? `${vm.name}'s shadows`
        : `shadows of ${[...new Set(peers.map((p) => `${p.vm_name} (${p.label}=${p.value})`))].join(", ")}`;
    const found = dom
      ? `${where} failed with "${sig.title}" (${sig.class}) from ${dom.dimension} ≈ ${dom.boundary.toFixed(3)} ± ${dom.uncertainty.toFixed(3)} in ${b.failing} of ${b.runs} runs (runs ${b.failing_run_ids.slice(0, 5).join(", ")}${b.failing_run_ids.length > 5 ? ", ..." : ""}; ${dom.contradicting} passing run(s) at or above it)${
          alike.length
            ? `. The runs cannot tell ${dom.dimension} from ${alike.join(", ")} (each separates the failing runs from the passing ones as well); ${dom.dimension} is assessed${compared ? ", the one production is likeliest to cross" : ""}`
            : ""
        }`
      : `${where} failed with "${sig.title}" (${sig.class}), but without stress that locates a boundary`;
    const trend =
      dom && (FORECAST_DIMENSIONS as readonly string[]).includes(dom.dimension)
        ? trends?.get(dom.dimension as ForecastDimension)
        : undefined;
    if (!dom || !(FORECAST_DIMENSIONS as readonly string[]).includes(dom.dimension)) {
      return {
        ...base,
        status: "not_forecastable",
        explanation: `${found}. ${dom ? dom.dimension : "That stress"} has no production counterpart in telemetry: no probability claimed.`,
        mitigations: dom ? mitigationsFor(this.mitigationContext(vm, sig, base)) : [],
      };
    }
    if (!trend || trend.n < cfg.min_samples) {
      return {
        ...base,
        status: "no_telemetry",
        samples: trend?.n ?? 0,
        explanation: `${found}. No risk claimed: ${trend?.n ?? 0} operating-point sample(s) of ${vm.name} in the last ${cfg.telemetry_window_h} h (at least ${cfg.min_samples} needed).`,
      };
    }
    const cross = crossingProbability(trend, dom.boundary, dom.uncertainty, horizon);
    const reach = timeToBoundary(trend, dom.boundary, horizon, cfg.max_extrapolation);
    const confidence = confidenceOf({
      runs: b.runs,
      failing: b.failing,
      boundary_uncertainty: dom.uncertainty,
      contradicting: dom.contradicting,
      forecast_error: cross.forecast_error,
      samples: trend.n,
      fleet_factor: source === "fleet" ? cfg.fleet_confidence_factor : 1,
      extrapolation: extrapolationFactor(reach, horizon, cfg.max_extrapolation),
    });
    const a: RiskAssessment = {
      ...base,
      probability: cross.probability,
      confidence: confidence.value,
      confidence_level: confidence.level,
      time_to_failure_h: reach.time_to_failure_h,
      level: trend.level,
      slope_per_h: trend.slope,
      forecast: cross.forecast,
      forecast_error: cross.forecast_error,
      samples: trend.n,
      detail: {
        dimensions: b.dimensions,
        confidence_factors: confidence.factors,
        reach: {
          basis: reach.basis,
          line_h: reach.line_h,
          span_h: reach.span_h,
          slope_error: Number.isFinite(reach.slope_error) ? reach.slope_error : null,
        },
      },
    };
    a.explanation =
      `${dom.dimension} dominates. ${found}. Production ${dom.dimension} is at ${trend.level.toFixed(3)}, ` +
      `${trend.slope >= 0 ? "+" : ""}${trend.slope.toFixed(4)}/h over ${trend.n} samples (${formatHours(reach.span_h)}); forecast ${cross.forecast.toFixed(3)} ± ${cross.forecast_error.toFixed(3)} ` +
      `within ${horizon} h; boundary ${reachText(reach, cfg.max_extrapolation)}. P(failure within ${horizon} h) = ${cross.probability.toFixed(2)}, ` +
      `confidence ${confidence.level} (${confidence.value.toFixed(2)}).`;
    a.mitigations = mitigationsFor({ ...this.mitigationContext(vm, sig, a), reach });
    return a;
  }

  /**
   * The dimension to assess: the dominant one, unless others separate the failing runs from the
   * passing ones just as well (a few runs that raised several knobs together cannot tell which one
   * the failure needs). Then the one production is likeliest to cross within the horizon is
   * assessed, so a VM heading for any boundary the runs allow is not missed; `alike` names the
   * others for the explanation.
   */
  private assessedDimension(
    b: BoundaryEstimate,
    trends: Map<ForecastDimension, Trend> | undefined,
  ): { dom: DimensionBoundary | undefined; alike: string[]; compared: boolean } {
    const first = b.dominant;
    if (!first) return { dom: undefined, alike: [], compared: false };
    const tied = b.dimensions.filter(
      (d) => d.discrimination >= first.discrimination - 1e-9 && d.contradicting <= first.contradicting,
    );
    if (tied.length < 2) return { dom: first, alike: [], compared: false };
    let dom = first;
    let best = -1;
    for (const d of tied) {
      if (!(FORECAST_DIMENSIONS as readonly string[]).includes(d.dimension)) continue;
      const trend = trends?.get(d.dimension as ForecastDimension);
      if (!trend || trend.n < this.config.min_samples) continue;
      const p = crossingProbability(trend, d.boundary, d.uncertainty, this.config.horizon_h).probability;
      if (p > best) {
        best = p;
        dom = d;
      }
    }
    return { dom, alike: tied.filter((d) => d !== dom).map((d) => d.dimension), compared: best >= 0 };
  }

  private mitigationContext(vm: VmInfo, sig: Signature, a: RiskAssessment) {
    return {
      vm_name: vm.name,
      failure_class: sig.class,
      title: sig.title,
      dimension: a.dimension,
      level: a.level,
      slope_per_h: a.slope_per_h,
      boundary: a.boundary,
      time_to_failure_h: a.time_to_failure_h,
      probability: a.probability,
      failing_runs: a.failing_runs,
      runs: a.runs,
      vcpus: vm.vcpus,
      memory_mb: vm.memory_mb,
      forecast: a.forecast,
      horizon_h: a.horizon_h,
    };
  }

  /** Stores one round (all assessments with the same computed_at_ms) and prunes old history. */
  async store(
    conn: DuckDBConnection,
    round: { at_ms: number; trigger: string; duration_ms: number },
    assessments: readonly RiskAssessment[],
  ): Promise<void> {
    await conn.run("BEGIN TRANSACTION");
    try {
      // Multi-row INSERTs: row-at-a-time statements cost ~7 ms each.
      const rows = assessments.map((a) => [
        round.at_ms,
        a.vm_uuid,
        a.vm_name,
        a.agent_id,
        a.fingerprint,
        a.title,
        a.class,
        a.source,
        a.status,
        a.probability,
        a.confidence,
        a.confidence_level,
        a.time_to_failure_h,
        a.horizon_h,
        a.dimension,
        a.boundary,
        a.boundary_uncertainty,
        a.level,
        a.slope_per_h,
        a.forecast,
        a.forecast_error,
        a.samples,
        a.runs,
        a.failing_runs,
        a.contradicting_runs,
        JSON.stringify(a.run_ids),
        JSON.stringify(a.fleet_peers),
        a.explanation,
        JSON.stringify(a.mitigations),
        JSON.stringify(a.detail),
      ]);
      for (let i = 0; i < rows.length; i += 200) {
        const chunk = rows.slice(i, i + 200);
        const width = chunk[0]!.length;
        const tuples = chunk.map(
          (_, r) => `(${Array.from({ length: width }, (_, c) => `$${r * width + c + 1}`).join(", ")})`,
        );
        await conn.run(
          `INSERT OR REPLACE INTO risk_assessments VALUES ${tuples.join(", ")}`,
          chunk.flat() as DuckDBValue[],
        );
      }
      await conn.run("INSERT OR REPLACE INTO risk_rounds VALUES ($1, $2, $3, $4, $5)", [
        round.at_ms,
        round.trigger,
        round.duration_ms,
        new Set(assessments.map((a) => a.vm_uuid)).size,
        assessments.length,
      ]);
      if (this.config.history_days > 0) {
        const cutoff = round.at_ms - this.config.history_days * 86_400_000;
        await conn.run("DELETE FROM risk_assessments WHERE computed_at_ms < $1", [cutoff]);
        await conn.run("DELETE FROM risk_rounds WHERE round_ms < $1", [cutoff]);
      }
      await conn.run("COMMIT");
    } catch (err) {
      await conn.run("ROLLBACK").catch(() => {});
      throw err;
    }
  }
}

/** A risk_assessments row (as DuckDB returns it) as a RiskAssessment. */
export function assessmentFromRow(r: Record<string, unknown>): RiskAssessment {
  const n = (v: unknown) => (v === null || v === undefined ? null : num(v));
  return {
    computed_at_ms: num(r["computed_at_ms"]),
    vm_uuid: String(r["vm_uuid"]),
    vm_name: String(r["vm_name"]),
    agent_id: String(r["agent_id"]),
    fingerprint: String(r["fingerprint"]),
    title: String(r["title"]),
    class: String(r["class"]),
    source: r["source"] as RiskAssessment["source"],
    status: r["status"] as AssessmentStatus,
    probability: n(r["probability"]),
    confidence: num(r["confidence"]),
    confidence_level: r["confidence_level"] as Confidence["level"],
    time_to_failure_h: n(r["time_to_failure_h"]),
    horizon_h: num(r["horizon_h"]),
    dimension: String(r["dimension"]),
    boundary: num(r["boundary"]),
    boundary_uncertainty: num(r["boundary_uncertainty"]),
    level: n(r["level"]),
    slope_per_h: n(r["slope_per_h"]),
    forecast: n(r["forecast"]),
    forecast_error: n(r["forecast_error"]),
    samples: num(r["samples"]),
    runs: num(r["runs"]),
    failing_runs: num(r["failing_runs"]),
    contradicting_runs: num(r["contradicting_runs"]),
    run_ids: parseJson(r["run_ids"], []),
    fleet_peers: parseJson(r["fleet_peers"], []),
    explanation: String(r["explanation"]),
    mitigations: parseJson(r["mitigations"], []),
    ...productionFields(parseJson<Record<string, unknown>>(r["detail"], {})),
  };
}

/** A stored precursor sighting, unless it was not counted (rows from before `counted` counted). */
function countedPrecursor(s: ProductionSighting | undefined): ProductionSighting | null {
  return s && s.counted !== false ? s : null;
}

/** The detail JSON and the fields read from it (production sightings, failing unstressed). */
function productionFields(detail: Record<string, unknown>) {
  return {
    detail,
    precursor: countedPrecursor(detail["precursor"] as ProductionSighting | undefined),
    observed_in_production: detail["production_failure"] !== undefined,
    fails_unstressed: detail["unstressed"] !== undefined,
  };
}

/** Filters of the assessment reads; `vm` is a VM's UUID or name. */
export interface AssessmentFilter {
  vm?: string | undefined;
  fingerprint?: string | undefined;
  class?: string | undefined;
  /** Rounds from this time on (ms since the epoch). */
  sinceMs?: number | undefined;
  limit?: number | undefined;
  offset?: number | undefined;
}

async function readAssessments(
  db: Queryable,
  from: string,
  order: string,
  f: AssessmentFilter,
): Promise<RiskAssessment[]> {
  const w = new Where()
    .add((p) => `(vm_uuid = ${p} OR vm_name = ${p})`, f.vm)
    .add((p) => `fingerprint = ${p}`, f.fingerprint)
    .add((p) => `class = ${p}`, f.class)
    .add((p) => `computed_at_ms >= ${p}`, f.sinceMs);
  const where = w.sql();
  const limit = w.limit(f.limit ?? 1000, f.offset ?? 0);
  const rows = await db.query(`SELECT * FROM ${from} ${where} ORDER BY ${order} ${limit}`, w.values);
  return rows.map(assessmentFromRow);
}

/**
 * The latest round's assessments, one per VM and signature, highest probability first (the read
 * interface for the CLI and GET /api/v1/risk).
 */
export function currentRisk(db: Queryable, f: AssessmentFilter = {}): Promise<RiskAssessment[]> {
  return readAssessments(
    db,
    "risk_current",
    "probability DESC NULLS LAST, confidence DESC, vm_name, fingerprint",
    f,
  );
}

/** Assessments over time (of one VM with `vm`), newest round first. */
export function riskHistory(db: Queryable, f: AssessmentFilter = {}): Promise<RiskAssessment[]> {
  return readAssessments(
    db,
    "risk_assessments",
    "computed_at_ms DESC, probability DESC NULLS LAST, vm_name, fingerprint",
    f,
  );
}
