// Configuration loading shared by both services: one YAML file, then environment overrides, then
// validation against a zod schema. Every problem is reported at start-up in one message that names
// the key, what was expected and what was found, e.g.
//   Configuration (/etc/shadowvm/agent.yaml): hypervisor.qmp_timeout_ms is invalid:
//   expected number to be >0 (actual: -5)
//
// Environment overrides: PREFIX + key path in upper case with "__" between levels, e.g.
// SHADOWVM_AGENT__HYPERVISOR__QMP_TIMEOUT_MS=2000. Values are parsed as YAML scalars/flow
// collections, so numbers, booleans and `[a, b]` lists work.
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { ShadowvmError } from "../errors.js";

export interface ConfigSource {
  /** Path of the YAML file; absent = defaults and environment only. */
  file?: string | undefined;
  /** The environment to read overrides from (process.env in services; explicit in tests). */
  env?: Record<string, string | undefined>;
  /** e.g. "SHADOWVM_AGENT__". */
  envPrefix: string;
}

export class ConfigError extends ShadowvmError {
  readonly problems: string[];
  constructor(where: string, problems: string[]) {
    super("config", "invalid", `Configuration (${where}): ${problems.join("; ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

type Tree = Record<string, unknown>;

function isTree(v: unknown): v is Tree {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function readYamlFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [
      code === "ENOENT" ? "file not found" : `cannot read file (${code ?? String(err)})`,
    ]);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(file, [`not valid YAML: ${(err as Error).message.split("\n")[0]}`]);
  }
  if (doc === null || doc === undefined) return {};
  if (!isTree(doc))
    throw new ConfigError(file, [`expected a mapping of keys at the top level (actual: ${describe(doc)})`]);
  return doc;
}

/** Applies PREFIX__A__B=value overrides onto the tree (in place) and returns the keys used. */
function applyEnv(tree: Tree, env: Record<string, string | undefined>, prefix: string): string[] {
  const used: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(prefix) || raw === undefined) continue;
    const path = name.slice(prefix.length).toLowerCase().split("__").filter(Boolean);
    if (path.length === 0) continue;
    let node = tree;
    for (const key of path.slice(0, -1)) {
      const next = node[key];
      if (!isTree(next)) node[key] = {};
      node = node[key] as Tree;
    }
    let value: unknown = raw;
    try {
      value = parseYaml(raw);
    } catch {
      // Not YAML: keep the raw string; the schema says whether a string is acceptable.
    }
    node[path.at(-1)!] = value;
    used.push(name);
  }
  return used;
}

function describe(v: unknown): string {
  if (v === undefined) return "missing";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function valueAt(tree: unknown, path: PropertyKey[]): unknown {
  let node = tree;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** Formats zod issues as `key is invalid: expected ... (actual: ...)`. */
export function formatIssues(issues: z.core.$ZodIssue[], input: unknown): string[] {
  return issues.map((issue) => {
    const key = issue.path.map(String).join(".") || "(top level)";
    if (issue.code === "unrecognized_keys") {
      const keys = issue.keys.map((k) => (key === "(top level)" ? k : `${key}.${k}`));
      return `unknown key ${keys.join(", ")} (check the spelling; see the example config)`;
    }
    const expected = issue.message
      .replace(/^Invalid (input|option): /, "")
      .replace(/^Too (small|big): /, "")
      .replace(/, received \w+$/, "");
    return `${key} is invalid: ${expected} (actual: ${describe(valueAt(input, issue.path))})`;
  });
}

/** Loads, overrides and validates a service's configuration. Throws ConfigError. */
export function loadConfig<S extends z.ZodType>(schema: S, source: ConfigSource): z.output<S> {
  const tree = source.file ? readYamlFile(source.file) : {};
  const envKeys = applyEnv(tree, source.env ?? {}, source.envPrefix);
  const result = schema.safeParse(tree);
  if (!result.success) {
    const where = [source.file ?? "defaults", ...envKeys].join(" + ");
    throw new ConfigError(where, formatIssues(result.error.issues, tree));
  }
  return result.data;
}
