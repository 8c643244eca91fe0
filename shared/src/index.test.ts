import { test } from "uvu";
import * as assert from "uvu/assert";
import { SHADOWVM_VERSION } from "./index.js";

test("exposes a semantic version", () => {
  assert.match(SHADOWVM_VERSION, /^\d+\.\d+\.\d+$/);
});

test.run();
