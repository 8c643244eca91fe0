import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  AUTH_NONCE_BYTES,
  agentProof,
  collectorProof,
  newAgentSecret,
  newNonce,
  PROOF_BYTES,
  proofMatches,
} from "./auth.js";
import { decodeFrame, encodeFrame, PROTOCOL_VERSION } from "./frame.js";

const secret = Uint8Array.from({ length: 32 }, (_, i) => i);
const serverNonce = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
const clientNonce = Uint8Array.from({ length: 32 }, (_, i) => 200 - i);

test("proofs are HMAC-SHA256 over the label and the length-prefixed parts", async () => {
  const { createHmac } = await import("node:crypto");
  const lp = (b: Uint8Array) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.byteLength);
    return Buffer.concat([len, b]);
  };
  const expected = createHmac("sha256", secret)
    .update("shadowvm.v1/agent-proof")
    .update(lp(Buffer.from("agent-7")))
    .update(lp(serverNonce))
    .update(lp(clientNonce))
    .digest();
  const proof = agentProof(secret, "agent-7", serverNonce, clientNonce);
  assert.is(proof.byteLength, PROOF_BYTES);
  assert.equal(Array.from(proof), Array.from(expected));
});

test("each input changes the proof; agent and collector proofs differ", () => {
  const base = agentProof(secret, "agent-7", serverNonce, clientNonce);
  const other = new Uint8Array(secret);
  other[0] = 99;
  const variants = [
    agentProof(other, "agent-7", serverNonce, clientNonce),
    agentProof(secret, "agent-8", serverNonce, clientNonce),
    agentProof(secret, "agent-7", clientNonce, serverNonce),
    agentProof(secret, "agent-7", serverNonce, newNonce()),
    collectorProof(secret, "agent-7", serverNonce, clientNonce),
    collectorProof(secret, "agent-7", clientNonce, serverNonce),
  ];
  for (const v of variants) assert.not.ok(proofMatches(base, v));
  assert.ok(proofMatches(base, agentProof(secret, "agent-7", serverNonce, clientNonce)));
});

test("length prefixes keep shifted boundaries apart", () => {
  // Without them, ("ab", nonce) and ("a", "b" + nonce) would hash the same bytes.
  const n1 = Uint8Array.from([0x62, ...serverNonce]);
  assert.not.ok(
    proofMatches(
      agentProof(secret, "ab", serverNonce, clientNonce),
      agentProof(secret, "a", n1, clientNonce),
    ),
  );
});

test("proofMatches refuses missing or wrongly sized proofs", () => {
  const p = agentProof(secret, "a", serverNonce, clientNonce);
  assert.not.ok(proofMatches(p, null));
  assert.not.ok(proofMatches(p, undefined));
  assert.not.ok(proofMatches(p, p.subarray(0, 31)));
  assert.not.ok(proofMatches(p, new Uint8Array(0)));
});

test("random material has the documented sizes and differs between calls", () => {
  assert.is(newNonce().byteLength, AUTH_NONCE_BYTES);
  assert.is(newAgentSecret().byteLength, 32);
  assert.not.equal(Array.from(newNonce()), Array.from(newNonce()));
  assert.throws(() => agentProof(new Uint8Array(0), "a", serverNonce, clientNonce), /secret is empty/);
});

test("the whole handshake over frames: enroll, prove, counter-prove", () => {
  const agentId = "agent-7";
  const send = (env: Parameters<typeof encodeFrame>[0]) => decodeFrame(encodeFrame(env));
  // Collector state.
  const secrets = new Map<string, Uint8Array>();
  const tokens = new Set(["enroll-token-1"]);

  const cNonce = newNonce();
  const hello = send({
    agent_id: agentId,
    hello: {
      agent_id: agentId,
      agent_version: "0.1.0",
      protocol_version: PROTOCOL_VERSION,
      client_nonce: cNonce,
    },
  });
  const sNonce = newNonce();
  const challenge = send({
    agent_id: hello.agent_id,
    auth_challenge: { server_nonce: sNonce, enrolled: secrets.has(hello.agent_id) },
  });
  assert.is(challenge.auth_challenge?.enrolled, false);

  const enroll = send({ agent_id: agentId, enroll_request: { enrollment_token: "enroll-token-1" } });
  assert.ok(tokens.has(enroll.enroll_request?.enrollment_token ?? ""));
  secrets.set(agentId, newAgentSecret());
  const enrolled = send({ agent_id: agentId, enroll_result: { agent_secret: secrets.get(agentId) } });
  const agentSecret = enrolled.enroll_result?.agent_secret ?? new Uint8Array(0);

  const response = send({
    agent_id: agentId,
    auth_response: {
      proof: agentProof(agentSecret, agentId, challenge.auth_challenge?.server_nonce ?? cNonce, cNonce),
    },
  });
  const stored = secrets.get(response.agent_id) ?? new Uint8Array(0);
  const expected = agentProof(stored, response.agent_id, sNonce, hello.hello?.client_nonce ?? sNonce);
  assert.ok(proofMatches(expected, response.auth_response?.proof));

  const result = send({
    agent_id: agentId,
    auth_result: {
      ok: true,
      server_proof: collectorProof(stored, agentId, cNonce, sNonce),
      heartbeat_interval_ms: 5000,
    },
  });
  assert.ok(
    proofMatches(collectorProof(agentSecret, agentId, cNonce, sNonce), result.auth_result?.server_proof),
  );
  // A replayed response does not pass against the next connection's fresh server nonce.
  const next = agentProof(stored, agentId, newNonce(), cNonce);
  assert.not.ok(proofMatches(next, response.auth_response?.proof));
});

test.run();
