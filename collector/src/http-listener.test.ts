import { test } from "uvu";
import * as assert from "uvu/assert";
import { listenHttp } from "./http-listener.js";

const hello = () => new Response("hello\n");

test("serves on the port the kernel picked, and closes", async () => {
  const listener = await listenHttp(hello, "127.0.0.1", 0, "test endpoint");
  try {
    assert.ok(listener.port > 0);
    const res = await fetch(`http://127.0.0.1:${listener.port}/`);
    assert.is(await res.text(), "hello\n");
  } finally {
    await listener.close();
  }
  const after = await fetch(`http://127.0.0.1:${listener.port}/`).then(
    () => "answered",
    (e: Error) => (e.cause as NodeJS.ErrnoException | undefined)?.code,
  );
  assert.is(after, "ECONNREFUSED", "nothing listens after close");
});

test("a port in use is a clear error naming the listener", async () => {
  const first = await listenHttp(hello, "127.0.0.1", 0, "query API");
  try {
    const err = await listenHttp(hello, "127.0.0.1", first.port, "query API").then(
      (second) => second.close().then(() => undefined),
      (e: Error) => e,
    );
    assert.instance(err, Error);
    assert.match(
      err!.message,
      `cannot listen on 127.0.0.1:${first.port} for the query API: the port is in use (another collector?)`,
    );
  } finally {
    await first.close();
  }
});

test.run();
