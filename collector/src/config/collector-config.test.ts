import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { checkServeConfig, databasePath, loadCollectorConfig } from "./collector-config.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-cconf-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test("defaults, file, then SHADOWVM_COLLECTOR__ overrides", () => {
  const file = join(dir, "c.yaml");
  writeFileSync(file, "data_dir: /srv/svm\ningest:\n  port: 9000\n");
  const c = loadCollectorConfig({ file }, { SHADOWVM_COLLECTOR__INGEST__BATCH_MAX_ROWS: "1000" });
  assert.is(c.ingest.port, 9000);
  assert.is(c.ingest.batch_max_rows, 1000);
  assert.is(c.metrics.port, 9466);
  assert.is(c.tls.required, true);
  assert.is(databasePath(c), "/srv/svm/shadowvm.duckdb");
});

test("errors name the key, the expectation and the value", () => {
  try {
    loadCollectorConfig({}, { SHADOWVM_COLLECTOR__INGEST__HEARTBEAT_INTERVAL_MS: "-5" });
    assert.unreachable();
  } catch (err) {
    assert.instance(err, ConfigError);
    assert.match((err as Error).message, /ingest\.heartbeat_interval_ms is invalid: .*\(actual: -5\)/);
  }
  try {
    loadCollectorConfig({}, { SHADOWVM_COLLECTOR__INGEST__PORTT: "1" });
    assert.unreachable();
  } catch (err) {
    assert.match((err as Error).message, /unknown key ingest\.portt/);
  }
});

test("serving requires a certificate unless TLS is explicitly not required", () => {
  const c = loadCollectorConfig({}, {});
  assert.throws(() => checkServeConfig(c), /tls\.cert_file is invalid: expected a PEM certificate/);
  checkServeConfig(loadCollectorConfig({}, { SHADOWVM_COLLECTOR__TLS__REQUIRED: "false" }));
  const half = loadCollectorConfig({}, { SHADOWVM_COLLECTOR__TLS__CERT_FILE: "/x.pem" });
  assert.throws(() => checkServeConfig(half), /go together/);
});

test.run();
