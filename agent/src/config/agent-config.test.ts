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
});

test("--data-dir overrides the file", () => {
  assert.is(loadAgentConfig({ file: EXAMPLE, dataDir: "/srv/svm" }, {}).data_dir, "/srv/svm");
});

test.run();
