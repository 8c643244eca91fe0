import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { z } from "zod";
import { ConfigError, loadConfig } from "./load-config.js";

const schema = z
  .object({
    name: z.string().min(1).default("host"),
    hypervisor: z
      .object({
        qmp_timeout_ms: z.number().int().positive().default(5000),
        qmp_sockets: z.array(z.string()).default([]),
      })
      .strict()
      .prefault({}),
    mode: z.enum(["user", "netns"]).default("user"),
  })
  .strict();

const dir = mkdtempSync(join(tmpdir(), "shadowvm-config-"));
function yamlFile(text: string): string {
  const file = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return file;
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.instance(err, ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

test("defaults apply when no file is given", () => {
  const cfg = loadConfig(schema, { envPrefix: "T__", env: {} });
  assert.equal(cfg, { name: "host", hypervisor: { qmp_timeout_ms: 5000, qmp_sockets: [] }, mode: "user" });
});

test("file values then environment overrides, parsed as YAML scalars", () => {
  const file = yamlFile("name: a\nhypervisor:\n  qmp_timeout_ms: 100\n");
  const cfg = loadConfig(schema, {
    file,
    envPrefix: "T__",
    env: { T__HYPERVISOR__QMP_TIMEOUT_MS: "250", T__HYPERVISOR__QMP_SOCKETS: "[/a.qmp, /b.qmp]", OTHER: "x" },
  });
  assert.is(cfg.name, "a");
  assert.is(cfg.hypervisor.qmp_timeout_ms, 250);
  assert.equal(cfg.hypervisor.qmp_sockets, ["/a.qmp", "/b.qmp"]);
});

test("an invalid value names the key, the expectation and the actual value", () => {
  const file = yamlFile("hypervisor:\n  qmp_timeout_ms: -5\n");
  const err = errorOf(() => loadConfig(schema, { file, envPrefix: "T__", env: {} }));
  assert.match(err.message, file);
  assert.match(err.message, "hypervisor.qmp_timeout_ms is invalid: expected number to be >0 (actual: -5)");
});

test("an override from the environment is named as the source", () => {
  const err = errorOf(() => loadConfig(schema, { envPrefix: "T__", env: { T__MODE: "bridge" } }));
  assert.match(err.message, "T__MODE");
  assert.match(err.message, 'mode is invalid: expected one of "user"|"netns" (actual: "bridge")');
});

test("unknown keys are rejected, nested ones with their full path", () => {
  const file = yamlFile("hypervisr: {}\nhypervisor:\n  qmp_timout_ms: 3\n");
  const err = errorOf(() => loadConfig(schema, { file, envPrefix: "T__", env: {} }));
  assert.is(err.problems.length, 2);
  assert.match(err.message, "unknown key hypervisr");
  assert.match(err.message, "unknown key hypervisor.qmp_timout_ms");
});

test("a missing file, invalid YAML and a non-mapping document each give one clear error", () => {
  assert.match(
    errorOf(() => loadConfig(schema, { file: join(dir, "nope.yaml"), envPrefix: "T__" })).message,
    "file not found",
  );
  assert.match(
    errorOf(() => loadConfig(schema, { file: yamlFile("a: [1, 2"), envPrefix: "T__" })).message,
    "not valid YAML",
  );
  assert.match(
    errorOf(() => loadConfig(schema, { file: yamlFile("- 1\n- 2\n"), envPrefix: "T__" })).message,
    "expected a mapping",
  );
});

test("an empty file means all defaults", () => {
  const cfg = loadConfig(schema, { file: yamlFile(""), envPrefix: "T__", env: {} });
  assert.is(cfg.mode, "user");
});

test.run();
