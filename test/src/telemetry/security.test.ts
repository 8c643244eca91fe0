// Security tests of the ingest endpoint, against the real collector process (wss://, test CA):
// authentication (no token, wrong token, revoked token, another agent's credentials, replayed
// proofs, revoked agents), transport (plain ws:// against TLS) and hostile frames (oversized,
// truncated, garbage, deeply nested, text). Each bad connection is closed with a reason and
// counted; the collector keeps running and a well-behaved agent streaming meanwhile is unaffected.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAgentConfig } from "@shadowvm/agent/config/agent-config";
import { Spool } from "@shadowvm/agent/spool/spool";
import { CollectorSession, SessionError } from "@shadowvm/agent/telemetry/collector-session";
import { CredentialsFileStore } from "@shadowvm/agent/telemetry/credentials";
import { SpoolShipper } from "@shadowvm/agent/telemetry/spool-shipper";
import { WireClient } from "@shadowvm/agent/telemetry/wire-client";
import {
  agentProof,
  ConfigError,
  type EnvelopeInit,
  encodeFrame,
  newNonce,
  PROTOCOL_VERSION,
  shadowvm,
  silentLogger,
  waitFor,
} from "@shadowvm/shared";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createTestPki, type TestPki } from "./fixtures/pki.js";
import { COLLECTOR_BIN, CollectorProcess, killAll, metricValue } from "./fixtures/processes.js";

const ErrorCode = shadowvm.v1.ErrorCode;
const MAX_FRAME = 64 * 1024;
const dir = mkdtempSync(join(tmpdir(), "shadowvm-security-"));
let pki: TestPki;
let collector: CollectorProcess;
let ca: Buffer;
let token: string;

const test = suite("ingest security");

function frame(
  agentId: string,
  init: Omit<EnvelopeInit, "agent_id" | "epoch" | "seq" | "sent_at_ms">,
  seq = 0,
) {
  return encodeFrame(
    { agent_id: agentId, epoch: seq ? 1 : 0, seq, sent_at_ms: Date.now(), ...init },
    { maxFrameBytes: 16 << 20 },
  );
}

function credentials(agentId: string): CredentialsFileStore {
  return new CredentialsFileStore(join(dir, "creds", `${agentId}.json`), silentLogger());
}

function session(
  agentId: string,
  opts: { token?: string | undefined; url?: string; insecure?: boolean } = {},
) {
  return CollectorSession.connect({
    url: opts.url ?? collector.url,
    agentId,
    hostname: "test",
    ca,
    allowInsecure: opts.insecure ?? false,
    credentials: credentials(agentId),
    enrollmentToken: () => ("token" in opts ? opts.token : token),
    maxFrameBytes: 4 << 20,
    handshakeTimeoutMs: 5000,
  });
}

async function raw(): Promise<WireClient> {
  return WireClient.connect(collector.url, { ca });
}

/** Says hello as `agentId`; returns the challenge's nonce and our nonce. */
async function hello(client: WireClient, agentId: string) {
  const clientNonce = newNonce();
  client.send(
    frame(agentId, {
      hello: {
        agent_id: agentId,
        protocol_version: PROTOCOL_VERSION,
        client_nonce: clientNonce,
        agent_version: "t",
      },
    }),
  );
  const e = await client.expect("auth_challenge");
  assert.is(e.type === "frame" && e.envelope.body, "auth_challenge");
  const ch = (e as { envelope: { auth_challenge: { server_nonce: Uint8Array; enrolled: boolean } } }).envelope
    .auth_challenge;
  return { clientNonce, serverNonce: ch.server_nonce, enrolled: ch.enrolled };
}

/** Authenticates a raw connection with a secret. */
async function authenticate(client: WireClient, agentId: string, secret: Uint8Array) {
  const { clientNonce, serverNonce } = await hello(client, agentId);
  client.send(
    frame(agentId, { auth_response: { proof: agentProof(secret, agentId, serverNonce, clientNonce) } }),
  );
  const e = await client.expect("auth_result");
  assert.ok(e.type === "frame" && e.envelope.auth_result?.ok, "authenticated");
}

