// Failure fingerprints: a stable identity for "the same failure" across runs and machines.
//
// fingerprint = first 16 hex digits of SHA-256 over `<class>\n<normalized title>`.
// Titles are already built without pids, addresses and timestamps; normalizeFailureTitle() is a second
// line of defence for free-text titles (panic messages, sanitizer headers): it replaces hex
// addresses with ADDR, numbers with NUM, CPU references (`CPU#3`, `cpu 3`) with CPU#N and
// collapses whitespace. Function names keep their digits (`ext4_fill_super`, `ip6_xmit`), and
// NUM replacement only applies to standalone numbers, not to digits inside identifiers.

import { createHash } from "node:crypto";
import type { FailureClass } from "./types.js";

export function normalizeFailureTitle(title: string): string {
  return title
    .replace(/\bCPU#?\s*\d+\b/gi, "CPU#N")
    .replace(/\b0x[0-9a-fA-F]+\b/g, "ADDR")
    .replace(/\b[0-9a-f]{8,}\b/g, "ADDR")
    .replace(/(?<![\w.-])\d+(?![\w])/g, "NUM")
    .replace(/\s+/g, " ")
    .trim();
}

export function failureFingerprint(title: string, cls: FailureClass): string {
  return createHash("sha256")
    .update(`${cls}\n${normalizeFailureTitle(title)}`)
    .digest("hex")
    .slice(0, 16);
}
