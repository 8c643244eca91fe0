// The campaigns `serve` runs by itself (config `campaigns`): after first_delay_s, and then every
// interval_s per VM, one campaign at a time on this host (the host guard bounds each campaign's
// shadows; running several campaigns at once would only make them queue for the same budget).
// A campaign that ends without finishing (its capture failed, its control kept failing, e.g. a VM
// that fails even unstressed) doubles that VM's interval, up to backoff_max_s: every campaign
// pauses production for a capture, and repeating one that cannot finish only costs pauses.
// When each VM was last shadowed is kept in <data_dir>/campaigns.json, so a restarted agent does
// not start over. Stopping aborts the running campaign, which tears its shadows down.
import { renameSync } from "node:fs";
import { join } from "node:path";
import { describeError, type Logger } from "@shadowvm/shared";
import type { CapturingDriver } from "../capture/capture-service.js";
import type { AgentConfig } from "../config/agent-config.js";
import type { ProductionVmData } from "../explorer/baseline.js";
import { needLabel, type SignatureBoundary } from "../explorer/boundary.js";
import { ExplorerStateStore } from "../explorer/state-store.js";
import type { VmInventory } from "../hypervisor/driver.js";
import type { SignatureDb } from "../signatures/index.js";
import type { Spool } from "../spool/spool.js";
import {
  type CampaignHistory,
  type CampaignHistoryEntry,
  campaignHistoryFile,
  nextCampaignDueMs,
  readCampaignHistory,
  writeCampaignHistory,
} from "./campaign-history.js";
import { type CampaignEvent, type CampaignReport, runShadowCampaign } from "./shadow-campaign.js";

export interface CampaignSchedulerOptions {
  config: AgentConfig;
  logger: Logger;
  createDriver: () => CapturingDriver;
  spool: Pick<Spool, "append" | "admitShadowWork">;
  signatures: SignatureDb;
  /** The production operating point per VM uuid, from the telemetry loop. */
  operatingPoint?: (uuid: string) => ProductionVmData | undefined;
  /** Runs one campaign (default: runShadowCampaign on real shadows; tests put a stand-in here). */
  runCampaign?: (driver: CapturingDriver, vm: VmInventory) => Promise<CampaignReport>;
  now?: () => number;
}

export function explorerStateDir(config: AgentConfig): string {
  return join(config.data_dir, "explorer");
}

export class CampaignScheduler {
  readonly reports: CampaignReport[] = [];
  private readonly o: CampaignSchedulerOptions;
  private readonly historyFile: string;
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  private stopped = false;

  private readonly now: () => number;

  constructor(options: CampaignSchedulerOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    this.historyFile = campaignHistoryFile(options.config);
  }

  start(): void {
    const c = this.o.config.campaigns;
    this.o.logger.info(
      { vms: c.vms.length ? c.vms : "all", first_delay_s: c.first_delay_s, interval_s: c.interval_s },
      "campaigns: scheduled",
    );
    this.schedule(c.first_delay_s * 1000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.loop;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.loop = this.runDue()
        // E.g. campaigns.json cannot be written (a full disk): say so and try again at the next
        // check, rather than let the rejection take the agent down.
        .catch((err) => this.o.logger.error({ err: describeError(err) }, "campaigns: check failed"))
        .finally(() => {
          this.loop = undefined;
          // Re-check at least every minute: a VM that appeared, or the next one due.
          this.schedule(Math.min(60_000, this.o.config.campaigns.interval_s * 1000));
        });
    }, delayMs);
    this.timer.unref?.();
  }

  /** Runs a campaign for every target VM that is due, one after the other. */
  async runDue(): Promise<void> {
    const c = this.o.config.campaigns;
    const history = this.readHistory();
    let targets: VmInventory[];
    const driver = this.o.createDriver();
    try {
      targets = await this.targets(driver);
    } catch (err) {
      this.o.logger.warn({ err: describeError(err) }, "campaigns: cannot list VMs");
      await driver.close();
      return;
    }
    try {
      for (const vm of targets) {
        if (this.stopped) return;
        const before = history[vm.uuid];
        if (this.now() < nextCampaignDueMs(before, c)) continue;
        if (!this.o.spool.admitShadowWork()) {
          this.o.logger.warn({ vm: vm.name }, "campaigns: spool nearly full, campaign postponed");
          return;
        }
        const entry: CampaignHistoryEntry = {
          vm_name: vm.name,
          last_started_ms: this.now(),
          ...(before?.unfinished_in_a_row ? { unfinished_in_a_row: before.unfinished_in_a_row } : {}),
        };
        history[vm.uuid] = entry;
        writeCampaignHistory(this.historyFile, history);
        let unfinished: string | undefined;
        try {
          const report = await (this.o.runCampaign ?? ((d, v) => this.runOne(d, v)))(driver, vm);
          this.reports.push(report);
          unfinished = report.explore.error?.message;
        } catch (err) {
          unfinished = describeError(err);
          this.o.logger.error({ vm: vm.name, err: unfinished }, "campaigns: campaign failed");
        }
        // A campaign cut short by stopping the agent says nothing about the VM.
        if (this.stopped) return;
        entry.last_finished_ms = this.now();
        if (unfinished === undefined) {
          delete entry.unfinished_in_a_row;
        } else {
          entry.last_error = unfinished;
          entry.unfinished_in_a_row = (entry.unfinished_in_a_row ?? 0) + 1;
          this.o.logger.warn(
            {
              vm: vm.name,
              unfinished_in_a_row: entry.unfinished_in_a_row,
              next_campaign_in_s: Math.round((nextCampaignDueMs(entry, c) - this.now()) / 1000),
              reason: unfinished,
            },
            "campaigns: backing off",
          );
        }
        writeCampaignHistory(this.historyFile, history);
      }
    } finally {
      await driver.close();
    }
  }

  private async targets(driver: CapturingDriver): Promise<VmInventory[]> {
    const wanted = this.o.config.campaigns.vms;
    const { vms } = await driver.listVms();
    const running = vms.filter((v) => v.state === "running");
    if (wanted.length === 0) return running;
    const out = running.filter((v) => wanted.includes(v.name) || wanted.includes(v.uuid));
    const missing = wanted.filter((w) => !out.some((v) => v.name === w || v.uuid === w));
    if (missing.length) this.o.logger.warn({ missing }, "campaigns: configured VMs not found running");
    return out;
  }

  private async runOne(driver: CapturingDriver, vm: VmInventory): Promise<CampaignReport> {
    const c = this.o.config.campaigns;
    const log = this.o.logger.child({ vm: vm.name, vm_uuid: vm.uuid });
    const explorerStore = new ExplorerStateStore(explorerStateDir(this.o.config));
    await explorerStore.open();
    const vmProfile = this.o.operatingPoint?.(vm.uuid);
    log.info({ budget: c.budget, parallel: c.parallel, strategy: c.strategy }, "campaign: started");
    try {
      const report = await runShadowCampaign(
        {
          config: this.o.config,
          driver,
          sink: this.o.spool,
          signatures: this.o.signatures,
          explorerStore,
          logger: log,
          signal: this.abort.signal,
          onEvent: (e) => logCampaignEvent(log, e),
        },
        {
          vm: vm.uuid || vm.name,
          budget: c.budget,
          parallel: c.parallel,
          strategy: c.strategy,
          durationS: c.duration_s,
          control: c.control,
          faults: c.faults,
          bounds: c.bounds,
          vmProfile,
        },
      );
      log.info(
        {
          campaign: report.campaignId,
          capture: report.capture.id,
          ...(report.captures.length > 1 ? { captures: report.captures.map((c) => c.id) } : {}),
          trials: report.explore.trials.length,
          failed: report.explore.trials.filter((t) => t.outcome.failed).length,
          signatures: report.explore.signatures_found.map((fp) => ({
            fingerprint: fp,
            ...report.titles[fp],
            ...describeNeeds(report.explore.boundary[fp]),
          })),
          ...(report.explore.error ? { stopped_early: report.explore.error.message } : {}),
        },
        "campaign: finished",
      );
      return report;
    } finally {
      await explorerStore.close();
    }
  }

  private readHistory(): CampaignHistory {
    try {
      return readCampaignHistory(this.historyFile);
    } catch (err) {
      // Campaigns go on (every VM counts as due); the unreadable file is kept for a look.
      const keptAs = `${this.historyFile}.unreadable-${this.now()}`;
      renameSync(this.historyFile, keptAs);
      this.o.logger.warn(
        { err: describeError(err), kept_as: keptAs },
        "campaigns: history unreadable, starting over",
      );
      return {};
    }
  }
}

