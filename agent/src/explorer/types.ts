// Shared types of the explorer: what a trial is and how state is persisted.
import type { StressProfile } from "@shadowvm/shared";

export type StrategyName = "baseline" | "adaptive" | "random";
export const STRATEGIES: readonly StrategyName[] = ["baseline", "adaptive", "random"];

/** What one shadow run under one profile showed. */
export interface Outcome {
  failed: boolean;
  /** Failure signatures detected (empty when it passed). */
  signatures: string[];
}

export interface Trial {
  profile: StressProfile;
  outcome: Outcome;
  strategy: StrategyName;
}

/** A trial as the explorer keeps it: its own (weight 1) or imported from a similar VM (weight < 1). */
export interface StoredTrial extends Trial {
  weight: number;
  /** "self" or the id of the VM the trial was imported from. */
  source: string;
  /** The adaptive tactic that proposed it (corner, fill, face, recall, boundary; older states: spread, model). */
  arm?: string;
}

/** Everything an explorer knows about one VM, as saved in the state store (JSON-safe). */
export interface ExplorerState {
  version: 1;
  vm_id?: string;
  seed: number | string;
  /** xoshiro128** state, so a resumed campaign continues the same random stream. */
  rng: number[];
  /** How many points of the initial space-filling design were used. */
  design_index: number;
  /** This VM's own trials, in run order. */
  trials: StoredTrial[];
  /** Trials imported from similar VMs. */
  priors: StoredTrial[];
}
