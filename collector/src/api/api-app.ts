// The collector's HTTP query API, /api/v1 (docs/api.md). Every route is declared with
// @hono/zod-openapi: its parameters and bodies are validated by its schemas, and the OpenAPI
// document at /api/v1/openapi.json is generated from the same schemas, so the two cannot drift.
// Errors are RFC 9457 problem details (application/problem+json). Reads go through a pool of
// connections of the collector's own DuckDB instance (./reader-pool.ts), never blocking ingest.
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { getConnInfo } from "@hono/node-server/conninfo";
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Page, PageLinks, RiskHistory } from "@shadowvm/shared";
import type { Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { ReportService } from "../reports/report-service.js";
import type { RetentionControl } from "../store/retention.js";
import type { ApiScope, ApiTokenStore } from "./api-token-store.js";
import * as q from "./fleet-queries.js";
import type { Queryable } from "./reader-pool.js";
import type { AssessmentFilter, RiskSource } from "./risk-source.js";

export const API_PREFIX = "/api/v1";

export interface ApiOptions {
  db: Queryable;
  risk: RiskSource;
  tokens: ApiTokenStore;
  reports: ReportService;
  /** Data retention (GET /retention, POST /retention/prune); absent: those routes answer 404. */
  retention?: RetentionControl;
  rateLimitPerMinute: number;
  maxBodyBytes: number;
  defaultPageSize: number;
  maxPageSize: number;
  /** Clock for the rate limiter (tests). */
  now?: () => number;
}

type Env = { Variables: { scope: ApiScope; tokenId: string } };

/** An error answered as application/problem+json. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }
}

function problemResponse(c: Context, p: Problem): Response {
  const body = {
    type: `https://shadowvm.dev/problems/${p.title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`,
    title: p.title,
    status: p.status,
    detail: p.detail,
    instance: c.req.path,
    ...p.extra,
  };
  return new Response(JSON.stringify(body), {
    status: p.status,
    headers: { "content-type": "application/problem+json", ...p.headers },
  });
}

// ---------------------------------------------------------------- schemas

const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    instance: z.string(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  })
  .openapi("Problem");

const problems = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((code) => [
      code,
      {
        description:
          {
            400: "invalid request (parameters or body)",
            401: "missing or invalid API token",
            403: "the token's scope does not allow this",
            404: "no such resource",
            413: "request body too large",
            429: "rate limit exceeded",
          }[code] ?? "error",
        content: { "application/problem+json": { schema: ProblemSchema } },
      },
    ]),
  );
const READ_ERRORS = problems(400, 401, 404, 429);

const PageLinksSchema = z
  .object({
    limit: z.number().int(),
    offset: z.number().int(),
    next: z.string().nullable().openapi({ description: "URL of the next page; null on the last page" }),
  })
  .openapi("Page");

const list = <T extends z.ZodTypeAny>(item: T, name: string) =>
  z.object({ items: z.array(item), page: PageLinksSchema }).openapi(name);

const ms = (description: string) =>
  z.number().openapi({ description: `${description} (ms since the epoch)` });
const json = z.unknown().openapi({ description: "JSON as stored" });

const HostSchema = z
  .object({
    agent_id: z.string(),
    hostname: z.string(),
    cpus: z.number(),
    memory_bytes: z.number(),
    kernel: z.string(),
    hypervisor_driver: z.string(),
    hypervisor_version: z.string(),
    capabilities: z.array(z.string()),
    vm_uuids: z.array(z.string()),
    vm_count: z.number(),
    updated_at_ms: ms("last inventory"),
  })
  .openapi("Host");

const VmRiskSchema = z
  .object({
    score: z.number().nullable(),
    confidence: z.number().nullable(),
    level: z.string().nullable(),
    assessed_at_ms: ms("assessment time"),
  })
  .openapi("VmRisk");

const VmSchema = z
  .object({
    agent_id: z.string(),
    uuid: z.string(),
    name: z.string(),
    hostname: z.string().nullable(),
    state: z.string(),
    vcpus: z.number(),
    memory_mb: z.number(),
    machine_type: z.string(),
    labels: z.record(z.string(), z.string()),
    updated_at_ms: ms("last inventory"),
    risk: VmRiskSchema.nullable().openapi({ description: "current risk; null when not assessed" }),
  })
  .openapi("Vm");

const VmDetailSchema = VmSchema.extend({ disks: json, nics: json, pid: z.number() }).openapi("VmDetail");

const RiskAssessmentSchema = z
  .object({
    agent_id: z.string(),
    vm_uuid: z.string(),
    assessed_at_ms: ms("the risk round"),
    score: z
      .number()
      .nullable()
      .openapi({ description: "highest failure probability over the VM's signatures" }),
    confidence: z.number().nullable(),
    level: z.string().nullable().openapi({ description: "confidence level of the most probable signature" }),
    signatures: z.array(
      z.object({
        fingerprint: z.string(),
        title: z.string(),
        class: z.string(),
        status: z.string(),
        probability: z.number().nullable(),
        confidence: z.number(),
        confidence_level: z.string(),
        time_to_failure_h: z.number().nullable(),
      }),
    ),
    boundary: z.array(
      z.object({
        fingerprint: z.string(),
        dimension: z.string(),
        boundary: z.number(),
        boundary_uncertainty: z.number(),
        level: z.number().nullable(),
        forecast: z.number().nullable().openapi({ description: "operating point at the end of the horizon" }),
        horizon_h: z.number(),
      }),
    ),
    mitigations: z.array(z.unknown()),
    explanation: z.array(z.string()),
  })
  .openapi("RiskAssessment");

const AssessmentRowSchema = z
  .object({
    computed_at_ms: ms("the risk round"),
    agent_id: z.string(),
    vm_uuid: z.string(),
    vm_name: z.string(),
    fingerprint: z.string(),
    title: z.string(),
    class: z.string(),
    source: z.enum(["own", "fleet"]).openapi({
      description:
        "own: this VM's shadows; fleet: shadows of VMs sharing an image, kernel or app-stack label",
    }),
    status: z.string(),
    probability: z
      .number()
      .nullable()
      .openapi({ description: "of reaching the boundary within the horizon; null when no risk is claimed" }),
    confidence: z.number(),
    confidence_level: z.string(),
    time_to_failure_h: z.number().nullable(),
    horizon_h: z.number(),
    dimension: z.string(),
    boundary: z.number(),
    boundary_uncertainty: z.number(),
    level: z.number().nullable(),
    slope_per_h: z.number().nullable(),
    forecast: z.number().nullable(),
    forecast_error: z.number().nullable(),
    samples: z.number(),
    runs: z.number(),
    failing_runs: z.number(),
    contradicting_runs: z.number(),
    run_ids: z.array(z.string()),
    fleet_peers: z.array(
      z.object({ vm_uuid: z.string(), vm_name: z.string(), label: z.string(), value: z.string() }),
    ),
    explanation: z.string(),
    mitigations: z.array(z.object({ action: z.string(), because: z.string() })),
    detail: json,
    precursor: json.optional(),
    observed_in_production: z.boolean().optional(),
    fails_unstressed: z.boolean().optional(),
  })
  .openapi("RiskAssessmentRow");

const CaptureSchema = z
  .object({
    agent_id: z.string(),
    id: z.string(),
    vm_name: z.string(),
    vm_uuid: z.string(),
    started_at_ms: ms("start"),
    finished_at_ms: ms("end, 0 while running"),
    pause_ms: z.number(),
    memory_bytes: z.number(),
    disk_bytes: z.number(),
    stored_bytes: z.number(),
    new_bytes: z.number(),
    config_digest: z.string(),
    status: z.string(),
    error: z.string(),
  })
  .openapi("Capture");

const ShadowRunSchema = z
  .object({
    agent_id: z.string(),
    id: z.string(),
    campaign_id: z.string(),
    capture_id: z.string(),
    vm_name: z.string(),
    vm_uuid: z.string(),
    profile: json,
    strategy: z.string(),
    control: z.boolean(),
    started_at_ms: ms("start"),
    finished_at_ms: ms("end, 0 while running"),
    outcome: z.string(),
    failure_count: z.number(),
    notes: json,
  })
  .openapi("ShadowRun");

const FailureSchema = z
  .object({
    failure_id: z.string(),
    agent_id: z.string(),
    shadow_run_id: z.string(),
    title: z.string(),
    class: z.string(),
    frame: z.string(),
    fingerprint: z.string(),
    corrupted: z.boolean(),
    evidence: json,
    offset_ms: z.number(),
    source: z.string(),
    received_at_ms: ms("received"),
    vm_uuid: z.string().nullable(),
    vm_name: z.string().nullable(),
    profile: json,
    occurred_at_ms: ms("when: the run's start + offset_ms"),
  })
  .openapi("Failure");

const ShadowRunDetailSchema = ShadowRunSchema.extend({ failures: z.array(FailureSchema) }).openapi(
  "ShadowRunDetail",
);

const SignatureSchema = z
  .object({
    fingerprint: z.string(),
    title: z.string(),
    class: z.string(),
    count: z.number(),
    first_seen_ms: ms("first failure"),
    last_seen_ms: ms("last failure"),
    agents: z.array(z.string()).openapi({ description: "where: agents (hosts) that reported it" }),
    vms: z.array(z.string()).openapi({ description: "where: production VM UUIDs whose shadows hit it" }),
    profiles: json,
  })
  .openapi("Signature");

const OccurrenceSchema = z
  .object({
    agent_id: z.string(),
    vm_uuid: z.string().nullable(),
    vm_name: z.string().nullable(),
    failures: z.number(),
    runs: z.number(),
    first_ms: ms("first occurrence"),
    last_ms: ms("last occurrence"),
  })
  .openapi("SignatureOccurrence");

const AlertSchema = z
  .object({
    id: z.string(),
    vm_uuid: z.string(),
    vm_name: z.string(),
    fingerprint: z.string(),
    title: z.string(),
    severity: z.string(),
    state: z.string(),
    message: z.string(),
    mitigation: z.string(),
    probability: z.number().nullable(),
    confidence: z.number(),
    created_at_ms: ms("alert start"),
    resolved_at_ms: z.number().nullable(),
  })
  .openapi("Alert");

const ReportMetaSchema = z
  .object({
    id: z.string(),
    generated_at_ms: ms("generated"),
    trigger: z.enum(["schedule", "api", "cli"]),
    vms: z.number(),
    at_risk_vms: z.number(),
    files: z.record(z.string(), z.number()).openapi({ description: "bytes per format" }),
    links: z.record(z.string(), z.string()).openapi({ description: "download URL per format" }),
  })
  .openapi("Report");

const PrunedTableSchema = z
  .object({
    table: z.string(),
    key: z.string().openapi({ description: "the retention.* key that keeps this table's rows" }),
    days: z.number(),
    cutoff_ms: ms("rows older than this"),
    rows: z.number().openapi({ description: "rows deleted (dry run: that would be deleted)" }),
  })
  .openapi("PrunedTable");

const PruneResultSchema = z
  .object({
    at_ms: ms("prune time"),
    dry_run: z.boolean(),
    duration_ms: z.number(),
    tables: z.array(PrunedTableSchema).openapi({ description: "one per table with a retention" }),
  })
  .openapi("PruneResult");

const RetentionSchema = z
  .object({
    policy: z.record(z.string(), z.number()).openapi({ description: "retention.*_days (0 = forever)" }),
    schedule: z.string().openapi({ description: 'node-cron expression ("" = at start only)' }),
    last: PruneResultSchema.nullable().openapi({ description: "the newest prune since start" }),
    last_error: z.string().nullable(),
    due: PruneResultSchema.openapi({ description: "a dry run now: what the next prune would delete" }),
  })
  .openapi("Retention");

// ---------------------------------------------------------------- parameters

const nonEmpty = z.string().min(1).max(256);
const boolParam = z
  .enum(["true", "false"])
  .transform((v) => v === "true")
  .openapi({ type: "string", enum: ["true", "false"] });
const timeParams = {
  since_ms: z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .openapi({ description: "from (ms since the epoch, inclusive)" }),
  until_ms: z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .openapi({ description: "to (ms since the epoch, exclusive)" }),
};

function pageParams(o: ApiOptions) {
  return {
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(o.maxPageSize)
      .default(o.defaultPageSize)
      .openapi({ description: `page size (1..${o.maxPageSize})` }),
    offset: z.coerce.number().int().min(0).max(10_000_000).default(0),
  };
}

/** A page from a read that takes a limit and an offset: one row more tells whether another follows. */
async function pageOf<T>(
  p: Page,
  read: (limit: number, offset: number) => Promise<T[]>,
): Promise<{ items: T[]; more: boolean }> {
  const items = await read(p.limit + 1, p.offset);
  return { items: items.slice(0, p.limit), more: items.length > p.limit };
}

/** The page object with a `next` link: this URL with offset advanced. */
function page(c: Context, p: Page, more: boolean): PageLinks {
  let next: string | null = null;
  if (more) {
    const url = new URL(c.req.url);
    url.searchParams.set("limit", String(p.limit));
    url.searchParams.set("offset", String(p.offset + p.limit));
    next = `${url.pathname}${url.search}`;
  }
  return { limit: p.limit, offset: p.offset, next };
}

const notFound = (what: string, id: string) =>
  new Problem(404, "Not Found", `no ${what} ${JSON.stringify(id)}`);

// ---------------------------------------------------------------- app

export function apiApp(o: ApiOptions): OpenAPIHono<Env> {
  const now = o.now ?? Date.now;
  const app = new OpenAPIHono<Env>({
    defaultHook: (result) => {
      if (!result.success) {
        const errors = result.error.issues.map((i) => ({
          path: i.path.map(String).join(".") || "(root)",
          message: i.message,
        }));
        throw new Problem(
          400,
          "Bad Request",
          `invalid request: ${errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
          { errors },
        );
      }
    },
  });

  app.onError((err, c) => {
    if (err instanceof Problem) return problemResponse(c, err);
    if (err instanceof HTTPException) {
      return problemResponse(
        c,
        new Problem(err.status, err.status === 400 ? "Bad Request" : "Error", err.message),
      );
    }
    console.error(err);
    return problemResponse(
      c,
      new Problem(500, "Internal Server Error", "the query failed; see the collector log"),
    );
  });
  app.notFound((c) =>
    problemResponse(c, new Problem(404, "Not Found", `no route ${c.req.method} ${c.req.path}`)),
  );

  // Authentication and rate limit, in one step: the token is checked first (every /api/v1 route
  // but the OpenAPI document needs one), then the request counts against a fixed one-minute window
  // of that token, or of the client address when there is no valid token (so failed attempts are
  // limited too, and made-up token ids get no budget of their own). Over the limit: 429; else a
  // bad token: 401.
  const windows = new Map<string, { start: number; count: number }>();
  app.use(`${API_PREFIX}/*`, async (c, next) => {
    const header = c.req.header("authorization");
    const unauthorized = (detail: string) =>
      new Problem(401, "Unauthorized", detail, {}, { "www-authenticate": 'Bearer realm="shadowvm"' });
    let failure: Problem | undefined;
    let tokenId: string | undefined;
    if (c.req.path !== `${API_PREFIX}/openapi.json`) {
      const m = header ? /^Bearer (\S+)$/.exec(header) : null;
      if (!header) failure = unauthorized("an API token is required: Authorization: Bearer svma_...");
      else if (!m) failure = unauthorized("the Authorization header must be: Bearer <API token>");
      else {
        const check = o.tokens.check(m[1]!);
        if (!check.ok)
          failure = unauthorized(
            `the API token is ${check.reason === "mismatch" ? "unknown" : check.reason}`,
          );
        else {
          tokenId = check.token.id;
          c.set("scope", check.token.scope);
          c.set("tokenId", check.token.id);
        }
      }
    }
    let addr = "unknown";
    try {
      addr = getConnInfo(c).remote.address ?? "unknown";
    } catch {
      // not served by @hono/node-server (app.request in tests)
    }
    const key = tokenId ? `t:${tokenId}` : `a:${addr}`;
    const t = now();
    let w = windows.get(key);
    if (!w || t - w.start >= 60_000) {
      w = { start: t, count: 0 };
      windows.set(key, w);
      if (windows.size > 10_000) for (const [k, v] of windows) if (t - v.start >= 60_000) windows.delete(k);
    }
    w.count++;
    const remaining = Math.max(0, o.rateLimitPerMinute - w.count);
    const reset = Math.ceil((w.start + 60_000 - t) / 1000);
    const limitHeaders = {
      "ratelimit-limit": String(o.rateLimitPerMinute),
      "ratelimit-remaining": String(remaining),
      "ratelimit-reset": String(reset),
    };
    if (w.count > o.rateLimitPerMinute) {
      throw new Problem(
        429,
        "Too Many Requests",
        `rate limit of ${o.rateLimitPerMinute} requests per minute exceeded; retry in ${reset} s`,
        {},
        { "retry-after": String(reset), ...limitHeaders },
      );
    }
    if (failure)
      throw new Problem(
        failure.status,
        failure.title,
        failure.detail,
        {},
        { ...failure.headers, ...limitHeaders },
      );
    await next();
    for (const [k, v] of Object.entries(limitHeaders)) c.res.headers.set(k, v);
  });

  app.use(
    `${API_PREFIX}/*`,
    bodyLimit({
      maxSize: o.maxBodyBytes,
      onError: () => {
        throw new Problem(
          413,
          "Payload Too Large",
          `the request body is larger than ${o.maxBodyBytes} bytes`,
        );
      },
    }),
  );

  const requireAdmin = (c: Context<Env>) => {
    if (c.get("scope") !== "admin")
      throw new Problem(403, "Forbidden", "this needs an API token with the admin scope (this one is read)");
  };

  const security = [{ bearer: [] }];
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "API token (svma_...) from `shadowvm-collector api-token create --scope read|admin`",
  });
  const P = pageParams(o);

  /**
   * A paginated list: GET <path>?limit&offset&<query>, answered with `{items, page}` where
   * `page.next` links the following page. `fetch` gets the filters (the query without limit and
   * offset) and the page, and says whether more items follow.
   */
  const listRoute = <Q extends z.ZodRawShape, I extends z.ZodTypeAny>(r: {
    path: string;
    tag: string;
    summary: string;
    query: Q;
    description: string;
    item: I;
    /** Name of the list's schema in the OpenAPI document. */
    name: string;
    fetch: (filters: z.output<z.ZodObject<Q>>, page: Page) => Promise<{ items: z.input<I>[]; more: boolean }>;
  }) =>
    app.openapi(
      createRoute({
        method: "get",
        path: `${API_PREFIX}${r.path}`,
        tags: [r.tag],
        summary: r.summary,
        security,
        request: { query: z.object({ ...P, ...r.query }) },
        responses: {
          200: {
            description: r.description,
            content: { "application/json": { schema: list(r.item, r.name) } },
          },
          ...READ_ERRORS,
        },
      }),
      async (c) => {
        const { limit, offset, ...filters } = c.req.valid("query") as { limit: number; offset: number };
        const res = await r.fetch(filters as z.output<z.ZodObject<Q>>, { limit, offset });
        return c.json({ items: res.items, page: page(c, { limit, offset }, res.more) } as never, 200);
      },
    );

  // hosts
  listRoute({
    path: "/hosts",
    tag: "inventory",
    summary: "Hypervisor hosts (one per agent)",
    query: { hostname: nonEmpty.optional() },
    description: "hosts",
    item: HostSchema,
    name: "HostList",
    fetch: (f, p) => q.listHosts(o.db, f, p),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/hosts/{agent_id}`,
      tags: ["inventory"],
      summary: "One host",
      security,
      request: { params: z.object({ agent_id: nonEmpty }) },
      responses: {
        200: { description: "the host", content: { "application/json": { schema: HostSchema } } },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const { agent_id } = c.req.valid("param");
      const h = await q.getHost(o.db, agent_id);
      if (!h) throw notFound("host", agent_id);
      return c.json(h, 200);
    },
  );

  // VMs and risk
  listRoute({
    path: "/vms",
    tag: "vms",
    summary: "Production VMs with their current risk (highest risk first by default)",
    query: {
      agent_id: nonEmpty.optional(),
      name: nonEmpty.optional(),
      state: nonEmpty.optional(),
      assessed: boolParam
        .optional()
        .openapi({ description: "true: only VMs the risk engine assessed; false: only the others" }),
      min_score: z.coerce.number().min(0).max(1).optional(),
      sort: z.enum(["risk", "name"]).default("risk"),
    },
    description: "VMs",
    item: VmSchema,
    name: "VmList",
    fetch: (f, p) => q.listVms(o.db, o.risk, f, p),
  });
  const vmParams = {
    params: z.object({ uuid: nonEmpty }),
  };
  const vmQuery = {
    agent_id: nonEmpty.optional().openapi({ description: "when two hosts report the same UUID" }),
  };
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/vms/{uuid}`,
      tags: ["vms"],
      summary: "One VM with its current risk",
      security,
      request: { ...vmParams, query: z.object(vmQuery) },
      responses: {
        200: { description: "the VM", content: { "application/json": { schema: VmDetailSchema } } },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const { uuid } = c.req.valid("param");
      const vm = await q.getVm(o.db, o.risk, uuid, c.req.valid("query").agent_id);
      if (!vm) throw notFound("VM", uuid);
      return c.json(vm, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/vms/{uuid}/risk`,
      tags: ["vms"],
      summary: "A VM's risk history (newest first)",
      security,
      request: {
        ...vmParams,
        query: z.object({ ...vmQuery, since_ms: timeParams.since_ms, limit: P.limit }),
      },
      responses: {
        200: {
          description: "assessments",
          content: {
            "application/json": {
              schema: z.object({
                vm_uuid: z.string(),
                agent_id: z.string(),
                items: z.array(RiskAssessmentSchema),
              }),
            },
          },
        },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const { uuid } = c.req.valid("param");
      const { agent_id, since_ms, limit } = c.req.valid("query");
      const vm = await q.getVm(o.db, o.risk, uuid, agent_id);
      if (!vm) throw notFound("VM", uuid);
      const items = await o.risk.riskHistory(vm.agent_id, vm.uuid, {
        limit,
        ...(since_ms !== undefined ? { since_ms } : {}),
      });
      return c.json({ vm_uuid: vm.uuid, agent_id: vm.agent_id, items } satisfies RiskHistory, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/vms/{uuid}/risk/explanation`,
      tags: ["vms"],
      summary: "Why a VM is at risk: the newest assessment and the shadow evidence behind it",
      security,
      request: { ...vmParams, query: z.object(vmQuery) },
      responses: {
        200: {
          description: "explanation",
          content: {
            "application/json": {
              schema: z
                .object({
                  vm: VmSchema,
                  assessment: RiskAssessmentSchema.nullable(),
                  evidence: z.object({
                    runs: z
                      .record(z.string(), z.number())
                      .openapi({ description: "shadow runs per outcome" }),
                    signatures: z.array(
                      z.object({
                        fingerprint: z.string(),
                        title: z.string(),
                        class: z.string(),
                        failures: z.number(),
                        last_ms: z.number(),
                      }),
                    ),
                  }),
                })
                .openapi("RiskExplanation"),
            },
          },
        },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const { uuid } = c.req.valid("param");
      const vm = await q.getVm(o.db, o.risk, uuid, c.req.valid("query").agent_id);
      if (!vm) throw notFound("VM", uuid);
      const [history, runs, sigs] = await Promise.all([
        o.risk.riskHistory(vm.agent_id, vm.uuid, { limit: 1 }),
        o.db.query(
          "SELECT outcome, count(*)::BIGINT AS n FROM shadow_runs WHERE agent_id = $1 AND vm_uuid = $2 GROUP BY outcome",
          [vm.agent_id, vm.uuid],
        ),
        q.vmSignatureCounts(o.db, vm.agent_id, vm.uuid, 50),
      ]);
      const { disks: _d, nics: _n, pid: _p, ...vmOut } = vm;
      return c.json(
        {
          vm: vmOut,
          assessment: history[0] ?? null,
          evidence: {
            runs: Object.fromEntries(runs.map((r) => [String(r["outcome"]), Number(r["n"])])),
            signatures: sigs,
          },
        },
        200,
      );
    },
  );

  // captures and shadow runs
  listRoute({
    path: "/captures",
    tag: "shadows",
    summary: "Captures of production VMs (newest first)",
    query: {
      ...timeParams,
      vm: nonEmpty.optional().openapi({ description: "VM UUID or name" }),
      agent_id: nonEmpty.optional(),
      status: z.enum(["running", "ok", "failed", "aborted"]).optional(),
    },
    description: "captures",
    item: CaptureSchema,
    name: "CaptureList",
    fetch: (f, p) => q.listCaptures(o.db, f, p),
  });
  listRoute({
    path: "/shadow-runs",
    tag: "shadows",
    summary: "Shadow runs, filtered by VM, profile, outcome and time (newest first)",
    query: {
      ...timeParams,
      vm: nonEmpty.optional().openapi({ description: "VM UUID or name" }),
      agent_id: nonEmpty.optional(),
      outcome: z.enum(q.RUN_OUTCOMES).optional(),
      strategy: nonEmpty.optional(),
      campaign_id: nonEmpty.optional(),
      profile: nonEmpty.optional().openapi({
        description: 'text the profile\'s JSON contains, e.g. disk_io_error or "cpu_load":0.9',
      }),
      control: boolParam.optional(),
    },
    description: "shadow runs",
    item: ShadowRunSchema,
    name: "ShadowRunList",
    fetch: (f, p) => q.listShadowRuns(o.db, f, p),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/shadow-runs/{id}`,
      tags: ["shadows"],
      summary: "One shadow run with its failures",
      security,
      request: { params: z.object({ id: nonEmpty }), query: z.object({ agent_id: nonEmpty.optional() }) },
      responses: {
        200: { description: "the run", content: { "application/json": { schema: ShadowRunDetailSchema } } },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const run = await q.getShadowRun(o.db, id, c.req.valid("query").agent_id);
      if (!run) throw notFound("shadow run", id);
      const failures = await q.listFailures(
        o.db,
        { shadow_run_id: run.id, agent_id: run.agent_id },
        { limit: 1000, offset: 0 },
      );
      return c.json({ ...run, failures: failures.items }, 200);
    },
  );

  // failures and signatures
  listRoute({
    path: "/failures",
    tag: "failures",
    summary: "Failures found in shadows, with where (VM, run, profile) and when (newest first)",
    query: {
      ...timeParams,
      fingerprint: nonEmpty.optional(),
      class: nonEmpty.optional(),
      vm: nonEmpty.optional().openapi({ description: "VM UUID or name" }),
      shadow_run_id: nonEmpty.optional(),
      agent_id: nonEmpty.optional(),
    },
    description: "failures",
    item: FailureSchema,
    name: "FailureList",
    fetch: (f, p) => q.listFailures(o.db, f, p),
  });
  listRoute({
    path: "/signatures",
    tag: "failures",
    summary: "Failure signatures over the fleet (most failures first)",
    query: {
      ...timeParams,
      class: nonEmpty.optional(),
      vm: nonEmpty.optional().openapi({ description: "VM UUID" }),
      q: nonEmpty.optional().openapi({ description: "text in the title, or an exact fingerprint" }),
      sort: z.enum(["count", "last_seen"]).default("count"),
    },
    description: "signatures",
    item: SignatureSchema,
    name: "SignatureList",
    fetch: (f, p) => q.listSignatures(o.db, f, p),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/signatures/{fingerprint}`,
      tags: ["failures"],
      summary: "One signature with where and when it occurred (per production VM)",
      security,
      request: { params: z.object({ fingerprint: nonEmpty }) },
      responses: {
        200: {
          description: "the signature",
          content: {
            "application/json": {
              schema: SignatureSchema.extend({ occurrences: z.array(OccurrenceSchema) }).openapi(
                "SignatureDetail",
              ),
            },
          },
        },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const { fingerprint } = c.req.valid("param");
      const [s, occurrences] = await Promise.all([
        q.getSignature(o.db, fingerprint),
        q.signatureOccurrences(o.db, fingerprint),
      ]);
      if (!s) throw notFound("signature", fingerprint);
      return c.json({ ...s, occurrences }, 200);
    },
  );

  // alerts
  listRoute({
    path: "/alerts",
    tag: "risk",
    summary: "Alerts raised by the risk engine (newest first)",
    query: {
      vm: nonEmpty.optional().openapi({ description: "VM UUID" }),
      state: nonEmpty.optional(),
      severity: nonEmpty.optional(),
    },
    description: "alerts",
    item: AlertSchema,
    name: "AlertList",
    fetch: ({ vm, state, severity }, p) =>
      pageOf(p, (limit, offset) => o.risk.alerts({ vm_uuid: vm, state, severity, limit, offset })),
  });

  // risk assessments, one row per VM and signature (what `shadowvm-collector risk` prints)
  const assessmentQuery = {
    vm: nonEmpty.optional().openapi({ description: "VM UUID or name" }),
    fingerprint: nonEmpty.optional(),
    class: nonEmpty.optional(),
  };
  const assessmentPage = (f: Omit<AssessmentFilter, "limit" | "offset">, history: boolean, p: Page) =>
    pageOf(p, (limit, offset) => o.risk.assessments({ ...f, limit, offset }, history));
  listRoute({
    path: "/risk",
    tag: "risk",
    summary: "The newest risk round: one assessment per VM and signature, most probable first",
    query: assessmentQuery,
    description: "assessments",
    item: AssessmentRowSchema,
    name: "RiskAssessmentRowList",
    fetch: (f, p) => assessmentPage(f, false, p),
  });
  listRoute({
    path: "/risk/history",
    tag: "risk",
    summary: "Assessments of every round (of one VM with vm), newest round first",
    query: { ...assessmentQuery, since_ms: timeParams.since_ms },
    description: "assessments",
    item: AssessmentRowSchema,
    name: "RiskAssessmentRowHistory",
    fetch: ({ since_ms, ...f }, p) => assessmentPage({ ...f, sinceMs: since_ms }, true, p),
  });

  // reports
  const links = (id: string) =>
    Object.fromEntries(
      ["json", "csv", "parquet", "html"].map((f) => [f, `${API_PREFIX}/reports/${id}/${f}`]),
    );
  const withLinks = (m: ReturnType<ReportService["list"]>[number]) => ({ ...m, links: links(m.id) });
  listRoute({
    path: "/reports",
    tag: "reports",
    summary: "Risk reports (newest first)",
    query: {},
    description: "reports",
    item: ReportMetaSchema,
    name: "ReportList",
    fetch: async (_f, { limit, offset }) => {
      const all = o.reports.list();
      return { items: all.slice(offset, offset + limit).map(withLinks), more: all.length > offset + limit };
    },
  });
  app.openapi(
    createRoute({
      method: "post",
      path: `${API_PREFIX}/reports`,
      tags: ["reports"],
      summary: "Generate a report now (admin)",
      security,
      request: {
        body: {
          required: false,
          content: {
            "application/json": {
              schema: z
                .object({
                  at_risk_threshold: z
                    .number()
                    .min(0)
                    .max(1)
                    .optional()
                    .openapi({ description: "override reports.at_risk_threshold for this report" }),
                })
                .strict(),
            },
          },
        },
      },
      responses: {
        201: { description: "the new report", content: { "application/json": { schema: ReportMetaSchema } } },
        ...problems(400, 401, 403, 413, 429),
      },
    }),
    async (c) => {
      requireAdmin(c);
      const body = c.req.header("content-type")?.includes("json") ? c.req.valid("json") : {};
      const meta = await o.reports.generate(
        "api",
        body.at_risk_threshold !== undefined ? { atRiskThreshold: body.at_risk_threshold } : {},
      );
      c.header("location", `${API_PREFIX}/reports/${meta.id}`);
      return c.json(withLinks(meta), 201);
    },
  );
  const reportId = z
    .string()
    .regex(/^\d{8}T\d{9}Z-[0-9a-f]{4}$/, "a report id like 20261127T151200000Z-ab12");
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/reports/{id}`,
      tags: ["reports"],
      summary: "One report's metadata and links",
      security,
      request: { params: z.object({ id: reportId }) },
      responses: {
        200: { description: "the report", content: { "application/json": { schema: ReportMetaSchema } } },
        ...READ_ERRORS,
      },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      const m = o.reports.get(id);
      if (!m) throw notFound("report", id);
      return c.json(withLinks(m), 200);
    },
  );
  app.openapi(
    createRoute({
      method: "delete",
      path: `${API_PREFIX}/reports/{id}`,
      tags: ["reports"],
      summary: "Delete a report (admin)",
      security,
      request: { params: z.object({ id: reportId }) },
      responses: { 204: { description: "deleted" }, ...problems(400, 401, 403, 404, 429) },
    }),
    (c) => {
      requireAdmin(c);
      const { id } = c.req.valid("param");
      if (!o.reports.delete(id)) throw notFound("report", id);
      return c.body(null, 204);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/reports/{id}/{format}`,
      tags: ["reports"],
      summary: "Download a report as JSON, CSV (risk ranking), Parquet (risk ranking) or HTML (with charts)",
      security,
      request: { params: z.object({ id: reportId, format: z.enum(["json", "csv", "parquet", "html"]) }) },
      responses: {
        200: {
          description: "the file",
          content: {
            "application/json": { schema: z.unknown() },
            "text/csv": { schema: z.string() },
            "application/vnd.apache.parquet": { schema: z.string().openapi({ format: "binary" }) },
            "text/html": { schema: z.string() },
          },
        },
        ...READ_ERRORS,
      },
    }),
    (c) => {
      const { id, format } = c.req.valid("param");
      const f = o.reports.file(id, format);
      if (!f) throw notFound("report", id);
      const stream = Readable.toWeb(createReadStream(f.path)) as ReadableStream;
      return new Response(stream, {
        status: 200,
        headers: {
          "content-type": f.type,
          "content-disposition": `${format === "html" ? "inline" : "attachment"}; filename="${f.name}"`,
        },
      }) as never;
    },
  );

  // retention
  const retention = () => {
    if (!o.retention) throw new Problem(404, "Not Found", "retention is not run by this API");
    return o.retention;
  };
  app.openapi(
    createRoute({
      method: "get",
      path: `${API_PREFIX}/retention`,
      tags: ["retention"],
      summary: "Data retention: the policy, the last prune, and what the next one would delete",
      security,
      responses: {
        200: { description: "retention", content: { "application/json": { schema: RetentionSchema } } },
        ...READ_ERRORS,
      },
    }),
    async (c) => {
      const r = retention();
      const { policy, schedule, last, last_error } = r.status();
      return c.json(
        { policy, schedule, last: last ?? null, last_error: last_error ?? null, due: await r.dryRun() },
        200,
      );
    },
  );
  app.openapi(
    createRoute({
      method: "post",
      path: `${API_PREFIX}/retention/prune`,
      tags: ["retention"],
      summary: "Delete the data past its retention now (admin)",
      security,
      responses: {
        200: {
          description: "what was deleted",
          content: { "application/json": { schema: PruneResultSchema } },
        },
        ...problems(401, 403, 404, 429),
      },
    }),
    async (c) => {
      requireAdmin(c);
      return c.json(await retention().prune(), 200);
    },
  );

  app.doc31(`${API_PREFIX}/openapi.json`, {
    openapi: "3.1.0",
    info: {
      title: "shadowvm collector API",
      version: "1",
      description:
        "Fleet inventory, shadow results, failure signatures, risk, alerts, reports and data retention. See docs/api.md.",
    },
  });
  return app;
}