/**
 * A signature's boundary for the log: its estimated least stress and what it needs (needLabel), e.g.
 * `memory_load>=0.96`; a `?` marks a knob the runs could not tell from another.
 */
export function describeNeeds(b: SignatureBoundary | undefined): { least_stress?: number; needs?: string[] } {
  if (!b) return {};
  return {
    least_stress: b.min_stress,
    needs: b.needs.map(needLabel),
  };
}

export interface CampaignEventLine {
  level: "info" | "warn";
  msg: string;
  fields: Record<string, unknown>;
}

/** What an operator wants to see of a campaign event (one line), or nothing. */
export function describeCampaignEvent(e: CampaignEvent): CampaignEventLine | undefined {
  const info = (msg: string, fields: Record<string, unknown> = {}): CampaignEventLine => ({
    level: "info",
    msg,
    fields,
  });
  switch (e.type) {
    case "capturing":
      return info("campaign: capturing", { vm: e.vm, ...(e.reason ? { reason: e.reason } : {}) });
    case "captured":
      return info("campaign: captured", {
        capture: e.record.id,
        pause_ms: Math.round(e.record.pause_ms * 10) / 10,
        stored_bytes: e.record.stored_bytes,
      });
    case "faults":
      return e.unavailable.length
        ? info("campaign: fault kinds", { usable: e.usable, unavailable: e.unavailable })
        : undefined;
    case "batch":
      return info("campaign: batch done", { batch: e.result.campaign, done: e.done, budget: e.budget });
    case "lab": {
      const ev = e.event;
      switch (ev.type) {
        case "started":
          return info("shadow: started", { shadow: ev.shadow, control: ev.control, profile: ev.profile });
        case "failure":
          return info("shadow: failure", {
            shadow: ev.shadow,
            class: ev.failure.class,
            title: ev.failure.title,
          });
        case "outcome":
          return info("shadow: outcome", {
            shadow: ev.shadow,
            outcome: ev.outcome,
            failures: ev.failures.map((f) => f.title),
            notes: ev.notes,
          });
        case "refused":
        case "guard":
          return {
            level: "warn",
            msg: `shadow: ${ev.type}`,
            fields: { shadow: ev.shadow, reason: ev.reason },
          };
        case "control":
          return info("shadow: control verdict", { verdict: ev.verdict });
        case "stopped":
          return info("shadow: stopped", {
            shadow: ev.shadow,
            reason: ev.reason,
            ...(ev.leftovers.length ? { leftovers: ev.leftovers } : {}),
          });
        default:
          return undefined;
      }
    }
  }
}

/** One JSON log line per thing an operator would want to see happen. */
export function logCampaignEvent(log: Logger, e: CampaignEvent): void {
  const line = describeCampaignEvent(e);
  if (line) log[line.level](line.fields, line.msg);
}
