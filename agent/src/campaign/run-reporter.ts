// What a campaign tells the collector: the capture it shadowed, every shadow run (once when it
// starts, once with its outcome and failures), and the signature database's updates. Everything
// goes through the spool (durable before it counts as sent), so a collector that is down loses
// nothing. Without a spool (a one-off CLI run while no service owns it) nothing is shipped and the
// caller says so.
import { shadowvm, stressProfileToProto } from "@shadowvm/shared";
import type { CaptureRecord } from "../capture/capture-service.js";
import { failureToProto, outcomeToProto } from "../detection/outcome.js";
import type { ShadowRunResult } from "../shadow/shadow-lab.js";
import type { SignatureDb } from "../signatures/index.js";
import type { Spool } from "../spool/spool.js";

/** The part of the spool a reporter needs (the fake in tests implements just this). */
export type RecordSink = Pick<Spool, "append">;

export interface RunContext {
  campaignId: string;
  captureId: string;
  vmName: string;
  vmUuid: string;
  strategy: string;
}

export interface RunTimes {
  startedAtMs: number;
  finishedAtMs: number;
}

export function shadowRunMessage(
  ctx: RunContext,
  run: Pick<ShadowRunResult, "shadow" | "control" | "profile" | "notes"> &
    Partial<Pick<ShadowRunResult, "outcome" | "failures">>,
  times: Partial<RunTimes>,
): shadowvm.v1.ShadowRun.$Properties {
  return {
    id: shadowRunId(ctx.campaignId, run.shadow),
    campaign_id: ctx.campaignId,
    capture_id: ctx.captureId,
    vm_name: ctx.vmName,
    vm_uuid: ctx.vmUuid,
    profile: stressProfileToProto(run.profile),
    strategy: run.control ? "control" : ctx.strategy,
    control: run.control,
    started_at_ms: times.startedAtMs ?? 0,
    finished_at_ms: times.finishedAtMs ?? 0,
    ...(run.outcome ? { outcome: outcomeToProto(run.outcome) } : {}),
    // Ranked by the detection: the first is the failure the run counts for.
    failures: (run.failures ?? []).map((f, i) =>
      failureToProto(f, undefined, i === 0 && run.outcome === "failed"),
    ),
    notes: run.notes,
  };
}

/** Shadow ids are unique within one lab batch; the campaign id makes them unique on the agent. */
export function shadowRunId(campaignId: string, shadow: string): string {
  return `${campaignId}/${shadow}`;
}

export function captureRecordMessage(r: CaptureRecord): shadowvm.v1.CaptureRecord.$Properties {
  return {
    id: r.id,
    vm_name: r.vm,
    vm_uuid: r.vm_uuid,
    started_at_ms: Date.parse(r.started_at),
    finished_at_ms: Date.parse(r.finished_at),
    pause_ms: Math.round(r.pause_ms),
    memory_bytes: r.memory_bytes,
    disk_bytes: r.disk_bytes,
    stored_bytes: r.stored_bytes,
    new_bytes: r.new_bytes,
    disks: r.disks.map((d) => ({
      node: d.node,
      file: d.chain[0]?.part ?? "",
      format: d.chain[0]?.format ?? "",
      size_bytes: d.size_bytes,
    })),
    status: shadowvm.v1.CaptureStatus.CAPTURE_STATUS_OK,
  };
}

export class RunReporter {
  private readonly startTimes = new Map<string, number>();
  /** A copy: a fresh capture changes its captureId. */
  private readonly ctx: RunContext;

  constructor(
    ctx: RunContext,
    private readonly sink: RecordSink | undefined,
    private readonly signatures: SignatureDb | undefined,
  ) {
    this.ctx = { ...ctx };
  }

  get shipping(): boolean {
    return this.sink !== undefined;
  }

  /** A capture the campaign shadows: shipped, and the runs from now on name it. */
  async captured(record: CaptureRecord): Promise<void> {
    this.ctx.captureId = record.id;
    await this.sink?.append({ capture_record: captureRecordMessage(record) });
  }

  /** A shadow is running: the collector sees it before its outcome. */
  async started(run: Pick<ShadowRunResult, "shadow" | "control" | "profile">, atMs: number): Promise<void> {
    this.startTimes.set(run.shadow, atMs);
    await this.sink?.append({
      shadow_run: shadowRunMessage(this.ctx, { ...run, notes: [] }, { startedAtMs: atMs }),
    });
  }

  /** A finished run: its outcome and failures, then the signature updates it caused. */
  async finished(run: ShadowRunResult, finishedAtMs: number): Promise<void> {
    const startedAtMs = this.startTimes.get(run.shadow) ?? finishedAtMs - (run.ranMs ?? 0);
    await this.sink?.append({
      shadow_run: shadowRunMessage(this.ctx, run, { startedAtMs, finishedAtMs }),
    });
    if (this.signatures && run.failures.length > 0 && !run.control) {
      await this.signatures.recordRun({
        vm: this.ctx.vmUuid || this.ctx.vmName,
        failures: run.failures,
        finishedAtMs,
        profile: run.profile,
        shadowRunId: shadowRunId(this.ctx.campaignId, run.shadow),
      });
      await this.forwardSignatureUpdates();
    }
    // A stressed run that went its full time without failing: the precursors its console showed
    // did not warn of anything this time.
    if (this.signatures && run.outcome === "ok" && !run.control && run.consolePatterns?.length) {
      await this.signatures.recordCleanRun({
        vm: this.ctx.vmUuid || this.ctx.vmName,
        consolePatterns: run.consolePatterns,
      });
    }
  }

  /** Moves the signature database's queued updates into the spool (durable there, then acked). */
  async forwardSignatureUpdates(): Promise<void> {
    if (!this.sink || !this.signatures) return;
    for (;;) {
      const pending = await this.signatures.pendingUpdates(100);
      if (pending.length === 0) return;
      for (const p of pending) await this.sink.append({ signature_update: p.update });
      await this.signatures.ackUpdates(pending.at(-1)!.seq);
    }
  }
}
