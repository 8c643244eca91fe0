// campaigns.json: when each VM was last shadowed and how its campaigns ended, so a restarted agent
// neither starts over nor forgets a back-off. The scheduler writes it; `shadowvm-agent campaigns`
// reads it.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describeError } from "@shadowvm/shared";
import type { AgentConfig } from "../config/agent-config.js";

/** What campaigns.json keeps per VM uuid. */
export interface CampaignHistoryEntry {
  /** The VM's name when its last campaign started (for people; the key is the uuid). */
  vm_name?: string;
  last_started_ms: number;
  /** When the last campaign ended, finished or not. */
  last_finished_ms?: number;
  /** Why the last campaign did not finish (absent once one finishes). */
  last_error?: string;
  /** Campaigns in a row that did not finish: each one doubles the interval. */
  unfinished_in_a_row?: number;
}
export type CampaignHistory = Record<string, CampaignHistoryEntry>;

export function campaignHistoryFile(config: Pick<AgentConfig, "data_dir">): string {
  return join(config.data_dir, "campaigns.json");
}

/** The campaign history; {} before the first campaign. Throws, naming the file, when it is unreadable. */
export function readCampaignHistory(file: string): CampaignHistory {
  if (!existsSync(file)) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`${file} cannot be read as the campaign history (${describeError(err)})`);
  }
  const entries =
    typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed : undefined;
  const bad = entries
    ? Object.entries(entries).find(
        ([, e]) => typeof (e as CampaignHistoryEntry)?.last_started_ms !== "number",
      )
    : undefined;
  if (!entries || bad) {
    throw new Error(
      `${file} is not a campaign history: expected an object of VM uuid -> {last_started_ms, ...}${bad ? ` (entry ${bad[0]} has no last_started_ms)` : ""}`,
    );
  }
  return entries as CampaignHistory;
}

/**
 * When a VM's next campaign is due: interval_s after the last start, doubled for every campaign in
 * a row that did not finish, at most backoff_max_s (and never less than interval_s).
 */
export function nextCampaignDueMs(
  entry: CampaignHistoryEntry | undefined,
  c: { interval_s: number; backoff_max_s: number },
): number {
  if (!entry) return 0;
  const doublings = Math.min(entry.unfinished_in_a_row ?? 0, 30);
  const waitS = Math.max(c.interval_s, Math.min(c.interval_s * 2 ** doublings, c.backoff_max_s));
  return entry.last_started_ms + waitS * 1000;
}

/** Written whole to a temporary file and renamed: a crash leaves the old history or the new one. */
export function writeCampaignHistory(file: string, history: CampaignHistory): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(history, null, 2));
  renameSync(tmp, file);
}
