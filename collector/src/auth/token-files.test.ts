import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ApiTokenStore } from "../api/api-token-store.js";
import { newToken, parseToken, readJsonFile, secretMatches, writeFileAtomic } from "./token-files.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-token-files-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test("a new token parses back to its id and secret, and only its own prefix", () => {
  const t = newToken("svma");
  assert.match(t.token, /^svma_[0-9a-f]{16}_[\w-]{43}$/);
  const parsed = parseToken("svma", t.token);
  assert.is(parsed?.id, t.id);
  assert.ok(secretMatches(parsed!.secret, t.sha256));
  assert.is(parseToken("svmt", t.token), undefined, "an API token is no enrollment token");
  assert.is(parseToken("svma", `${t.token}x`), undefined);
  assert.is(parseToken("svma", t.token.replace(t.id, t.id.toUpperCase())), undefined);
});

test("secretMatches: another secret or no stored hash never matches", () => {
  const t = newToken("svmt");
  const secret = parseToken("svmt", t.token)!.secret;
  assert.not.ok(secretMatches(`${secret.slice(0, -1)}${secret.endsWith("A") ? "B" : "A"}`, t.sha256));
  assert.not.ok(secretMatches(secret, undefined));
  // The hash of nothing stored is all zeros: a secret hashing to it must still not match.
  assert.not.ok(secretMatches(secret, "0".repeat(64)));
});

test("writeFileAtomic: mode 0600, no temporary file left; readJsonFile: missing, corrupt", () => {
  const path = join(dir, "record.json");
  writeFileAtomic(path, '{"a":1}\n');
  assert.is(statSync(path).mode & 0o777, 0o600);
  assert.equal(readdirSync(dir), ["record.json"]);
  assert.equal(readJsonFile(path), { a: 1 });
  assert.is(readJsonFile(join(dir, "missing.json")), undefined);
  writeFileSync(path, '{"a":');
  assert.throws(() => readJsonFile(path), /record\.json is not valid JSON/);
});

test("API tokens: a corrupt token file is a clear error, not a raw parse error", () => {
  const store = new ApiTokenStore(join(dir, "api"));
  const { token, record } = store.create({ scope: "read" });
  assert.ok(store.check(token).ok);
  writeFileSync(join(dir, "api", `${record.id}.json`), "not json");
  assert.throws(() => store.check(token), new RegExp(`${record.id}\\.json is not valid JSON`));
});

test.run();
