import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { loadAgentConfig } from "./agent-config.js";

const EXAMPLE = fileURLToPath(new URL("../../../deploy/config/agent.example.yaml", import.meta.url));

test("the shipped example config is valid and means the defaults it documents", () => {
  const example = loadAgentConfig({ file: EXAMPLE }, {});
  const defaults = loadAgentConfig({ file: undefined }, {});
  // The example documents the defaults: loading it must give the same configuration.
  assert.equal(example, defaults);
  // Every key of every section is written out (optional ones as a comment), so operators find them all.
  const text = readFileSync(EXAMPLE, "utf8");
  for (const [section, keys] of Object.entries(defaults)) {
    if (typeof keys !== "object" || keys === null || Array.isArray(keys)) continue;
    const body = new RegExp(`^${section}:\\n((?:[ #].*\\n|\\n)*)`, "m").exec(text)?.[1] ?? "";
    for (const key of Object.keys(keys))
      assert.match(body, new RegExp(`^  (# )?${key}:`, "m"), `${section}.${key} in the example config`);
  }
});

test("--data-dir overrides the file", () => {
  assert.is(loadAgentConfig({ file: EXAMPLE, dataDir: "/srv/svm" }, {}).data_dir, "/srv/svm");
});

test.run();
