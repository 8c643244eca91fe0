// Samples whose timestamps cannot be right for the collector: older than the samples' retention
// (the next prune deletes them; retention goes by sample time, so a host whose clock is far behind
// loses its telemetry within the hour) or ahead of the collector's clock (they would outlive the
// retention and sit at the end of every trend window). They are stored as they came; the check
// counts them and tells the operator, at most once an hour per agent and kind, to look at that
// host's clock.
import type { Logger } from "@shadowvm/shared";
import type { Counter } from "prom-client";
import type { SampleColumns } from "./ingest-frame.js";

const DAY_MS = 86_400_000;
/** Samples this far ahead of the collector's clock are "from the future" (clocks drift a little). */
export const FUTURE_TOLERANCE_MS = 10 * 60_000;
const WARN_EVERY_MS = 3_600_000;

export type SampleClockProblem = "past_retention" | "future";

export class SampleClockCheck {
  private readonly warned = new Map<string, number>();

  constructor(
    private readonly o: {
      /** retention.samples_days (0: kept forever, nothing is past it). */
      retentionDays: number;
      logger: Pick<Logger, "warn">;
      counter: Counter<"reason">;
      now?: () => number;
    },
  ) {}

  /** Counts and reports one frame's samples that fall outside [retention cutoff, now + tolerance]. */
  check(agentId: string, samples: SampleColumns): void {
    const now = (this.o.now ?? Date.now)();
    const cutoff = this.o.retentionDays > 0 ? now - this.o.retentionDays * DAY_MS : Number.NEGATIVE_INFINITY;
    const ahead = now + FUTURE_TOLERANCE_MS;
    let past = 0;
    let future = 0;
    let oldest = Number.POSITIVE_INFINITY;
    let newest = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < samples.n; i++) {
      const ts = samples.ts[i]!;
      if (ts < cutoff) {
        past++;
        if (ts < oldest) oldest = ts;
      } else if (ts > ahead) {
        future++;
        if (ts > newest) newest = ts;
      }
    }
    if (past) {
      this.o.counter.inc({ reason: "past_retention" }, past);
      this.warn(agentId, "past_retention", now, {
        samples: past,
        oldest: new Date(oldest).toISOString(),
        message: `agent ${agentId} sent samples timestamped before the retention (retention.samples_days: ${this.o.retentionDays}): they are stored, and deleted at the next prune; check that host's clock`,
      });
    }
    if (future) {
      this.o.counter.inc({ reason: "future" }, future);
      this.warn(agentId, "future", now, {
        samples: future,
        newest: new Date(newest).toISOString(),
        message: `agent ${agentId} sent samples timestamped more than ${FUTURE_TOLERANCE_MS / 60_000} min ahead of the collector's clock: check that host's clock (or the collector's)`,
      });
    }
  }

  private warn(
    agentId: string,
    problem: SampleClockProblem,
    now: number,
    fields: Record<string, unknown> & { message: string },
  ): void {
    const key = `${agentId}\u0000${problem}`;
    const last = this.warned.get(key);
    if (last !== undefined && now - last < WARN_EVERY_MS) return;
    this.warned.set(key, now);
    const { message, ...rest } = fields;
    this.o.logger.warn({ agent_id: agentId, problem, ...rest }, `ingest: ${message}`);
  }
}
