// How the CLI's query and report commands reach the data. DuckDB lets one process open the file
// for writing: when the collector is stopped the command opens the database read-only itself; when
// a running collector holds it, the command asks that collector's query API instead, with an API
// token it creates for the call and revokes afterwards (the CLI runs as the collector's user, who
// may create tokens anyway).
import { existsSync } from "node:fs";
import type { DuckDBValue } from "@duckdb/node-api";
import { createError } from "@shadowvm/shared";
import { type ApiScope, ApiTokenStore } from "../api/api-token-store.js";
import type { Queryable } from "../api/reader-pool.js";
import { apiTokenDir, type CollectorConfig, databasePath } from "../config/collector-config.js";
import { IngestStore, openReadOnly } from "../store/ingest-store.js";

export type Access =
  | {
      kind: "db";
      db: Queryable;
      /** Runs a statement and returns the rows it changed (write access only). */
      execute?(sql: string, values?: DuckDBValue[]): Promise<number>;
      close(): void;
    }
  | {
      kind: "api";
      request(method: string, path: string, body?: unknown): Promise<unknown>;
      /** The items of one page of a list route. */
      requestPage<T>(path: string): Promise<T[]>;
      /** The items of a list route up to `max`, following its `next` links in pages of api.max_page_size. */
      requestAll<T>(path: string, max?: number): Promise<T[]>;
      close(): void;
    };

interface ListBody<T> {
  items: T[];
  page: { next: string | null };
}

/**
 * `write`: a stopped collector's database is opened for writing (and migrated, as `serve` would),
 * so the access can `execute`.
 */
export async function openAccess(
  config: CollectorConfig,
  scope: ApiScope,
  options: { write?: boolean } = {},
): Promise<Access> {
  const path = databasePath(config);
  if (!existsSync(path))
    throw createError(
      "cli",
      "no_database",
      `no collector database at ${path}: expected the data_dir of a collector that has run (shadowvm-collector serve); pass --data-dir DIR or --config FILE`,
    );
  try {
    if (options.write) {
      const store = await IngestStore.open(path);
      const conn = await store.connectReader();
      return {
        kind: "db",
        db: store,
        execute: async (sql, values) => (await conn.run(sql, values)).rowsChanged,
        close: () => {
          conn.closeSync();
          store.close();
        },
      };
    }
    const ro = await openReadOnly(path);
    return {
      kind: "db",
      db: { query: (sql: string, values?: DuckDBValue[]) => ro.query(sql, values) },
      close: () => ro.close(),
    };
  } catch (err) {
    const msg = (err as Error).message;
    if (!/lock/i.test(msg))
      throw createError("store", "open_failed", `cannot open ${path} read-only: ${msg}`);
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
  const request = async (method: string, path: string, body?: unknown): Promise<unknown> => {
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
  };
  return {
    kind: "api",
    request,
    requestPage: async <T>(path: string) => ((await request("GET", path)) as ListBody<T>).items,
    async requestAll<T>(path: string, max = Number.POSITIVE_INFINITY) {
      const url = new URL(path, base);
      url.searchParams.set("limit", String(Math.min(config.api.max_page_size, max)));
      const items: T[] = [];
      for (let next: string | null = `${url.pathname}${url.search}`; next !== null && items.length < max; ) {
        const body = (await request("GET", next)) as ListBody<T>;
        items.push(...body.items);
        next = body.page.next;
      }
      return items.slice(0, max);
    },
    close: () => {
      tokens.revoke(record.id);
    },
  };
}