async function expectClosed(client: WireClient, code: number, errorCode?: number, reason?: RegExp) {
  const closed = await client.closed();
  assert.is(closed.code, code, `close code (reason: ${closed.reason})`);
  if (errorCode !== undefined)
    assert.is(closed.error?.code, errorCode, `error frame: ${closed.error?.message}`);
  if (reason) assert.match(closed.reason, reason);
  return closed;
}

async function collectorMetric(name: string, labels: Record<string, string> = {}) {
  return metricValue(await collector.metrics(), name, labels);
}

// A well-behaved agent streams the whole time; it must never notice the attacks.
let good: { spool: Spool; shipper: SpoolShipper; stop: boolean; produced: Promise<void> };

test.before(async () => {
  pki = createTestPki(dir);
  ca = readFileSync(pki.caFile);
  collector = await CollectorProcess.create({
    name: "security-collector",
    dir,
    pki,
    ingest: { max_frame_bytes: MAX_FRAME, handshake_timeout_ms: 3000 },
  });
  await collector.start();
  token = collector.createToken();
  const spool = await Spool.open({ dir: join(dir, "good-spool"), agentId: "good", maxBytes: 1 << 30 });
  const shipper = new SpoolShipper({
    spool,
    connect: () => session("good"),
    logger: silentLogger(),
    window: 16,
    maxInFlightBytes: 1 << 20,
    ackTimeoutMs: 5000,
    reconnectMinMs: 100,
    reconnectMaxMs: 500,
  });
  shipper.start();
  good = { spool, shipper, stop: false, produced: Promise.resolve() };
  good.produced = (async () => {
    for (let i = 0; !good.stop; i++) {
      await spool.append({ telemetry_batch: { samples: [{ scope: 1, ts_ms: 1_000 + i }] } });
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await waitFor(() => spool.stats().nextSeq > 5 && spool.pendingFrames < 3, {
    timeoutMs: 20_000,
    what: "the good agent to stream",
  });
});

test.after(async () => {
  good.stop = true;
  await good.produced;
  await good.shipper.stop();
  await good.spool.close();
  await killAll();
  rmSync(dir, { recursive: true, force: true });
});

test("plain ws:// against the TLS endpoint is refused, the agent refuses ws:// itself, no TLS no start", async () => {
  const before = await collectorMetric("shadowvm_collector_auth_failures_total", { reason: "tls_handshake" });
  try {
    await WireClient.connect(`ws://localhost:${collector.ingestPort}`, { timeoutMs: 3000 });
    assert.unreachable("a plain WebSocket must not open on the TLS port");
  } catch (err) {
    assert.not.match(String(err), /unreachable/);
  }
  try {
    await session("plain", { url: `ws://localhost:${collector.ingestPort}`, insecure: true });
    assert.unreachable();
  } catch (err) {
    assert.instance(err, SessionError);
  }
  await waitFor(
    async () =>
      (await collectorMetric("shadowvm_collector_auth_failures_total", { reason: "tls_handshake" })) > before,
    { timeoutMs: 3000, what: "the refused TLS handshake to be counted" },
  );
  // The agent itself never sends credentials over ws:// unless told it is a test.
  try {
    await session("plain", { url: `ws://localhost:${collector.ingestPort}` });
    assert.unreachable();
  } catch (err) {
    assert.is((err as SessionError).code, "insecure");
  }
  try {
    loadAgentConfig({}, { SHADOWVM_AGENT__COLLECTOR__URL: "ws://collector:7443" });
    assert.unreachable();
  } catch (err) {
    assert.instance(err, ConfigError);
    assert.match(String((err as Error).message), /collector\.url is invalid: expected wss:\/\//);
  }
  // A collector that requires TLS but has no certificate does not start.
  const conf = join(dir, "no-tls.yaml");
  writeFileSync(conf, `data_dir: ${join(dir, "no-tls")}\ningest: { port: 0 }\nmetrics: { enabled: false }\n`);
  const { spawnSync } = await import("node:child_process");
  const r = spawnSync(process.execPath, [COLLECTOR_BIN, "serve", "--config", conf], {
    encoding: "utf8",
    timeout: 20_000,
  });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /tls\.cert_file is invalid/);
  assert.is(await collector.ready(), 200);
});

test("no token, a wrong token and a revoked token cannot enroll", async () => {
  // The agent without a token does not even try.
  try {
    await session("no-token", { token: undefined });
    assert.unreachable();
  } catch (err) {
    assert.is((err as SessionError).code, "not_enrolled");
  }
  // Skipping enrollment: proving a secret the collector never issued.
  let c = await raw();
  const h = await hello(c, "no-token");
  assert.is(h.enrolled, false);
  c.send(
    frame("no-token", {
      auth_response: { proof: agentProof(randomBytes(32), "no-token", h.serverNonce, h.clientNonce) },
    }),
  );
  await expectClosed(c, 1008, ErrorCode.ERROR_CODE_UNAUTHENTICATED, /not enrolled/);
  // An empty token is not even a valid frame (built by hand: the encoder refuses it).
  c = await raw();
  await hello(c, "no-token");
  const idBytes = [...Buffer.from("no-token")];
  c.send(new Uint8Array([0x0a, idBytes.length, ...idBytes, (12 << 3) | 2, 0]));
  const closed = await expectClosed(c, 1007, ErrorCode.ERROR_CODE_INVALID_MESSAGE);
  assert.match(closed.error?.message ?? "", /enrollment_token must be a non-empty string/);
  // Wrong tokens: unknown id, right id with a wrong secret.
  const id = token.split("_")[1]!;
  for (const [bad, why] of [
    [`svmt_0123456789abcdef_${randomBytes(32).toString("base64url")}`, /unknown/],
    [`svmt_${id}_${randomBytes(32).toString("base64url")}`, /mismatch/],
  ] as const) {
    try {
      await session("wrong-token", { token: bad });
      assert.unreachable();
    } catch (err) {
      assert.is((err as SessionError).code, "enrollment_rejected");
      assert.match((err as Error).message, why);
    }
  }
  // A revoked token.
  const revoked = collector.createToken();
  const revokedId = revoked.split("_")[1]!;
  assert.is(collector.cli(["token", "revoke", revokedId]).code, 0);
  assert.match(collector.cli(["token", "list"]).stdout, new RegExp(`${revokedId}\\s+revoked`));
  try {
    await session("revoked-token", { token: revoked });
    assert.unreachable();
  } catch (err) {
    assert.is((err as SessionError).code, "enrollment_rejected");
    assert.match((err as Error).message, /revoked/);
  }
  assert.ok(
    (await collectorMetric("shadowvm_collector_auth_failures_total", { reason: "token_revoked" })) >= 1,
  );
  assert.ok(
    (await collectorMetric("shadowvm_collector_auth_failures_total", { reason: "token_mismatch" })) >= 1,
  );
  assert.match(collector.cli(["agents", "list"]).stdout, /good/);
  assert.not.match(collector.cli(["agents", "list"]).stdout, /revoked-token|wrong-token|no-token/);
});

test("one agent's credentials cannot act as another agent", async () => {
  (await session("alice")).close();
  (await session("bob")).close();
  const alice = credentials("alice").load("alice")!.secret;
  // Alice's secret, Bob's id.
  let c = await raw();
  const h = await hello(c, "bob");
  assert.is(h.enrolled, true);
  c.send(frame("bob", { auth_response: { proof: agentProof(alice, "bob", h.serverNonce, h.clientNonce) } }));
  await expectClosed(c, 1008, ErrorCode.ERROR_CODE_UNAUTHENTICATED, /wrong proof/);
  // Authenticated as Alice, a frame for Bob.
  c = await raw();
  await authenticate(c, "alice", alice);
  c.send(frame("bob", { telemetry_batch: { samples: [{ scope: 1, ts_ms: 1 }] } }, 1));
  await expectClosed(
    c,
    1008,
    ErrorCode.ERROR_CODE_UNAUTHENTICATED,
    /agent "bob" on a connection of agent "alice"/,
  );
  // Holding a token does not let anyone take over an enrolled id.
  c = await raw();
  await hello(c, "alice");
  c.send(frame("alice", { enroll_request: { enrollment_token: token } }));
  await expectClosed(c, 1008, ErrorCode.ERROR_CODE_ENROLLMENT_REJECTED, /already enrolled/);
  // A recorded proof does not work again (the server nonce is fresh).
  c = await raw();
  const h1 = await hello(c, "alice");
  const proof = agentProof(alice, "alice", h1.serverNonce, h1.clientNonce);
  c.close();
  c = await raw();
  c.send(
    frame("alice", {
      hello: { agent_id: "alice", protocol_version: PROTOCOL_VERSION, client_nonce: h1.clientNonce },
    }),
  );
  await c.expect("auth_challenge");
  c.send(frame("alice", { auth_response: { proof } }));
  await expectClosed(c, 1008, ErrorCode.ERROR_CODE_UNAUTHENTICATED);
  // Data before authentication.
  c = await raw();
  c.send(frame("alice", { telemetry_batch: { samples: [{ scope: 1, ts_ms: 1 }] } }, 1));
  await expectClosed(c, 1008, ErrorCode.ERROR_CODE_UNAUTHENTICATED, /expected hello/);
  assert.ok(
    (await collectorMetric("shadowvm_collector_auth_failures_total", { reason: "agent_id_mismatch" })) >= 1,
  );
  assert.ok(
    (await collectorMetric("shadowvm_collector_auth_failures_total", { reason: "wrong_proof" })) >= 2,
  );
});

test("a revoked agent is disconnected and cannot come back", async () => {
  const s = await session("mallory");
  let closed = "";
  s.on("close", (reason) => {
    closed = reason;
  });
  assert.is(collector.cli(["agents", "revoke", "mallory"]).code, 0);
  await waitFor(() => closed || undefined, {
    timeoutMs: 5000,
    what: "the revoked agent's connection to close",
  });
  assert.match(closed, /revoked/, closed);
  try {
    await session("mallory", { token: undefined });
    assert.unreachable();
  } catch (err) {
    assert.is((err as SessionError).code, "not_enrolled");
  }
});

test("oversized, truncated, garbage, deeply nested and text frames close only their connection", async () => {
  const alice = credentials("alice").load("alice")!.secret;
  const goodSeqBefore = good.spool.stats().nextSeq;
  const goodAckedBefore = goodSeqBefore - good.spool.pendingFrames;
  const big = frame(
    "alice",
    {
      telemetry_batch: {
        samples: Array.from({ length: 6000 }, (_, i) => ({ scope: 1, ts_ms: i + 1, cpu_usage: 1.5 })),
      },
    },
    1,
  );
  assert.ok(big.byteLength > MAX_FRAME);
  const valid = frame("alice", { telemetry_batch: { samples: [{ scope: 1, ts_ms: 5, cpu_usage: 0.5 }] } }, 1);
  // 5000 nested unknown groups: field 100, start group (0xa3 0x06) ... end group (0xa4 0x06).
  const nested = new Uint8Array([
    ...frame("alice", { heartbeat: {} }),
    ...Array.from({ length: 5000 }, () => [0xa3, 0x06]).flat(),
    ...Array.from({ length: 5000 }, () => [0xa4, 0x06]).flat(),
  ]);
  const huge = new Uint8Array(3 * MAX_FRAME).fill(0x41);
  const cases: { name: string; data: Uint8Array | string; code: number; error?: number; reason: string }[] = [
    {
      name: "oversized",
      data: big,
      code: 1009,
      error: ErrorCode.ERROR_CODE_FRAME_TOO_LARGE,
      reason: "oversized",
    },
    { name: "huge (refused unread)", data: huge, code: 1009, reason: "oversized" },
    {
      name: "truncated",
      data: valid.subarray(0, valid.byteLength - 3),
      code: 1007,
      error: ErrorCode.ERROR_CODE_MALFORMED_FRAME,
      reason: "truncated",
    },
    {
      name: "garbage",
      data: new Uint8Array(Buffer.from("\x0f\x0fnot protobuf at all")),
      code: 1007,
      error: ErrorCode.ERROR_CODE_MALFORMED_FRAME,
      reason: "malformed",
    },
    {
      name: "deeply nested",
      data: nested,
      code: 1007,
      error: ErrorCode.ERROR_CODE_MALFORMED_FRAME,
      reason: "too_deep",
    },
    { name: "text", data: "hello", code: 1003, error: ErrorCode.ERROR_CODE_MALFORMED_FRAME, reason: "text" },
  ];
  for (const authed of [false, true]) {
    for (const k of cases) {
      const before = await collectorMetric("shadowvm_collector_frames_rejected_total", { reason: k.reason });
      const c = await raw();
      if (authed) await authenticate(c, "alice", alice);
      c.send(k.data);
      await expectClosed(c, k.code, k.error);
      assert.is(
        await collectorMetric("shadowvm_collector_frames_rejected_total", { reason: k.reason }),
        before + 1,
        `${k.name} counted`,
      );
      assert.is(await collector.ready(), 200, `collector still ready after ${k.name}`);
    }
  }
  assert.ok(collector.running, "the collector process is alive");
  // The well-behaved agent kept streaming on its own connection the whole time.
  await waitFor(() => good.spool.stats().nextSeq - good.spool.pendingFrames > goodAckedBefore + 10, {
    timeoutMs: 10_000,
    what: "the good agent's frames to keep being acknowledged",
  });
  assert.is(
    await collectorMetric("shadowvm_collector_connections", { state: "authenticated" }),
    1,
    "only the good agent is connected",
  );
});

test("a frame the collector refuses for good is set aside; the frames after it flow", async () => {
  const spool = await Spool.open({ dir: join(dir, "big-spool"), agentId: "big", maxBytes: 1 << 30 });
  const shipper = new SpoolShipper({
    spool,
    connect: () => session("big"),
    logger: silentLogger(),
    window: 4,
    maxInFlightBytes: 1 << 20,
    ackTimeoutMs: 5000,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
  });
  try {
    await spool.append({ telemetry_batch: { samples: [{ scope: 1, ts_ms: 1 }] } });
    // Fine for this agent (4 MiB limit), too large for this collector (64 KiB).
    const tooBig = Array.from({ length: 6000 }, (_, i) => ({ scope: 1, ts_ms: 10 + i, cpu_usage: 1.5 }));
    const refused = await spool.append({ telemetry_batch: { samples: tooBig } });
    await spool.append({ telemetry_batch: { samples: [{ scope: 1, ts_ms: 2 }] } });
    shipper.start();
    await waitFor(() => spool.pendingFrames === 0, {
      timeoutMs: 15_000,
      what: "the big agent's spool to drain",
    });
    assert.is(spool.stats().deadLetters, 1, "the refused frame is kept as a dead letter");
    assert.is(spool.stats().nextSeq, refused.seq + 2);
    assert.ok(
      (await collectorMetric("shadowvm_collector_frames_committed_total")) > 0 &&
        (await collectorMetric("shadowvm_collector_frames_rejected_total", { reason: "oversized" })) >= 3,
    );
  } finally {
    await shipper.stop();
    await spool.close();
  }
});

test.run();
