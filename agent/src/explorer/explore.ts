// A campaign: ask the explorer for K profiles, run them (in parallel shadows or an oracle), feed the
// outcomes back, until the budget is spent or the runner breaks.
import type { FaultKind } from "@shadowvm/shared";
import { Explorer } from "./adaptive-explorer.js";
import type { ProductionVmData } from "./baseline.js";
import type { Boundary } from "./boundary.js";
import type { TrialRunner } from "./runner.js";
import type { ProfileBounds } from "./space.js";
import type { ExplorerStateStore } from "./state-store.js";
import type { ExplorerState, Outcome, StrategyName, Trial } from "./types.js";

export interface ExploreOptions {
  runner: TrialRunner;
  /** Trials to run in this call. */
  budget: number;
  strategy: StrategyName;
  seed: number | string;
  vmProfile?: ProductionVmData;
  bounds?: ProfileBounds;
  faultKinds?: readonly FaultKind[];
  /** Profiles per campaign step, run together (default 4). */
  batchSize?: number;
  /** Length of each shadow run (default 120 s). */
  durationS?: number;
  /** Initial space-filling design size (adaptive); default about 30% of the budget, whole batches. */
  initialDesign?: number;
  /** With vmId: resume from and save to this store after every batch. */
  store?: ExplorerStateStore;
  vmId?: string;
  /** States of similar VMs whose trials inform the model at a lower weight. */
  priors?: readonly ExplorerState[];
  /** Weight of a prior trial relative to an own one (default 0.3). */
  priorWeight?: number;
  /** Bootstrap refits for the boundary intervals (default 16; 0 skips intervals). */
  boundaryBootstrap?: number;
  /** Called after every batch (progress reporting). */
  onBatch?: (done: number, budget: number, signaturesFound: number) => void;
}

export interface ExploreResult {
  strategy: StrategyName;
  seed: number | string;
  /** Trials run by this call, in order. */
  trials: Trial[];
  /** Distinct signatures seen on this VM (this call and earlier stored campaigns), in discovery order. */
  signatures_found: string[];
  boundary: Boundary;
  /** Present when the runner broke; the trials before the break are still in `trials`. */
  error?: { message: string; line?: string };
}

export function defaultInitialDesign(budget: number, batchSize: number, dims: number): number {
  const raw = Math.min(2 * dims, Math.ceil(0.3 * budget));
  return Math.max(batchSize, Math.ceil(raw / batchSize) * batchSize);
}

export async function explore(opts: ExploreOptions): Promise<ExploreResult> {
  const budget = Math.floor(opts.budget);
  if (!(budget >= 0)) throw new Error("budget must be a non-negative number");
  const batchSize = Math.max(1, Math.floor(opts.batchSize ?? 4));
  const stored = opts.store && opts.vmId !== undefined ? await opts.store.load(opts.vmId) : undefined;
  const base = {
    strategy: opts.strategy,
    seed: opts.seed,
    ...(opts.bounds ? { bounds: opts.bounds } : {}),
    ...(opts.faultKinds ? { faultKinds: opts.faultKinds } : {}),
    ...(opts.durationS === undefined ? {} : { durationS: opts.durationS }),
    ...(opts.vmProfile ? { vmProfile: opts.vmProfile } : {}),
    ...(opts.priorWeight === undefined ? {} : { priorWeight: opts.priorWeight }),
    ...(opts.vmId === undefined ? {} : { vmId: opts.vmId }),
  };
  const dims = new Explorer(base).space.size;
  const explorer = new Explorer(
    { ...base, initialDesign: opts.initialDesign ?? defaultInitialDesign(budget, batchSize, dims) },
    stored,
  );
  const known = new Set(explorer.priors.map((p) => p.source));
  for (const p of opts.priors ?? []) {
    // Re-running with the same priors must not count them twice.
    if (p.vm_id !== undefined && known.has(p.vm_id)) continue;
    explorer.importPriors(p);
    if (p.vm_id !== undefined) known.add(p.vm_id);
  }

  const trials: Trial[] = [];
  let error: ExploreResult["error"];
  while (trials.length < budget && !error) {
    const k = Math.min(batchSize, budget - trials.length);
    const profiles = explorer.propose(k);
    let outcomes: Outcome[];
    try {
      outcomes = await opts.runner.run(profiles);
      if (outcomes.length !== profiles.length) {
        throw Object.assign(
          new Error(`runner returned ${outcomes.length} outcomes for ${profiles.length} profiles`),
          {
            completed: outcomes.slice(0, profiles.length),
          },
        );
      }
    } catch (e) {
      const err = e as Error & { completed?: Outcome[]; line?: string };
      outcomes = err.completed ?? [];
      error = { message: err.message, ...(err.line === undefined ? {} : { line: err.line }) };
    }
    const done = outcomes.map((outcome, i) => ({ profile: profiles[i]!, outcome }));
    explorer.observe(done);
    for (const d of done) trials.push({ ...d, strategy: opts.strategy });
    if (opts.store && opts.vmId !== undefined) await opts.store.save(opts.vmId, explorer.toState());
    opts.onBatch?.(trials.length, budget, explorer.signaturesFound().length);
  }

  return {
    strategy: opts.strategy,
    seed: opts.seed,
    trials,
    signatures_found: explorer.signaturesFound(),
    boundary: explorer.boundary({ bootstrap: opts.boundaryBootstrap ?? 16 }),
    ...(error ? { error } : {}),
  };
}
