// The collector's operations endpoints, on their own plain-HTTP listener (loopback by default),
// apart from the agents' TLS WebSocket port: Prometheus scrapes /metrics, supervisors probe
// /healthz (the process answers) and /readyz (the store is open, the ingest port listens, the last
// commit succeeded). `opsRoutes()` is a hono app, so the query API (issue 9) can mount it too.
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import type { Registry } from "prom-client";

export interface Readiness {
  /** Empty when ready; otherwise why not, one reason each. */
  problems(): string[];
}

export function opsRoutes(registry: Registry, readiness: Readiness): Hono {
  const app = new Hono();
  app.get("/metrics", async (c) => {
    const body = await registry.metrics();
    return c.body(body, 200, { "content-type": registry.contentType });
  });
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/readyz", (c) => {
    const problems = readiness.problems();
    return problems.length === 0 ? c.text("ready\n") : c.json({ ready: false, problems }, 503);
  });
  return app;
}

export interface OpsServer {
  port: number;
  close(): Promise<void>;
}

export function startOpsServer(app: Hono, host: string, port: number): Promise<OpsServer> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: host, port }, (info: AddressInfo) => {
      resolve({
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            (server as { closeAllConnections?: () => void }).closeAllConnections?.();
          }),
      });
    });
    server.once("error", reject);
  });
}
