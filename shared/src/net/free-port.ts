// A free local TCP port, for the demo VM's port forward, the shadow lab's loopback forwards, the
// whole-loop demo's services and the tests' processes.
import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close). Another
 * process can take it before the caller binds it; callers that bind it themselves should retry.
 */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port ? res(port) : rej(new Error("no port from listen(0)"))));
    });
  });
}
