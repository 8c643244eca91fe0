// The collector's query API end to end: a real collector (in-process, real DuckDB) receives real
// agent frames (the agent's spool and transport over WebSocket: inventory, telemetry, captures,
// shadow runs with failures, a lone failure, signatures), its risk engine assesses them, and every
// /api/v1 endpoint is exercised over HTTP: data, filters, pagination (following `next` links),
// authentication and scopes (tokens made and revoked with the CLI), validation errors as
// application/problem+json, body and rate limits, the OpenAPI document, reports in four formats,
// the report's HTML drawn in headless Chromium (screenshot kept under test-artifacts/), and the
// CLI's tables through the running collector's API.
import { execFile } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Spool } from "@shadowvm/agent/spool/spool";
import { CollectorSession } from "@shadowvm/agent/telemetry/collector-session";
import { CredentialsFileStore } from "@shadowvm/agent/telemetry/credentials";
import { SpoolShipper } from "@shadowvm/agent/telemetry/spool-shipper";
import { apiApp } from "@shadowvm/collector/api/api-app";
import { ReaderPool } from "@shadowvm/collector/api/reader-pool";
import { main as collectorMain } from "@shadowvm/collector/cli/main";
import { type CollectorConfig, collectorConfigSchema } from "@shadowvm/collector/config/collector-config";
import { type CollectorService, startCollector } from "@shadowvm/collector/service";
import { silentLogger, waitFor } from "@shadowvm/shared";
import { suite } from "uvu";
import * as assert from "uvu/assert";

const run = promisify(execFile);
const COLLECTOR_BIN = join(import.meta.dirname, "..", "..", "collector", "bin", "shadowvm-collector.js");
const test = suite("collector query API");
const dir = mkdtempSync(join(tmpdir(), "shadowvm-api-"));
const ARTIFACTS = join(import.meta.dirname, "..", "..", "test-artifacts");
const NOW = Date.now();
const H = 3_600_000;

let config: CollectorConfig;
let service: CollectorService;
let spool: Spool;
let shipper: SpoolShipper;
let base: string;
let readToken: string;
let adminToken: string;

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await collectorMain(
    [...args, "--data-dir", dir],
    { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) },
    {
      SHADOWVM_COLLECTOR__API__PORT: String(service?.apiPort ?? 0),
      SHADOWVM_COLLECTOR__API__HOST: "127.0.0.1",
      // the same page limit as the running collector's config (the CLI reads the collector's config)
      SHADOWVM_COLLECTOR__API__MAX_PAGE_SIZE: "100",
    },
  );
  return { code, out, err };
}

async function get(path: string, token: string | null = readToken, init: RequestInit = {}) {
  const headers: Record<string, string> = { ...(init.headers as Record<string, string>) };
  if (token) headers["authorization"] = `Bearer ${token}`;
  const res = await fetch(`${base}${path}`, { ...init, headers });
  const type = res.headers.get("content-type") ?? "";
  const body = type.includes("json") ? await res.json() : await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: the tests read arbitrary JSON bodies field by field
  return { status: res.status, type, body: body as any, headers: res.headers };
}

function assertProblem(r: Awaited<ReturnType<typeof get>>, status: number, detail?: RegExp) {
  assert.is(r.status, status, JSON.stringify(r.body));
  assert.is(r.type, "application/problem+json");
  assert.is(r.body.status, status);
  assert.type(r.body.title, "string");
  if (detail) assert.match(r.body.detail, detail);
}

// ------------------------------------------------------------------ the fleet the agent reports

const VMS = [
  { uuid: "11111111-0000-0000-0000-000000000001", name: "web-1", rising: true },
  { uuid: "11111111-0000-0000-0000-000000000002", name: "db-1", rising: false },
];
const FP_OOM = "fp-oom-0001";
const FP_HUNG = "fp-hung-0002";

function profile(cpu: number, memory: number) {
  return {
    cpu_load: cpu,
    memory_load: memory,
    io_load: 0.1,
    net_latency_ms: 0,
    net_loss_pct: 0,
    duration_s: 60,
  };
}

