// How the CLI's query and report commands reach the data. DuckDB lets one process open the file
// for writing: when the collector is stopped the command opens the database read-only itself; when
// a running collector holds it, the command asks that collector's query API instead, with an API
// token it creates for the call and revokes afterwards (the CLI runs as the collector's user, who
// may create tokens anyway).
import type { DuckDBValue } from "@duckdb/node-api";
import { createError } from "@shadowvm/shared";
import { type ApiScope, ApiTokenStore } from "../api/api-token-store.js";
import type { Queryable } from "../api/reader-pool.js";
import { apiTokenDir, type CollectorConfig, databasePath } from "../config/collector-config.js";
import { openReadOnly } from "../store/ingest-store.js";

export type Access =
  | { kind: "db"; db: Queryable; close(): void }
  | { kind: "api"; request(method: string, path: string, body?: unknown): Promise<unknown>; close(): void };

export async function openAccess(config: CollectorConfig, scope: ApiScope): Promise<Access> {
  try {
    const ro = await openReadOnly(databasePath(config));
    return {
      kind: "db",
      db: { query: (sql: string, values?: DuckDBValue[]) => ro.query(sql, values) },
      close: () => ro.close(),
    };
  } catch (err) {
    if (!/lock/i.test((err as Error).message)) throw err;
    if (!config.api.enabled)
      throw createError(
        "cli",
        "unavailable",
        "the collector is running and holds the database, and its query API is disabled (api.enabled: false)",
      );
  }
  const tokens = new ApiTokenStore(apiTokenDir(config));
  const { token, record } = tokens.create({ scope, description: "shadowvm-collector CLI (temporary)" });
  const host = config.api.host === "0.0.0.0" ? "127.0.0.1" : config.api.host;
  const base = `http://${host.includes(":") ? `[${host}]` : host}:${config.api.port}`;
  return {
    kind: "api",
    async request(method, path, body) {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      if (!res.ok) {
        let detail = text;
        try {
          detail = (JSON.parse(text) as { detail?: string }).detail ?? text;
        } catch {}
        throw createError("cli", "api_failed", `${method} ${path}: ${res.status} ${detail}`);
      }
      return text ? JSON.parse(text) : undefined;
    },
    close: () => {
      tokens.revoke(record.id);
    },
  };
}
