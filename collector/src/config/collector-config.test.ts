import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { checkServeConfig, databasePath, loadCollectorConfig } from "./collector-config.js";

const dir = mkdtempSync(join(tmpdir(), "shadowvm-cconf-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const EXAMPLE = fileURLToPath(new URL("../../../deploy/config/collector.example.yaml", import.meta.url));

test("the shipped example config is valid, complete, and means the defaults it documents", () => {
  const example = loadCollectorConfig({ file: EXAMPLE }, {});
  const defaults = loadCollectorConfig({ file: undefined }, {});
  // Only the certificate paths are examples; every other value is the default.
  assert.equal(example, {
    ...defaults,
    tls: { ...defaults.tls, cert_file: example.tls.cert_file, key_file: example.tls.key_file },
  });
  // Every key of every section is written out (not just defaulted), so operators find them all.
  const text = readFileSync(EXAMPLE, "utf8");
  for (const [section, keys] of Object.entries(defaults)) {
    if (typeof keys !== "object" || keys === null || Array.isArray(keys)) continue;
    const body = new RegExp(`^${section}:\\n((?:[ #].*\\n|\\n)*)`, "m").exec(text)?.[1] ?? "";
    for (const key of Object.keys(keys))
      assert.match(body, new RegExp(`^  ${key}:`, "m"), `${section}.${key} in the example config`);
  }
});

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

test("serving refuses a retention shorter than what the risk engine reads, and a bad prune schedule", () => {
  const short = loadCollectorConfig(
    {},
    {
      SHADOWVM_COLLECTOR__TLS__REQUIRED: "false",
      SHADOWVM_COLLECTOR__RETENTION__SHADOW_RESULTS_DAYS: "0.5",
    },
  );
  assert.throws(
    () => checkServeConfig(short),
    /retention\.shadow_results_days is invalid: expected 0 \(keep forever\) or at least 1 days, the risk\.unstressed_window_h/,
  );
  assert.throws(
    () => loadCollectorConfig({}, { SHADOWVM_COLLECTOR__RETENTION__SCHEDULE: "every hour" }),
    /retention\.schedule.*expected a cron expression/,
  );
});

test.run();
