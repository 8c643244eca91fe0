// Where the API and the reports get risk from: the tables the risk engine (issue 8,
// collector/src/risk) writes by migration 2. risk_assessments holds one row per (round, VM,
// signature); a VM's risk in a round is its most probable signature's (score = max probability),
// with the signatures, boundaries, mitigations and explanations of all its rows. The risk_current
// view is the newest round. alerts holds one row per alert. If those tables are missing (a database
// from before migration 2) every answer is empty rather than an error.
import type { Alert, RiskAssessment, RiskBoundary, RiskScore, RiskSignature } from "@shadowvm/shared";
import {
  type AssessmentFilter,
  type RiskAssessment as AssessmentRow,
  currentRisk,
  riskHistory,
} from "../risk/risk-engine.js";
import type { Queryable } from "./reader-pool.js";

export type { AssessmentFilter, AssessmentRow };

export interface AlertFilter {
  vm_uuid?: string | undefined;
  state?: string | undefined;
  severity?: string | undefined;
  limit: number;
  offset: number;
}

export interface RiskSource {
  /** The newest round's assessment of every VM that has one. */
  currentRisk(): Promise<RiskAssessment[]>;
  /** The same, scores only (cheap: what the VM list and the ranking need). */
  currentScores(): Promise<RiskScore[]>;
  /** One VM's assessments per round, newest first. */
  riskHistory(
    agentId: string,
    vmUuid: string,
    options: { since_ms?: number | undefined; limit: number },
  ): Promise<RiskAssessment[]>;
  /** The engine's rows, one per VM and signature: of the newest round, or with `history` of every round. */
  assessments(filter: AssessmentFilter, history: boolean): Promise<AssessmentRow[]>;
  alerts(filter: AlertFilter): Promise<Alert[]>;
}

const n = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Per (round, VM): rows grouped, the most probable signature first. `src` is a FROM/WHERE clause. */
const aggregate = (src: string) => `
  SELECT agent_id, vm_uuid, computed_at_ms,
         max(probability) AS score,
         arg_max(confidence, coalesce(probability, -1)) AS confidence,
         arg_max(confidence_level, coalesce(probability, -1)) AS level,
         to_json(list({'fingerprint': fingerprint, 'title': title, 'class': class, 'status': status,
                       'probability': probability, 'confidence': confidence, 'confidence_level': confidence_level,
                       'time_to_failure_h': time_to_failure_h} ORDER BY probability DESC NULLS LAST)) AS signatures,
         to_json(list({'fingerprint': fingerprint, 'dimension': dimension, 'boundary': boundary,
                       'boundary_uncertainty': boundary_uncertainty, 'level': level, 'forecast': forecast,
                       'horizon_h': horizon_h}
                      ORDER BY probability DESC NULLS LAST)) AS boundary,
         to_json(flatten(list(CAST(mitigations AS JSON[]) ORDER BY probability DESC NULLS LAST))) AS mitigations,
         to_json(list(explanation ORDER BY probability DESC NULLS LAST)) AS explanation
    ${src}
   GROUP BY agent_id, vm_uuid, computed_at_ms`;

function parse(v: unknown): unknown {
  if (typeof v !== "string") return v ?? [];
  try {
    return JSON.parse(v);
  } catch {
    return [];
  }
}

/** The VM's score and confidence, from a row of risk_current or risk_history. */
function riskScore(r: Record<string, unknown>): RiskScore {
  return {
    agent_id: String(r["agent_id"]),
    vm_uuid: String(r["vm_uuid"]),
    assessed_at_ms: Number(r["computed_at_ms"]),
    score: n(r["score"]),
    confidence: n(r["confidence"]),
    level: r["level"] === null || r["level"] === undefined ? null : String(r["level"]),
  };
}