/** Everything one agent would send: 5 frames of inventory, 120 telemetry batches, 2 captures, 12 runs, 1 lone failure, 2 signatures. */
async function produce() {
  await spool.append({
    host_inventory: {
      hostname: "kvm-a",
      cpus: 16,
      memory_bytes: 64 * 2 ** 30,
      kernel: "6.1.0",
      hypervisor_driver: "qemu",
      hypervisor_version: "8.2",
      capabilities: ["capture", "shadow"],
      vm_uuids: VMS.map((v) => v.uuid),
    },
  });
  for (const v of VMS)
    await spool.append({
      vm_inventory: {
        name: v.name,
        uuid: v.uuid,
        state: 1,
        vcpus: 4,
        memory_mb: 4096,
        machine_type: "pc-q35-8.2",
        labels: { image: "debian-12", team: "web" },
      },
    });
  // Two hours of operating points every minute; web-1's CPU climbs towards its boundary.
  for (let i = 0; i < 120; i++) {
    const ts = NOW - 2 * H + i * 60_000;
    await spool.append({
      telemetry_batch: {
        samples: [
          { scope: 1, ts_ms: ts, cpu_usage: 4 },
          ...VMS.map((v) => ({
            scope: 2,
            vm_uuid: v.uuid,
            ts_ms: ts,
            cpu_usage: 1,
            memory_used_bytes: 2 ** 30,
            memory_available_bytes: 4 * 2 ** 30,
            extra: {
              op_avg_cpu: v.rising ? 0.5 + 0.3 * (i / 120) : 0.2,
              op_avg_memory: 0.3,
              op_avg_disk_io: 0.05,
              op_cpu_slope_per_h: v.rising ? 0.15 : 0,
            },
          })),
        ],
      },
    });
  }
  for (const [k, v] of VMS.entries())
    await spool.append({
      capture_record: {
        id: `cap-${k}`,
        vm_name: v.name,
        vm_uuid: v.uuid,
        started_at_ms: NOW - 3 * H,
        finished_at_ms: NOW - 3 * H + 5000,
        pause_ms: 12,
        memory_bytes: 4 * 2 ** 30,
        disk_bytes: 10 * 2 ** 30,
        stored_bytes: 2 ** 30,
        new_bytes: 2 ** 29,
        config_digest: "sha256:abc",
        status: 2,
      },
    });
  // web-1: 8 runs across CPU load, failing (OOM) from 0.85 up; db-1: 4 runs, one hung task at high memory.
  const cpus = [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95];
  for (const [i, cpu] of cpus.entries()) {
    const failed = cpu >= 0.85;
    await spool.append({
      shadow_run: {
        id: `run-web-${i}`,
        campaign_id: "camp-1",
        capture_id: "cap-0",
        vm_name: "web-1",
        vm_uuid: VMS[0]!.uuid,
        profile: profile(cpu, 0.4),
        strategy: i % 2 ? "bayes" : "random",
        control: i === 0,
        started_at_ms: NOW - 150 * 60_000 + i * 10 * 60_000,
        finished_at_ms: NOW - 150 * 60_000 + i * 10 * 60_000 + 60_000,
        outcome: failed ? 2 : 1,
        failures: failed
          ? [
              {
                title: "Out of memory: Killed process 1234 (app)",
                class: "oom",
                frame: "oom_kill_process",
                fingerprint: FP_OOM,
                evidence: ["Out of memory: Killed process 1234 (app)"],
                offset_ms: 20_000 + i,
                source: 1,
              },
            ]
          : [],
      },
    });
  }
  for (let i = 0; i < 4; i++) {
    await spool.append({
      shadow_run: {
        id: `run-db-${i}`,
        campaign_id: "camp-2",
        capture_id: "cap-1",
        vm_name: "db-1",
        vm_uuid: VMS[1]!.uuid,
        profile: profile(0.2, 0.5 + i * 0.15),
        strategy: "random",
        started_at_ms: NOW - 100 * 60_000 + i * 60_000,
        finished_at_ms: NOW - 100 * 60_000 + i * 60_000 + 30_000,
        outcome: i === 3 ? 2 : i === 2 ? 3 : 1,
      },
    });
  }
  await spool.append({
    failure: {
      title: "INFO: task jbd2/vda1-8 blocked for more than 120 seconds.",
      class: "hung_task",
      frame: "jbd2_journal_commit_transaction",
      fingerprint: FP_HUNG,
      evidence: ["INFO: task jbd2/vda1-8 blocked"],
      offset_ms: 9000,
      source: 1,
      shadow_run_id: "run-db-3",
    },
  });
  await spool.append({
    signature_update: {
      fingerprint: FP_OOM,
      title: "Out of memory: Killed process (app)",
      class: "oom",
      first_seen_ms: NOW - 100 * 60_000,
      last_seen_ms: NOW - 80 * 60_000,
      count: 3,
      vms: [VMS[0]!.uuid],
      profiles: [profile(0.85, 0.4), profile(0.9, 0.4)],
    },
  });
  await spool.append({
    signature_update: {
      fingerprint: FP_HUNG,
      title: "INFO: task jbd2 blocked for more than 120 seconds",
      class: "hung_task",
      first_seen_ms: NOW - 97 * 60_000,
      last_seen_ms: NOW - 97 * 60_000,
      count: 1,
      vms: [VMS[1]!.uuid],
      profiles: [profile(0.2, 0.95)],
    },
  });
}

test.before(async () => {
  config = collectorConfigSchema.parse({
    data_dir: dir,
    log_level: "silent",
    tls: { required: false },
    ingest: { host: "127.0.0.1", port: 0 },
    metrics: { host: "127.0.0.1", port: 0 },
    api: {
      host: "127.0.0.1",
      port: 0,
      rate_limit_per_minute: 100_000,
      max_body_bytes: 1024,
      max_page_size: 100,
    },
    reports: { schedule: "", at_risk_threshold: 0.05 },
    // Prunes at start and on request only: an hourly prune must not race the retention test.
    retention: { schedule: "" },
  });
  service = await startCollector(config, silentLogger());
  base = `http://127.0.0.1:${service.apiPort}`;
  const { token } = service.auth.createToken({ ttlMs: H });
  spool = await Spool.open({ dir: join(dir, "agent-spool"), agentId: "agent-a", maxBytes: 1 << 30 });
  shipper = new SpoolShipper({
    spool,
    logger: silentLogger(),
    connect: () =>
      CollectorSession.connect({
        url: `ws://127.0.0.1:${service.ingestPort}`,
        agentId: "agent-a",
        hostname: "kvm-a",
        ca: undefined,
        allowInsecure: true,
        credentials: new CredentialsFileStore(join(dir, "agent-creds.json"), silentLogger()),
        enrollmentToken: () => token,
        maxFrameBytes: 4 << 20,
        handshakeTimeoutMs: 5000,
      }),
    window: 64,
    maxInFlightBytes: 16 << 20,
    ackTimeoutMs: 10_000,
    reconnectMinMs: 100,
    reconnectMaxMs: 500,
  });
  shipper.start();
  await produce();
  await waitFor(() => spool.pendingFrames === 0, {
    timeoutMs: 30_000,
    what: "the agent's spool to drain",
  });
  await service.risk.recompute("test");
  await service.risk.recompute("test");

  const r = await cli("api-token", "create", "--scope", "read", "--description", "tests", "--json");
  assert.is(r.code, 0, r.err);
  readToken = JSON.parse(r.out).token;
  const a = await cli("api-token", "create", "--scope", "admin", "--json");
  adminToken = JSON.parse(a.out).token;
});

