import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { AuthStore } from "./auth-store.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-auth-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test("tokens: shown once, stored hashed, checked, expired and revoked", () => {
  const store = new AuthStore(join(dir, "a"));
  const { token, record } = store.createToken({ ttlMs: 60_000, description: "rack 4", now: 1000 });
  assert.match(token, /^svmt_[0-9a-f]{16}_[\w-]{43}$/);
  const file = readFileSync(join(dir, "a", "tokens", `${record.id}.json`), "utf8");
  assert.not.ok(file.includes(token.slice("svmt_".length + 17)), "the secret part is not stored");
  assert.is(statSync(join(dir, "a", "tokens", `${record.id}.json`)).mode & 0o777, 0o600);
  assert.is(statSync(join(dir, "a")).mode & 0o777, 0o700);
  assert.ok(store.checkToken(token, 2000).ok);
  assert.equal(store.checkToken(token, 61_000), { ok: false, reason: "expired" });
  // A different last character (never the same one: the token is random).
  const tampered = `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`;
  assert.equal(store.checkToken(tampered, 2000).ok, false);
  assert.equal(store.checkToken("nonsense"), { ok: false, reason: "malformed" });
  assert.equal(store.checkToken(`svmt_0000000000000000_${"a".repeat(43)}`), { ok: false, reason: "unknown" });
  assert.ok(store.revokeToken(record.id, 3000));
  assert.equal(store.checkToken(token, 4000), { ok: false, reason: "revoked" });
  assert.not.ok(store.revokeToken("../../etc/passwd"));
  assert.is(store.listTokens()[0]?.revoked_at_ms, 3000);
});

test("agents: one enrollment per id, any id is a safe file name, revocation keeps a record", () => {
  const store = new AuthStore(join(dir, "b"));
  const id = "../weird/agent id\u00e9";
  const secret = store.enrollAgent(id, "t1", "host-a");
  assert.ok(secret && secret.byteLength === 32);
  assert.equal(store.agentSecret(id), secret);
  assert.is(store.enrollAgent(id, "t1", "host-b"), undefined, "a second enrollment is refused");
  assert.equal(
    store.listAgents().map((a) => [a.agent_id, a.hostname]),
    [[id, "host-a"]],
  );
  assert.not.ok(JSON.stringify(store.listAgents()).includes("secret"));
  assert.ok(store.revokeAgent(id, 5));
  assert.is(store.agentSecret(id), undefined);
  assert.not.ok(store.revokeAgent(id));
  assert.is(readdirSync(join(dir, "b", "revoked")).length, 1);
  assert.ok(store.enrollAgent(id, "t2", "host-c"), "after revocation the id can enroll again");
  assert.not.equal(store.agentSecret(id), secret);
});

test.run();
