// The collector's operations endpoints, on their own plain-HTTP listener (loopback by default),
// apart from the agents' TLS WebSocket port: Prometheus scrapes /metrics, supervisors probe
// /healthz (the process answers) and /readyz (the store is open, the ingest port listens, the last
// commit succeeded). `opsRoutes()` is a hono app, so the query API (issue 9) can mount it too.
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