test.after(async () => {
  await shipper?.stop();
  await spool?.close();
  await service?.close();
  rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ OpenAPI

test("the OpenAPI document is served without a token and lists every route", async () => {
  const r = await get("/api/v1/openapi.json", null);
  assert.is(r.status, 200);
  assert.is(r.body.openapi, "3.1.0");
  const paths = Object.keys(r.body.paths).sort();
  assert.equal(paths, [
    "/api/v1/alerts",
    "/api/v1/captures",
    "/api/v1/failures",
    "/api/v1/hosts",
    "/api/v1/hosts/{agent_id}",
    "/api/v1/reports",
    "/api/v1/reports/{id}",
    "/api/v1/reports/{id}/{format}",
    "/api/v1/retention",
    "/api/v1/retention/prune",
    "/api/v1/risk",
    "/api/v1/risk/history",
    "/api/v1/shadow-runs",
    "/api/v1/shadow-runs/{id}",
    "/api/v1/signatures",
    "/api/v1/signatures/{fingerprint}",
    "/api/v1/vms",
    "/api/v1/vms/{uuid}",
    "/api/v1/vms/{uuid}/risk",
    "/api/v1/vms/{uuid}/risk/explanation",
  ]);
  const runs = r.body.paths["/api/v1/shadow-runs"].get;
  const names = runs.parameters.map((p: { name: string }) => p.name);
  for (const n of ["limit", "offset", "vm", "outcome", "profile", "since_ms", "until_ms"])
    assert.ok(names.includes(n), n);
  assert.ok(runs.responses["400"].content["application/problem+json"]);
  assert.equal(r.body.components.securitySchemes.bearer, {
    type: "http",
    scheme: "bearer",
    description: r.body.components.securitySchemes.bearer.description,
  });
  assert.ok(r.body.paths["/api/v1/reports"].post.responses["403"], "admin route documents 403");
});

// ------------------------------------------------------------------ auth

test("auth: no, malformed, unknown and revoked tokens get 401; read tokens cannot write", async () => {
  const none = await get("/api/v1/vms", null);
  assertProblem(none, 401, /API token is required/);
  assert.match(none.headers.get("www-authenticate") ?? "", /Bearer/);
  assertProblem(await get("/api/v1/vms", null, { headers: { authorization: "Basic abc" } }), 401, /Bearer/);
  assertProblem(await get("/api/v1/vms", "svma_nope"), 401, /malformed/);
  assertProblem(await get("/api/v1/vms", `svma_0123456789abcdef_${"A".repeat(43)}`), 401, /unknown/);
  // a token with a known id but the wrong secret
  const id = readToken.slice(5, 21);
  assertProblem(await get("/api/v1/vms", `svma_${id}_${"B".repeat(43)}`), 401, /unknown/);

  const t = await cli("api-token", "create", "--scope", "read", "--json");
  const tmp = JSON.parse(t.out) as { token: string; id: string };
  assert.is((await get("/api/v1/hosts", tmp.token)).status, 200);
  const list = await cli("api-token", "list");
  assert.match(list.out, new RegExp(`${tmp.id}\\s+read\\s+active`));
  assert.not.match(list.out, /svma_/, "never prints tokens");
  assert.is((await cli("api-token", "revoke", tmp.id)).code, 0);
  assertProblem(await get("/api/v1/hosts", tmp.token), 401, /revoked/);
  assert.match((await cli("api-token", "list")).out, new RegExp(`${tmp.id}\\s+read\\s+revoked`));
  assert.is((await cli("api-token", "revoke", "ffffffffffffffff")).code, 1);
  assert.is((await cli("api-token", "create", "--scope", "root")).code, 2);

  const post = await get("/api/v1/reports", readToken, { method: "POST" });
  assertProblem(post, 403, /admin scope/);
  const del = await get("/api/v1/reports/20260101T000000000Z-abcd", readToken, { method: "DELETE" });
  assertProblem(del, 403, /admin scope/);
  assert.is(
    readFileSync(join(dir, "auth", "api-tokens", `${id}.json`), "utf8").includes(readToken.slice(22)),
    false,
  );
});

test("every route in the OpenAPI document refuses requests without a valid token", async () => {
  const doc = (await get("/api/v1/openapi.json", null)).body as {
    paths: Record<string, Record<string, { security?: unknown[] }>>;
  };
  const sample: Record<string, string> = {
    agent_id: "agent-a",
    uuid: VMS[0]!.uuid,
    id: "20260101T000000000Z-abcd",
    fingerprint: FP_OOM,
    format: "json",
  };
  let routes = 0;
  for (const [path, methods] of Object.entries(doc.paths)) {
    const url = path.replace(/\{(\w+)\}/g, (_, name: string) => sample[name] ?? "x");
    for (const [method, op] of Object.entries(methods)) {
      assert.equal(op.security, [{ bearer: [] }], `${method} ${path} documents bearer auth`);
      assertProblem(await get(url, null, { method: method.toUpperCase() }), 401);
      assertProblem(await get(url, "svma_bad", { method: method.toUpperCase() }), 401);
      routes++;
    }
  }
  assert.is(routes, 22);
});

// ------------------------------------------------------------------ inventory and risk

test("hosts and VMs from the agent's inventory, with current risk from the risk engine", async () => {
  const hosts = await get("/api/v1/hosts");
  assert.is(hosts.status, 200);
  assert.is(hosts.body.items.length, 1);
  assert.is(hosts.body.items[0].hostname, "kvm-a");
  assert.is(hosts.body.items[0].vm_count, 2);
  assert.equal(hosts.body.page, { limit: 50, offset: 0, next: null });
  const host = await get("/api/v1/hosts/agent-a");
  assert.equal(host.body.capabilities, ["capture", "shadow"]);
  assertProblem(await get("/api/v1/hosts/nope"), 404, /no host "nope"/);
  assert.is((await get("/api/v1/hosts?hostname=other")).body.items.length, 0);

  const vms = await get("/api/v1/vms");
  assert.is(vms.status, 200);
  assert.equal(vms.body.items.map((v: { name: string }) => v.name).sort(), ["db-1", "web-1"]);
  const web = vms.body.items.find((v: { name: string }) => v.name === "web-1");
  assert.is(web.hostname, "kvm-a");
  assert.is(web.state, "running");
  assert.equal(web.labels, { image: "debian-12", team: "web" });
  assert.ok(web.risk, "web-1 was assessed by the risk engine");
  assert.type(web.risk.confidence, "number");
  // highest risk first
  const scores = vms.body.items.map((v: { risk: { score: number | null } | null }) => v.risk?.score ?? -1);
  assert.equal(
    scores,
    [...scores].sort((a: number, b: number) => b - a),
  );
  const byName = await get("/api/v1/vms?sort=name&limit=1");
  assert.is(byName.body.items[0].name, "db-1");
  assert.is(byName.body.page.next, "/api/v1/vms?sort=name&limit=1&offset=1");
  assert.is((await get(byName.body.page.next)).body.items[0].name, "web-1");
  assert.is((await get("/api/v1/vms?name=db-1")).body.items.length, 1);
  assert.is((await get("/api/v1/vms?state=paused")).body.items.length, 0);
  assert.is((await get("/api/v1/vms?assessed=false")).body.items.length, 0);
  assert.is((await get("/api/v1/vms?assessed=true&min_score=0")).body.items.length, 2);

  const one = await get(`/api/v1/vms/${VMS[0]!.uuid}`);
  assert.is(one.body.name, "web-1");
  assert.is(one.body.vcpus, 4);
  assert.ok(Array.isArray(one.body.disks));
  assertProblem(await get("/api/v1/vms/does-not-exist"), 404, /no VM/);

  const history = await get(`/api/v1/vms/${VMS[0]!.uuid}/risk`);
  assert.is(history.status, 200);
  assert.ok(history.body.items.length >= 2, "two rounds were computed");
  const at = history.body.items.map((a: { assessed_at_ms: number }) => a.assessed_at_ms);
  assert.equal(
    at,
    [...at].sort((a: number, b: number) => b - a),
    "newest first",
  );
  const sig = history.body.items[0].signatures.find((s: { fingerprint: string }) => s.fingerprint === FP_OOM);
  assert.ok(sig, "the OOM signature is part of web-1's risk");
  assert.is((await get(`/api/v1/vms/${VMS[0]!.uuid}/risk?limit=1`)).body.items.length, 1);
  assert.is((await get(`/api/v1/vms/${VMS[0]!.uuid}/risk?since_ms=${NOW + 10 * H}`)).body.items.length, 0);

  const why = await get(`/api/v1/vms/${VMS[0]!.uuid}/risk/explanation`);
  assert.is(why.status, 200);
  assert.is(why.body.vm.name, "web-1");
  assert.ok(why.body.assessment.explanation.length > 0);
  assert.ok(why.body.assessment.boundary.some((b: { fingerprint: string }) => b.fingerprint === FP_OOM));
  assert.ok(
    why.body.assessment.boundary.every((b: { horizon_h: number }) => b.horizon_h === 24),
    "each boundary says its horizon",
  );
  assert.equal(why.body.evidence.runs, { ok: 5, failed: 3 });
  assert.equal(
    why.body.evidence.signatures.map((s: { fingerprint: string; failures: number }) => [
      s.fingerprint,
      s.failures,
    ]),
    [[FP_OOM, 3]],
  );
});

test("risk assessments: one row per VM and signature, the newest round or every round", async () => {
  const now = await get("/api/v1/risk");
  assert.is(now.status, 200);
  type Row = { vm_name: string; fingerprint: string; computed_at_ms: number; probability: number | null };
  const rows = now.body.items as Row[];
  assert.ok(rows.length >= 2, "both VMs assessed");
  assert.equal(new Set(rows.map((r) => r.computed_at_ms)).size, 1, "one round");
  const web = rows.find((r) => r.vm_name === "web-1" && r.fingerprint === FP_OOM) as Row & {
    source: string;
    mitigations: { action: string }[];
    horizon_h: number;
  };
  assert.ok(web, "web-1's OOM assessment");
  assert.is(web.source, "own");
  assert.is(web.horizon_h, 24);
  assert.ok(web.mitigations.length > 0 && web.mitigations.every((m) => typeof m.action === "string"));
  const p = rows.map((r) => r.probability ?? -1);
  assert.equal(
    p,
    [...p].sort((a, b) => b - a),
    "most probable first",
  );
  // pages of one row visit every row once
  const seen: string[] = [];
  for (let next: string | null = "/api/v1/risk?limit=1"; next; ) {
    const r = await get(next);
    assert.is(r.status, 200);
    seen.push(...r.body.items.map((x: Row) => `${x.vm_name}/${x.fingerprint}`));
    next = r.body.page.next;
  }
  assert.equal(
    seen,
    rows.map((r) => `${r.vm_name}/${r.fingerprint}`),
  );
  const byName = await get("/api/v1/risk?vm=web-1");
  assert.ok(byName.body.items.length > 0 && byName.body.items.every((r: Row) => r.vm_name === "web-1"));
  assert.equal(
    (await get(`/api/v1/risk?vm=${VMS[0]!.uuid}`)).body.items,
    byName.body.items,
    "by UUID as by name",
  );
  assert.equal(
    (await get("/api/v1/risk?class=oom")).body.items
      .map((r: Row) => r.fingerprint)
      .filter((f: string) => f !== FP_OOM),
    [],
  );

  const history = await get(`/api/v1/risk/history?vm=web-1&fingerprint=${FP_OOM}`);
  assert.is(history.status, 200);
  const at = history.body.items.map((r: Row) => r.computed_at_ms);
  assert.ok(at.length >= 2, "two rounds were computed");
  assert.equal(
    at,
    [...at].sort((a: number, b: number) => b - a),
    "newest first",
  );
  assert.is((await get(`/api/v1/risk/history?vm=web-1&since_ms=${NOW + 10 * H}`)).body.items.length, 0);
  assertProblem(await get("/api/v1/risk?limit=0"), 400, /limit/);
  assertProblem(await get("/api/v1/risk/history?since_ms=yesterday"), 400, /since_ms/);
});

// ------------------------------------------------------------------ captures and runs

test("captures and shadow runs: filters by VM, profile, outcome and time", async () => {
  const caps = await get("/api/v1/captures");
  assert.is(caps.body.items.length, 2);
  assert.is(caps.body.items[0].status, "ok");
  assert.is((await get("/api/v1/captures?vm=web-1")).body.items.length, 1);
  assert.is((await get(`/api/v1/captures?vm=${VMS[1]!.uuid}`)).body.items[0].id, "cap-1");
  assert.is((await get("/api/v1/captures?status=failed")).body.items.length, 0);
  assert.is((await get(`/api/v1/captures?since_ms=${NOW}`)).body.items.length, 0);

  const all = await get("/api/v1/shadow-runs?limit=100");
  assert.is(all.body.items.length, 12);
  assert.is((await get("/api/v1/shadow-runs?vm=web-1")).body.items.length, 8);
  assert.is((await get("/api/v1/shadow-runs?outcome=failed")).body.items.length, 4);
  assert.is((await get("/api/v1/shadow-runs?outcome=inconclusive")).body.items[0].id, "run-db-2");
  assert.is(
    (await get("/api/v1/shadow-runs?vm=web-1&outcome=ok&control=true")).body.items[0].id,
    "run-web-0",
  );
  const hot = await get(`/api/v1/shadow-runs?profile=${encodeURIComponent('"cpu_load":0.9')}`);
  assert.equal(hot.body.items.map((r: { id: string }) => r.id).sort(), ["run-web-6", "run-web-7"]);
  assert.is((await get("/api/v1/shadow-runs?strategy=bayes")).body.items.length, 4);
  const since = NOW - 100 * 60_000;
  const window = await get(`/api/v1/shadow-runs?since_ms=${since}&until_ms=${since + 2 * 60_000}`);
  assert.equal(window.body.items.map((r: { id: string }) => r.id).sort(), [
    "run-db-0",
    "run-db-1",
    "run-web-5",
  ]);

  const one = await get("/api/v1/shadow-runs/run-web-7");
  assert.is(one.body.outcome, "failed");
  assert.is(one.body.profile.cpu_load, 0.95);
  assert.is(one.body.failures.length, 1);
  assert.is(one.body.failures[0].fingerprint, FP_OOM);
  assertProblem(await get("/api/v1/shadow-runs/nope"), 404);
});

test("pagination: following next links visits every run once, in order", async () => {
  const seen: string[] = [];
  let next: string | null = "/api/v1/shadow-runs?limit=5";
  let pages = 0;
  while (next) {
    const r = await get(next);
    assert.is(r.status, 200);
    assert.ok(r.body.items.length <= 5);
    seen.push(...r.body.items.map((x: { id: string }) => x.id));
    next = r.body.page.next;
    pages++;
  }
  assert.is(pages, 3);
  assert.is(seen.length, 12);
  assert.is(new Set(seen).size, 12);
  const direct = await get("/api/v1/shadow-runs?limit=100");
  assert.equal(
    seen,
    direct.body.items.map((x: { id: string }) => x.id),
  );
  // the same for failures and signatures
  const f1 = await get("/api/v1/failures?limit=2");
  assert.is(f1.body.items.length, 2);
  const f2 = await get(f1.body.page.next);
  assert.is(f2.body.items.length, 2);
  assert.is(f2.body.page.next, null);
  const s1 = await get("/api/v1/signatures?limit=1");
  assert.ok(s1.body.page.next);
  assert.is((await get(s1.body.page.next)).body.page.next, null);
  assert.is((await get("/api/v1/shadow-runs?offset=1000")).body.items.length, 0);
});

// ------------------------------------------------------------------ failures and signatures

test("failures and signatures say where and when they occurred", async () => {
  const f = await get(`/api/v1/failures?fingerprint=${FP_OOM}`);
  assert.is(f.body.items.length, 3);
  for (const x of f.body.items) {
    assert.is(x.vm_name, "web-1");
    assert.is(x.vm_uuid, VMS[0]!.uuid);
    assert.ok(x.profile.cpu_load >= 0.85);
    assert.ok(x.occurred_at_ms > NOW - 3 * H && x.occurred_at_ms < NOW);
    assert.equal(x.evidence, ["Out of memory: Killed process 1234 (app)"]);
  }
  const lone = await get("/api/v1/failures?class=hung_task");
  assert.is(lone.body.items[0].shadow_run_id, "run-db-3");
  assert.is(lone.body.items[0].vm_name, "db-1", "a failure sent alone is joined to its run");
  assert.is(lone.body.items[0].occurred_at_ms, NOW - 100 * 60_000 + 3 * 60_000 + 9000);
  assert.is((await get("/api/v1/failures?vm=db-1")).body.items.length, 1);
  assert.is((await get(`/api/v1/failures?until_ms=${NOW - 3 * H}`)).body.items.length, 0);

  const sigs = await get("/api/v1/signatures");
  assert.equal(
    sigs.body.items.map((s: { fingerprint: string }) => s.fingerprint),
    [FP_OOM, FP_HUNG],
  );
  const oom = sigs.body.items[0];
  assert.is(oom.count, 3);
  assert.equal(oom.agents, ["agent-a"]);
  assert.equal(oom.vms, [VMS[0]!.uuid]);
  assert.is(oom.profiles.length, 2);
  assert.is((await get("/api/v1/signatures?class=hung_task")).body.items.length, 1);
  assert.is((await get(`/api/v1/signatures?vm=${VMS[1]!.uuid}`)).body.items[0].fingerprint, FP_HUNG);
  assert.is((await get("/api/v1/signatures?q=out%20of%20MEMORY")).body.items[0].fingerprint, FP_OOM);
  assert.is((await get("/api/v1/signatures?sort=last_seen")).body.items[0].fingerprint, FP_OOM);

  const one = await get(`/api/v1/signatures/${FP_OOM}`);
  assert.is(one.body.title, "Out of memory: Killed process (app)");
  assert.equal(one.body.occurrences.length, 1);
  const occ = one.body.occurrences[0];
  assert.is(occ.vm_name, "web-1");
  assert.is(occ.failures, 3);
  assert.is(occ.runs, 3);
  assert.ok(occ.first_ms <= occ.last_ms);
  assertProblem(await get("/api/v1/signatures/unknown-fp"), 404);
});

test("alerts from the risk engine's table, filtered", async () => {
  const a = await get("/api/v1/alerts");
  assert.is(a.status, 200);
  assert.ok(Array.isArray(a.body.items));
  for (const x of a.body.items) assert.type(x.severity, "string");
  assert.is((await get("/api/v1/alerts?vm=none")).body.items.length, 0);
  assert.is((await get("/api/v1/alerts?state=no-such-state")).body.items.length, 0);
});

// ------------------------------------------------------------------ validation and limits

test("validation errors are problem+json naming the parameter", async () => {
  const cases: [string, string][] = [
    ["/api/v1/vms?limit=0", "limit"],
    ["/api/v1/vms?limit=101", "limit"],
    ["/api/v1/vms?limit=ten", "limit"],
    ["/api/v1/vms?offset=-1", "offset"],
    ["/api/v1/vms?sort=size", "sort"],
    ["/api/v1/vms?min_score=2", "min_score"],
    ["/api/v1/vms?assessed=maybe", "assessed"],
    ["/api/v1/shadow-runs?outcome=exploded", "outcome"],
    ["/api/v1/shadow-runs?since_ms=yesterday", "since_ms"],
    ["/api/v1/captures?status=weird", "status"],
    ["/api/v1/signatures?sort=random", "sort"],
    ["/api/v1/reports/not-an-id", "id"],
    ["/api/v1/reports/20260101T000000000Z-abcd/pdf", "format"],
  ];
  for (const [path, param] of cases) {
    const r = await get(path);
    assertProblem(r, 400);
    assert.ok(
      r.body.errors.some((e: { path: string }) => e.path === param),
      `${path}: ${JSON.stringify(r.body.errors)}`,
    );
    assert.match(r.body.detail, new RegExp(param));
  }
  const unknownRoute = await get("/api/v1/nothing-here");
  assertProblem(unknownRoute, 404, /no route GET/);

  const post = (body: string, type = "application/json") =>
    get("/api/v1/reports", adminToken, { method: "POST", body, headers: { "content-type": type } });
  const extra = await post(JSON.stringify({ nonsense: 1 }));
  assertProblem(extra, 400);
  assert.match(JSON.stringify(extra.body.errors), /nonsense/);
  assertProblem(await post(JSON.stringify({ at_risk_threshold: 3 })), 400, /at_risk_threshold/);
  assertProblem(await post("{not json"), 400);
  assertProblem(await post(JSON.stringify({ pad: "x".repeat(5000) })), 413, /larger than 1024 bytes/);
});

test("rate limit: 429 with Retry-After once a token used its minute", async () => {
  const db = await ReaderPool.create(() => service.store.connectReader(), 1);
  let clock = 1_000_000;
  const app = apiApp({
    db,
    risk: service.api.risk,
    reports: service.api.reports,
    tokens: new (await import("@shadowvm/collector/api/api-token-store")).ApiTokenStore(
      join(dir, "auth", "api-tokens"),
    ),
    rateLimitPerMinute: 3,
    maxBodyBytes: 1024,
    defaultPageSize: 10,
    maxPageSize: 10,
    now: () => clock,
  });
  const req = (token: string) =>
    app.request("/api/v1/hosts", { headers: { authorization: `Bearer ${token}` } });
  for (let i = 0; i < 3; i++) {
    const r = await req(readToken);
    assert.is(r.status, 200);
    assert.is(r.headers.get("ratelimit-remaining"), String(2 - i));
  }
  const limited = await req(readToken);
  assert.is(limited.status, 429);
  assert.is(limited.headers.get("content-type"), "application/problem+json");
  assert.is(limited.headers.get("retry-after"), "60");
  assert.is((await req(adminToken)).status, 200, "another token has its own budget");
  // Failed attempts count against the client address; made-up token ids get no budget of their own.
  for (let i = 0; i < 3; i++)
    assert.is((await req(`svma_${String(i).repeat(16)}_${"x".repeat(43)}`)).status, 401);
  const forged = await req(`svma_${"9".repeat(16)}_${"x".repeat(43)}`);
  assert.is(forged.status, 429);
  assert.is((await app.request("/api/v1/hosts")).status, 429, "no token: the same address budget");
  clock += 60_000;
  assert.is((await req(readToken)).status, 200, "a new minute, a new budget");
  db.close();
});

test("API reads do not block ingest: 200 requests while the agent streams", async () => {
  const before = Number((await service.store.query("SELECT count(*) AS n FROM samples"))[0]!["n"]);
  let produced = 0;
  const producing = (async () => {
    for (let i = 0; i < 200; i++) {
      await spool.append({ telemetry_batch: { samples: [{ scope: 1, ts_ms: NOW + i, cpu_usage: 1 }] } });
      produced++;
    }
  })();
  const reads = Array.from({ length: 200 }, (_, i) =>
    get(i % 2 ? "/api/v1/vms" : `/api/v1/signatures/${FP_OOM}`).then((r) => r.status),
  );
  const statuses = await Promise.all(reads);
  await producing;
  await waitFor(() => spool.pendingFrames === 0, { timeoutMs: 20_000, what: "the spool to drain" });
  assert.ok(statuses.every((s) => s === 200));
  const after = Number((await service.store.query("SELECT count(*) AS n FROM samples"))[0]!["n"]);
  assert.is(after - before, produced);
});

// ------------------------------------------------------------------ reports

async function chromium(args: string[]): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), "shadowvm-chromium-"));
  try {
    const { stdout } = await run(
      "chromium",
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        ...args,
      ],
      { timeout: 60_000, maxBuffer: 16 << 20 },
    );
    return stdout;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

