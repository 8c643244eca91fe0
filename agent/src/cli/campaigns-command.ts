// `shadowvm-agent campaigns`: per VM, when `serve` last shadowed it, how that ended, and when the
// next campaign is due (with the back-off after campaigns that did not finish).
import { formatTable } from "@shadowvm/shared";
import {
  type CampaignHistoryEntry,
  campaignHistoryFile,
  nextCampaignDueMs,
  readCampaignHistory,
} from "../campaign/campaign-history.js";
import { type CommandContext, parseCommand } from "./cli-context.js";

export const CAMPAIGNS_USAGE = `Usage: shadowvm-agent campaigns [--json]

Lists the VMs that \`serve\` has run campaigns for (<data_dir>/campaigns.json): the last start and
end, whether it finished, how many campaigns in a row did not (each doubles campaigns.interval_s
up to campaigns.backoff_max_s), when the next one is due, and the last error.`;

export interface CampaignStatus {
  vm_uuid: string;
  vm_name: string | null;
  last_started: string;
  last_ended: string | null;
  /** running: started, not ended (or the agent stopped during it); finished; unfinished. */
  state: "running" | "finished" | "unfinished";
  unfinished_in_a_row: number;
  next_due: string;
  last_error: string | null;
}

export function campaignStatus(
  uuid: string,
  e: CampaignHistoryEntry,
  c: { interval_s: number; backoff_max_s: number },
): CampaignStatus {
  const ended = e.last_finished_ms !== undefined && e.last_finished_ms >= e.last_started_ms;
  return {
    vm_uuid: uuid,
    vm_name: e.vm_name ?? null,
    last_started: new Date(e.last_started_ms).toISOString(),
    last_ended: ended ? new Date(e.last_finished_ms!).toISOString() : null,
    state: !ended ? "running" : e.last_error === undefined ? "finished" : "unfinished",
    unfinished_in_a_row: e.unfinished_in_a_row ?? 0,
    next_due: new Date(nextCampaignDueMs(e, c)).toISOString(),
    last_error: e.last_error ?? null,
  };
}

export async function campaignsCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, {});
  const file = campaignHistoryFile(cmd.config);
  const history = readCampaignHistory(file);
  const rows = Object.entries(history)
    .map(([uuid, e]) => campaignStatus(uuid, e, cmd.config.campaigns))
    .sort((a, b) => a.next_due.localeCompare(b.next_due));
  if (cmd.values.json) {
    ctx.io.out(JSON.stringify(rows, null, 2));
    return 0;
  }
  if (rows.length === 0) {
    ctx.io.err(`shadowvm-agent: no campaigns have run on this host yet (${file} does not list any)`);
    return 0;
  }
  ctx.io.out(
    formatTable(
      ["VM", "UUID", "LAST START", "LAST END", "STATE", "IN A ROW", "NEXT DUE", "LAST ERROR"],
      rows.map((r) => [
        r.vm_name ?? "-",
        r.vm_uuid,
        r.last_started,
        r.last_ended ?? "-",
        r.state,
        String(r.unfinished_in_a_row),
        r.next_due,
        r.last_error ?? "-",
      ]),
    ),
  );
  return 0;
}
