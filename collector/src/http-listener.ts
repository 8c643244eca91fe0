// The collector's plain-HTTP listeners (the query API, the operations endpoints): a hono fetch
// handler on a host and port, with a close that does not wait for idle keep-alive connections.
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createError } from "@shadowvm/shared";

export interface HttpListener {
  /** The bound port (the one asked for, or the one the kernel picked for port 0). */
  port: number;
  close(): Promise<void>;
}

/** Listens on host:port; `what` names the listener in the error when the port cannot be bound. */
export function listenHttp(
  fetch: (req: Request) => Response | Promise<Response>,
  host: string,
  port: number,
  what: string,
): Promise<HttpListener> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname: host, port }, (info: AddressInfo) => {
      resolve({
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            (server as { closeAllConnections?: () => void }).closeAllConnections?.();
          }),
      });
    });
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "EADDRINUSE" ? "the port is in use (another collector?)" : err.message;
      reject(
        createError("http", "listen_failed", `cannot listen on ${host}:${port} for the ${what}: ${why}`, {
          cause: err,
        }),
      );
    });
  });
}