test("reports: on demand via the API, listed, downloadable in four formats, with what changed", async () => {
  const first = await get("/api/v1/reports", adminToken, { method: "POST" });
  assert.is(first.status, 201, JSON.stringify(first.body));
  assert.is(first.headers.get("location"), `/api/v1/reports/${first.body.id}`);
  assert.is(first.body.trigger, "api");
  assert.is(first.body.vms, 2);
  const second = await get("/api/v1/reports", adminToken, {
    method: "POST",
    body: JSON.stringify({ at_risk_threshold: 0 }),
    headers: { "content-type": "application/json" },
  });
  assert.is(second.status, 201);

  const list = await get("/api/v1/reports");
  assert.equal(
    list.body.items.map((m: { id: string }) => m.id),
    [second.body.id, first.body.id],
  );
  const meta = await get(`/api/v1/reports/${second.body.id}`);
  assert.equal(meta.body.links.csv, `/api/v1/reports/${second.body.id}/csv`);

  const json = await get(meta.body.links.json);
  assert.is(json.status, 200);
  assert.is(json.body.changes.previous_report_id, first.body.id);
  assert.is(json.body.ranking.length, 2);
  assert.is(json.body.fleet.failures, 4);
  assert.is(json.body.signatures[0].fingerprint, FP_OOM);
  const web = json.body.at_risk.find((v: { vm_name: string }) => v.vm_name === "web-1");
  assert.ok(web, "web-1 is at risk with threshold 0");
  assert.is(web.boundary_points.length, 8);
  assert.ok(web.risk_history.length >= 2);
  assert.ok(Array.isArray(web.mitigations));

  const csv = await get(meta.body.links.csv);
  assert.match(csv.type, /text\/csv/);
  const lines = csv.body.trim().split("\n");
  assert.is(
    lines[0],
    "rank,agent_id,hostname,vm_uuid,vm_name,state,score,confidence,level,assessed_at_ms,failures,signatures",
  );
  assert.is(lines.length, 3);

  const pq = await fetch(`${base}${meta.body.links.parquet}`, {
    headers: { authorization: `Bearer ${readToken}` },
  });
  assert.is(pq.status, 200);
  const bytes = Buffer.from(await pq.arrayBuffer());
  assert.is(bytes.subarray(0, 4).toString(), "PAR1");
  assert.is(bytes.subarray(-4).toString(), "PAR1");
  const pqFile = join(dir, "ranking.parquet");
  writeFileSync(pqFile, bytes);
  const rows = await service.store.query(`SELECT vm_name, failures FROM read_parquet($1) ORDER BY vm_name`, [
    pqFile,
  ]);
  assert.equal(
    rows.map((r) => [r["vm_name"], Number(r["failures"])]),
    [
      ["db-1", 1],
      ["web-1", 3],
    ],
  );

  const html = await get(meta.body.links.html);
  assert.match(html.type, /text\/html/);
  assert.not.match(html.body, /(src|href)=["']?https?:/i, "no external assets");

  const del = await get(`/api/v1/reports/${first.body.id}`, adminToken, { method: "DELETE" });
  assert.is(del.status, 204);
  assertProblem(await get(`/api/v1/reports/${first.body.id}`), 404);
  assertProblem(await get(`/api/v1/reports/${first.body.id}/json`), 404);
});

test("the HTML report opens offline in headless Chromium with its three charts drawn", async () => {
  const r = await get("/api/v1/reports", adminToken, {
    method: "POST",
    body: JSON.stringify({ at_risk_threshold: 0 }),
    headers: { "content-type": "application/json" },
  });
  const data = (await get(r.body.links.json)).body as { at_risk: { boundary_points: unknown[] }[] };
  const points = data.at_risk.reduce((n, v) => n + v.boundary_points.length, 0);
  assert.ok(points >= 8);
  const res = await fetch(`${base}${r.body.links.html}`, {
    headers: { authorization: `Bearer ${readToken}` },
  });
  const file = join(dir, "report.html");
  writeFileSync(file, await res.text());
  const dom = await chromium(["--dump-dom", `file://${file}`]);
  for (const id of ["chart-risk", "chart-boundary", "chart-signatures"]) {
    const m = new RegExp(`<figure id="${id}" class="chart"[^>]*data-drawn="(\\d+)"`).exec(dom);
    assert.ok(m, `${id} was laid out`);
    assert.ok(Number(m![1]) > 0, `${id} has drawn marks (${m![1]})`);
  }
  assert.match(
    dom,
    new RegExp(`id="chart-boundary" class="chart" data-drawn="${points}"`),
    "one mark per run",
  );
  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = join(dir, "report.png");
  await chromium(["--screenshot=" + shot, "--window-size=1000,1800", "--hide-scrollbars", `file://${file}`]);
  assert.ok(existsSync(shot));
  const png = readFileSync(shot);
  assert.is(png.subarray(1, 4).toString(), "PNG");
  assert.ok(png.length > 20_000, `a screenshot with content (${png.length} bytes)`);
  copyFileSync(shot, join(ARTIFACTS, "api-report.png"));
  copyFileSync(file, join(ARTIFACTS, "api-report.html"));
});

// ------------------------------------------------------------------ retention

test("retention: the running collector prunes at start, tells what is due, prunes on request (API and CLI)", async () => {
  const old = NOW - 40 * 24 * H; // past the default retention.samples_days (30)
  const countOld = async () =>
    Number((await service.store.query(`SELECT count(*) AS n FROM samples WHERE ts_ms = ${old}`))[0]?.["n"]);
  await waitFor(() => service.retention.status().last !== undefined, {
    timeoutMs: 30_000,
    what: "the start-up prune",
  });
  // An agent whose clock is 40 days behind: its samples are stored, counted, and pruned later.
  await spool.append({
    telemetry_batch: {
      samples: [VMS[0]!, VMS[1]!].map((v) => ({ scope: 2, vm_uuid: v.uuid, ts_ms: old, cpu_usage: 1 })),
    },
  });
  await waitFor(async () => (await countOld()) === 2, { timeoutMs: 30_000, what: "the old samples stored" });
  const status = await get("/api/v1/retention");
  assert.is(status.status, 200, JSON.stringify(status.body));
  assert.is(status.body.policy.samples_days, 30);
  assert.is(status.body.policy.shadow_results_days, 0);
  assert.ok(status.body.last.at_ms > 0, "the start-up prune is reported");
  const due = Object.fromEntries(
    status.body.due.tables.map((t: { table: string; rows: number }) => [t.table, t.rows]),
  );
  assert.is(due.samples, 2);
  assert.not.ok("shadow_runs" in due, "shadow results are kept forever by default");
  assert.is(await countOld(), 2, "GET deletes nothing");

  assertProblem(await get("/api/v1/retention/prune", readToken, { method: "POST" }), 403, /admin scope/);

  const dry = await bin("prune", "--dry-run", "--json");
  assert.is(dry.code, 0, dry.err);
  assert.is(JSON.parse(dry.out).tables.find((t: { table: string }) => t.table === "samples").rows, 2);
  assert.is(await countOld(), 2, "a dry run deletes nothing");

  // The config the CLI reads differs from the running collector's: it says so, and the collector's applies.
  const real = await run(process.execPath, [COLLECTOR_BIN, "prune", "--data-dir", dir], {
    env: {
      ...process.env,
      SHADOWVM_COLLECTOR__API__PORT: String(service.apiPort),
      SHADOWVM_COLLECTOR__API__HOST: "127.0.0.1",
      SHADOWVM_COLLECTOR__RETENTION__ALERTS_DAYS: "45",
    },
  });
  assert.match(real.stdout, /TABLE\s+KEPT\s+OLDER THAN\s+DELETED/);
  assert.match(real.stdout, /samples\s+30 d\s+\S+\s+2\n/);
  assert.match(real.stderr, /running collector has retention\.alerts_days: 90; the config now says 45/);
  assert.match(real.stderr, /deleted \d+ row\(s\)/);
  assert.is(await countOld(), 0);
  const after = await get("/api/v1/retention");
  assert.is(
    after.body.last.tables.find((t: { table: string }) => t.table === "samples").rows,
    2,
    "the CLI's prune is the collector's last",
  );
  assert.ok(after.body.due.tables.every((t: { rows: number }) => t.rows === 0));
  // ... and in the metrics, with the database's size
  const metrics = await (await fetch(`http://127.0.0.1:${service.opsPort}/metrics`)).text();
  assert.match(metrics, /^shadowvm_collector_samples_out_of_window_total\{reason="past_retention"\} 2$/m);
  const metric = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1] ?? Number.NaN);
  assert.ok(metric('shadowvm_collector_retention_rows_deleted_total\\{table="samples"\\}') >= 2, metrics);
  assert.ok(metric("shadowvm_collector_retention_last_prune_timestamp_seconds") * 1000 >= NOW);
  assert.ok(metric('shadowvm_collector_database_bytes\\{file="database"\\}') > 0, "the database file's size");
  assert.ok(metric('shadowvm_collector_database_bytes\\{file="wal"\\}') >= 0, "the write-ahead log's size");

  // A retention shorter than the risk engine's telemetry window is refused before anything runs.
  let refusedErr = "";
  const refused = await collectorMain(
    ["prune", "--data-dir", dir],
    { out: () => {}, err: (t) => (refusedErr += t) },
    { SHADOWVM_COLLECTOR__RETENTION__SAMPLES_DAYS: "0.1" },
  );
  assert.is(refused, 2);
  assert.match(
    refusedErr,
    /retention\.samples_days is invalid: expected 0 \(keep forever\) or at least 0\.25 days/,
  );
});

