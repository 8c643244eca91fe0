// The proofs of the agent authentication flow described in shared/proto/shadowvm/v1/control.proto:
// enroll once with an operator-issued token to get a per-agent secret, then on every connection
// prove knowledge of the secret with an HMAC over both sides' fresh nonces, and check the
// collector's counter-proof. Both the agent and the collector call these, so they cannot disagree
// on the byte layout.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Size of the nonces this implementation creates; the protocol accepts 16..64 bytes. */
export const AUTH_NONCE_BYTES = 32;
export const MIN_NONCE_BYTES = 16;
export const MAX_NONCE_BYTES = 64;
/** Size of a per-agent secret; the protocol accepts 16..64 bytes. */
export const AGENT_SECRET_BYTES = 32;
/** HMAC-SHA256 output. */
export const PROOF_BYTES = 32;

const AGENT_LABEL = "shadowvm.v1/agent-proof";
const COLLECTOR_LABEL = "shadowvm.v1/collector-proof";

export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(AUTH_NONCE_BYTES));
}

export function newAgentSecret(): Uint8Array {
  return new Uint8Array(randomBytes(AGENT_SECRET_BYTES));
}

/** HMAC-SHA256(secret, label || lp(part1) || lp(part2) ...), lp = 4-byte big-endian length + bytes. */
function mac(secret: Uint8Array, label: string, parts: Uint8Array[]): Uint8Array {
  if (secret.byteLength === 0) throw new Error("auth: the agent secret is empty");
  const h = createHmac("sha256", secret).update(label);
  for (const part of parts) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(part.byteLength);
    h.update(len).update(part);
  }
  return new Uint8Array(h.digest());
}

/** What the agent sends in AuthResponse.proof. */
export function agentProof(
  secret: Uint8Array,
  agentId: string,
  serverNonce: Uint8Array,
  clientNonce: Uint8Array,
): Uint8Array {
  return mac(secret, AGENT_LABEL, [Buffer.from(agentId, "utf8"), serverNonce, clientNonce]);
}

/** What the collector sends in AuthResult.server_proof. */
export function collectorProof(
  secret: Uint8Array,
  agentId: string,
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
): Uint8Array {
  return mac(secret, COLLECTOR_LABEL, [Buffer.from(agentId, "utf8"), clientNonce, serverNonce]);
}

/** Constant-time comparison of an expected proof with a received one (any length). */
export function proofMatches(expected: Uint8Array, received: Uint8Array | null | undefined): boolean {
  if (!received || received.byteLength !== expected.byteLength) return false;
  return timingSafeEqual(expected, received);
}