function assessment(r: Record<string, unknown>): RiskAssessment {
  return {
    ...riskScore(r),
    signatures: parse(r["signatures"]) as RiskSignature[],
    boundary: parse(r["boundary"]) as RiskBoundary[],
    mitigations: parse(r["mitigations"]) as unknown[],
    explanation: parse(r["explanation"]) as string[],
  };
}

export class DuckDbRiskSource implements RiskSource {
  private tables: { at: number; names: Set<string> } | undefined;

  constructor(private readonly db: Queryable) {}

  /** Which of the risk tables exist (cached 5 s, so a migration applied meanwhile is picked up). */
  private async has(name: string): Promise<boolean> {
    if (!this.tables || Date.now() - this.tables.at > 5000) {
      const rows = await this.db.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_name IN ('risk_assessments', 'risk_current', 'alerts')",
      );
      this.tables = { at: Date.now(), names: new Set(rows.map((r) => String(r["table_name"]))) };
    }
    return this.tables.names.has(name);
  }

  async currentRisk(): Promise<RiskAssessment[]> {
    if (!(await this.has("risk_current"))) return [];
    return (await this.db.query(aggregate("FROM risk_current"))).map(assessment);
  }

  async currentScores(): Promise<RiskScore[]> {
    if (!(await this.has("risk_current"))) return [];
    const rows = await this.db.query(
      `SELECT agent_id, vm_uuid, max(computed_at_ms) AS computed_at_ms, max(probability) AS score,
              arg_max(confidence, coalesce(probability, -1)) AS confidence,
              arg_max(confidence_level, coalesce(probability, -1)) AS level
         FROM risk_current GROUP BY agent_id, vm_uuid`,
    );
    return rows.map(riskScore);
  }

  async riskHistory(
    agentId: string,
    vmUuid: string,
    options: { since_ms?: number | undefined; limit: number },
  ): Promise<RiskAssessment[]> {
    if (!(await this.has("risk_assessments"))) return [];
    const rows = await this.db.query(
      `${aggregate("FROM risk_assessments WHERE agent_id = $1 AND vm_uuid = $2 AND computed_at_ms >= $3")}
       ORDER BY computed_at_ms DESC LIMIT $4`,
      [agentId, vmUuid, options.since_ms ?? 0, options.limit],
    );
    return rows.map(assessment);
  }

  async assessments(filter: AssessmentFilter, history: boolean): Promise<AssessmentRow[]> {
    if (!(await this.has(history ? "risk_assessments" : "risk_current"))) return [];
    return history ? riskHistory(this.db, filter) : currentRisk(this.db, filter);
  }

  async alerts(f: AlertFilter): Promise<Alert[]> {
    if (!(await this.has("alerts"))) return [];
    const where: string[] = [];
    const values: (string | number)[] = [];
    for (const [col, v] of [
      ["vm_uuid", f.vm_uuid],
      ["status", f.state],
      ["severity", f.severity],
    ] as const) {
      if (v === undefined) continue;
      values.push(v);
      where.push(`${col} = $${values.length}`);
    }
    values.push(f.limit, f.offset);
    const rows = await this.db.query(
      `SELECT alert_id, vm_uuid, vm_name, fingerprint, title, severity, status, summary, mitigation, probability,
              confidence, starts_at_ms, ends_at_ms
         FROM alerts ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY starts_at_ms DESC, alert_id LIMIT $${values.length - 1} OFFSET $${values.length}`,
      values,
    );
    return rows.map((r) => ({
      id: String(r["alert_id"]),
      vm_uuid: String(r["vm_uuid"]),
      vm_name: String(r["vm_name"]),
      fingerprint: String(r["fingerprint"]),
      title: String(r["title"]),
      severity: String(r["severity"]),
      state: String(r["status"]),
      message: String(r["summary"]),
      mitigation: String(r["mitigation"]),
      probability: n(r["probability"]),
      confidence: Number(r["confidence"]),
      created_at_ms: Number(r["starts_at_ms"]),
      resolved_at_ms: n(r["ends_at_ms"]),
    }));
  }
}
