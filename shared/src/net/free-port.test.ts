import { createServer } from "node:net";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { freePort } from "../index.js";

test("freePort: a port that can be bound on 127.0.0.1", async () => {
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
  const srv = createServer();
  await new Promise<void>((res, rej) => {
    srv.once("error", rej);
    srv.listen(port, "127.0.0.1", () => res());
  });
  await new Promise<void>((res) => srv.close(() => res()));
});

test.run();