// ------------------------------------------------------------------ CLI

/** The real CLI in its own process: the running collector holds the database, so it asks the API. */
async function bin(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const env = {
    ...process.env,
    SHADOWVM_COLLECTOR__API__PORT: String(service.apiPort),
    SHADOWVM_COLLECTOR__API__HOST: "127.0.0.1",
    // the same page limit as the running collector's config (the CLI reads the collector's config)
    SHADOWVM_COLLECTOR__API__MAX_PAGE_SIZE: "100",
  };
  try {
    const { stdout, stderr } = await run(process.execPath, [COLLECTOR_BIN, ...args, "--data-dir", dir], {
      env,
    });
    return { code: 0, out: stdout, err: stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout, err: e.stderr };
  }
}

test("CLI: tables and report --now through the running collector's API", async () => {
  const vms = await bin("vms");
  assert.is(vms.code, 0, vms.err);
  assert.match(vms.out, /NAME\s+UUID\s+HOST\s+STATE\s+RISK/);
  assert.match(vms.out, /web-1/);
  const sigs = await bin("signatures", "--json");
  assert.equal(
    JSON.parse(sigs.out).map((s: { fingerprint: string }) => s.fingerprint),
    [FP_OOM, FP_HUNG],
  );
  const runs = await bin("runs", "--vm", "web-1", "--outcome", "failed");
  assert.is(runs.out.trim().split("\n").length, 4, runs.out);
  assert.match((await bin("failures", "--class", "hung_task")).out, /run-db-3/);
  assert.match((await bin("hosts")).out, /kvm-a/);
  assert.is((await bin("alerts")).code, 0);
  assert.is((await bin("runs", "--limit", "zero")).code, 2);
  const badOutcome = await bin("runs", "--outcome", "crashed");
  assert.is(badOutcome.code, 2);
  assert.match(
    badOutcome.err,
    /--outcome must be one of unspecified, ok, failed, inconclusive \(actual: "crashed"\)/,
  );

  // the risk table, the same rows as the API's, and a VM's history
  const risk = await bin("risk");
  assert.is(risk.code, 0, risk.err);
  assert.match(risk.out, /COMPUTED\s+VM\s+SIGNATURE\s+CLASS\s+STATUS\s+P\(FAIL\)\s+CONFIDENCE\s+TTF/);
  assert.match(risk.out, /web-1/);
  const riskJson = await bin("risk", "--json");
  const key = (r: { vm_uuid: string; fingerprint: string; computed_at_ms: number }) =>
    `${r.computed_at_ms}/${r.vm_uuid}/${r.fingerprint}`;
  assert.equal(JSON.parse(riskJson.out).map(key), (await get("/api/v1/risk?limit=100")).body.items.map(key));
  const webHistory = JSON.parse((await bin("risk", "--vm", "web-1", "--json")).out);
  assert.ok(new Set(webHistory.map(key).map((k: string) => k.split("/")[0])).size >= 2, "two rounds");
  assert.equal(
    webHistory.map(key),
    (await get("/api/v1/risk/history?vm=web-1&limit=100")).body.items.map(key),
  );

  const now = await bin("report", "--now", "--json");
  assert.is(now.code, 0, now.err);
  const meta = JSON.parse(now.out);
  assert.is(meta.trigger, "api", "written by the running collector");
  const list = await cli("report", "list");
  assert.match(list.out, new RegExp(meta.id));
  const show = await cli("report", "show", meta.id, "--format", "csv");
  assert.ok(existsSync(show.out.trim()));
  // the temporary tokens the CLI made are revoked
  const tokens = JSON.parse((await cli("api-token", "list", "--json")).out) as {
    description: string;
    state: string;
  }[];
  const temp = tokens.filter((t) => t.description.includes("temporary"));
  assert.ok(temp.length >= 10);
  assert.ok(temp.every((t) => t.state === "revoked"));
});

test.run();
