// The explorer: holds what is known about one VM (its trials, imported priors, the random stream)
// and proposes the next batch of profiles with one of three strategies:
// - baseline: the specification's generator around the production operating point;
// - random:   uniform over the search space (the comparison point);
// - adaptive: a full-stress probe and a space-filling start, then batches chosen from the outcomes
//             so far (see docs/explorer.md).
import { DEFAULT_PROFILE_BOUNDS, FAULT_KINDS, type FaultKind, type StressProfile } from "@shadowvm/shared";
import { baselineToStressProfile, generateStressProfile, type ProductionVmData } from "./baseline.js";
import { type Boundary, estimateBoundaries } from "./boundary.js";
import { CoHighPairs, PairCoverDesign } from "./design.js";
import {
  fitSelectedModel,
  type KernelBetaModel,
  type LabeledPoint,
  selectLengthscale,
  sqDist,
} from "./model.js";
import { Rng } from "./rng.js";
import { type ProfileBounds, ProfileSpace, stressOf } from "./space.js";
import type { ExplorerState, Outcome, StoredTrial, StrategyName } from "./types.js";

/** Production operating point used when none is given (a moderately busy VM). */
export const DEFAULT_VM_PROFILE: ProductionVmData = {
  average_cpu_usage: 0.5,
  average_memory_usage: 0.6,
  average_disk_io: 0.4,
};

export interface ExplorerOptions {
  strategy: StrategyName;
  seed: number | string;
  bounds?: ProfileBounds;
  faultKinds?: readonly FaultKind[];
  /** Length of each shadow run (default 120 s). */
  durationS?: number;
  /** Production data the baseline perturbs. */
  vmProfile?: ProductionVmData;
  /** Points of the initial space-filling design (adaptive). Default 8. */
  initialDesign?: number;
  /** Weight of each imported prior trial relative to an own trial (default 0.3). */
  priorWeight?: number;
  vmId?: string;
}

interface Candidate {
  u: number[];
  z: number[];
}

interface Row {
  z: number[];
  u: number[];
  signatures: readonly string[];
  failed: boolean;
  w: number;
  own: boolean;
}

/** The candidate pool (recall slots) and the ablations (boundary slots) per batch slot. */
const CANDIDATES = 1200;
const ABLATIONS = 300;
type SlotKind = "discover" | "boundary";
/** Discovery tactics the bandit chooses among (see docs/explorer.md). */
const DISCOVERY_ARMS = ["fill", "face"] as const;
type Arm = (typeof DISCOVERY_ARMS)[number] | "corner" | "recheck" | "recall" | "boundary";
/**
 * What the full-stress probe showed, which decides the discovery tactic (see probeTactic):
 * nothing, one signature (a crash may hide milder ones), or several at once.
 */
type ProbeVerdict = "not-run" | "quiet" | "single" | "several";
/** Share of each knob's range the initial design spans, centred (see fillPoint). */
const INITIAL_DESIGN_SPREAD = 0.8;
/** Points of each later block of the space-filling sequence (see PairCoverDesign). */
const DESIGN_BLOCK = 8;
/** Pseudo-trials of the tactics' shared prior. */
const ARM_PRIOR = 2;
/** Per-trial discount of a tactic's past results. */
const ARM_DISCOUNT = 0.85;
/** Share of coordinates a `face` point pushes to their maximum. */
const FACE_SHARE = 0.25;
/** Random sets of coordinates to push a `face` point draws, keeping the least tried one (see nextFace). */
const FACE_DRAWS = 16;
/** A coordinate at or above this (unit scale) counts as high when pairs of high coordinates are counted. */
const FACE_HIGH = 0.8;
/** After a single-signature probe, partial corners in a row without a new signature before the
 * bandit takes over the discovery slots. */
const FACE_DRY_WINDOW = 6;
/** A fill point the known signatures' models explain with at least this probability is skipped... */
const EXPLAINED = 0.7;
/** ...at most this many times in a row (the sequence stays space-filling). */
const MAX_SKIPS = 6;
/** Own runs in a row without a new signature after which discovery counts as saturated. */
const SATURATION_WINDOW = 12;
/** Once saturated, one batch slot in this many refines boundaries. */
const BOUNDARY_EVERY = 2;
/** Recall slots per signature known only from similar VMs, before it is left to discovery. */
const RECALL_TRIES = 2;

export class Explorer {
  readonly strategy: StrategyName;
  readonly space: ProfileSpace;
  readonly vmProfile: ProductionVmData;
  readonly initialDesign: number;
  readonly priorWeight: number;
  private state: ExplorerState;
  private rng: Rng;
  /** The space-filling sequence `fill` takes its points from (and `face` its plain R_d points). */
  private readonly design: PairCoverDesign;
  /** Tactic behind each proposed, not yet observed profile (credit for the bandit). */
  private pendingArms: string[] = [];

  constructor(opts: ExplorerOptions, state?: ExplorerState) {
    this.strategy = opts.strategy;
    this.space = new ProfileSpace({
      bounds: opts.bounds ?? DEFAULT_PROFILE_BOUNDS,
      faultKinds: opts.faultKinds ?? FAULT_KINDS,
      durationS: opts.durationS ?? 120,
    });
    this.vmProfile = opts.vmProfile ?? DEFAULT_VM_PROFILE;
    this.initialDesign = Math.max(1, opts.initialDesign ?? 8);
    this.priorWeight = opts.priorWeight ?? 0.3;
    if (state) {
      if (state.version !== 1) throw new Error(`unsupported explorer state version ${String(state.version)}`);
      this.state = structuredClone(state);
    } else {
      this.state = {
        version: 1,
        ...(opts.vmId === undefined ? {} : { vm_id: opts.vmId }),
        seed: opts.seed,
        rng: new Rng(opts.seed).state(),
        design_index: 0,
        trials: [],
        priors: [],
      };
    }
    this.rng = Rng.fromState(this.state.rng);
    this.design = new PairCoverDesign({
      seed: this.state.seed,
      dim: this.space.size,
      knobDims: this.space.dims.flatMap((d, i) => (d.kind === "knob" ? [i] : [])),
      initial: this.initialDesign,
      initialSpread: INITIAL_DESIGN_SPREAD,
      block: DESIGN_BLOCK,
    });
  }

  /** A JSON-safe snapshot for the state store. */
  toState(): ExplorerState {
    return structuredClone({ ...this.state, rng: this.rng.state() });
  }

  get trials(): readonly StoredTrial[] {
    return this.state.trials;
  }

  get priors(): readonly StoredTrial[] {
    return this.state.priors;
  }

  /** Imports another VM's own trials as priors, down-weighted by `weight` (their priors are not chained). */
  importPriors(other: ExplorerState, weight = this.priorWeight): number {
    const source = other.vm_id ?? "prior";
    for (const t of other.trials) {
      this.state.priors.push({ ...structuredClone(t), weight: weight * (t.weight ?? 1), source });
    }
    return other.trials.length;
  }

  /** Signatures seen on this VM, in order of discovery. */
  signaturesFound(): string[] {
    const seen = new Set<string>();
    for (const t of this.state.trials) for (const s of t.outcome.signatures) seen.add(s);
    return [...seen];
  }

  observe(results: readonly { profile: StressProfile; outcome: Outcome }[], strategy = this.strategy): void {
    for (const r of results) {
      const arm = this.pendingArms.shift();
      this.state.trials.push({
        ...(arm === undefined ? {} : { arm }),
        profile: structuredClone(r.profile),
        outcome: { failed: r.outcome.failed, signatures: [...new Set(r.outcome.signatures)] },
        strategy,
        weight: 1,
        source: "self",
      });
    }
  }

  propose(k: number): StressProfile[] {
    this.pendingArms = [];
    if (k <= 0) return [];
    if (this.strategy === "baseline") {
      return Array.from({ length: k }, () =>
        baselineToStressProfile(generateStressProfile(this.vmProfile, this.rng), {
          durationS: this.space.durationS,
          faultKinds: this.space.faultKinds,
          bounds: this.space.bounds,
        }),
      );
    }
    if (this.strategy === "random") {
      return Array.from({ length: k }, () => this.space.fromUnit(this.uniformUnit()));
    }
    return this.proposeAdaptive(k);
  }

  /** Boundary estimates for every signature seen on this VM. */
  boundary(opts: { bootstrap?: number } = {}): Boundary {
    const rows = this.rows();
    const own = rows.filter((r) => r.own);
    if (own.length === 0) return {};
    // A separate stream, so asking for the boundary never changes the next proposals.
    const rng = new Rng(`boundary:${this.state.seed}:${own.length}`);
    return estimateBoundaries({
      space: this.space,
      own: this.state.trials.map((t, i) => ({
        z: own[i]!.z,
        signatures: t.outcome.signatures,
        profile: t.profile,
      })),
      priors: rows.filter((r) => !r.own).map((r) => ({ z: r.z, signatures: r.signatures, w: r.w })),
      rng,
      bootstrap: opts.bootstrap ?? 0,
    });
  }

  // ---- adaptive ----

  private uniformUnit(): number[] {
    return Array.from({ length: this.space.size }, () => this.rng.random());
  }

  private rows(): Row[] {
    const mk = (t: StoredTrial, own: boolean): Row => {
      const z = this.space.features(t.profile);
      return {
        z,
        u: this.space.unitFromFeatures(z),
        signatures: t.outcome.signatures,
        failed: t.outcome.failed || t.outcome.signatures.length > 0,
        w: own ? 1 : t.weight,
        own,
      };
    };
    return [...this.state.trials.map((t) => mk(t, true)), ...this.state.priors.map((t) => mk(t, false))];
  }

  private failurePoints(rows: readonly Row[]): LabeledPoint[] {
    return rows.map((r) => ({ z: r.z, y: r.failed ? 1 : 0, w: r.w }));
  }

  private proposeAdaptive(k: number): StressProfile[] {
    const out: StressProfile[] = [];
    const D = this.space.size;
    // Full-stress probe: every knob at its maximum, every allowed fault at its top rate. Every failure
    // mode that grows with stress shows there, so one run screens them all (a crash may hide the
    // milder ones: the face and fill tactics look for those).
    const probe = this.fullStressProbe();
    const verdict = probeVerdict(probe);
    const fullStress = () => this.space.fromUnit(new Array<number>(D).fill(1));
    if (!probe) {
      out.push(fullStress());
      this.pendingArms.push("corner");
    }
    // Initial space-filling design (only counts this VM's own trials). When full stress showed a
    // single signature, the rest of it is skipped: partial corners are what uncover the milder
    // modes a crash hides, and they should start at once (see probeTactic).
    const initialDesign = verdict === "single" ? 0 : this.initialDesign;
    while (
      out.length < k &&
      this.state.design_index < initialDesign &&
      this.state.trials.length + out.length < initialDesign
    ) {
      out.push(this.space.fromUnit(this.fillPoint(this.state.design_index++)));
      this.pendingArms.push("fill");
    }
    if (out.length === k) return out;
    // Several signatures at once: detection can miss one (a flaky detector, a log line lost when
    // the guest dies), and a second full-stress run is the cheapest screen for what the first missed.
    if (verdict === "several" && !this.state.trials.some((t) => t.arm === "recheck")) {
      out.push(fullStress());
      this.pendingArms.push("recheck");
      if (out.length === k) return out;
    }

    const rows = this.rows();
    const own = rows.filter((r) => r.own);
    const sigCount = new Map<string, number>();
    for (const r of own) for (const s of r.signatures) sigCount.set(s, (sigCount.get(s) ?? 0) + 1);
    const allSigs = [...new Set(rows.flatMap((r) => r.signatures))].sort();
    const sigModels = new Map<string, KernelBetaModel>();
    for (const s of allSigs) {
      const pts = rows.map((r) => ({ z: r.z, y: r.signatures.includes(s) ? 1 : 0, w: r.w }));
      sigModels.set(s, fitSelectedModel(pts, D));
    }
    const ownSigs = allSigs.filter((s) => sigCount.has(s));
    // Signatures similar VMs showed and this one has not (yet).
    const priorOnly = allSigs.filter((s) => !sigCount.has(s));
    /** Probability that a run at z shows some signature already seen here. */
    const explained = (z: readonly number[]) => {
      let none = 1;
      for (const s of ownSigs) none *= 1 - sigModels.get(s)!.predict(z).mean;
      return 1 - none;
    };

    // Every pick joins the tried set before the next slot is chosen, so a batch spreads out.
    const tried = [...own.map((r) => r.z), ...out.map((p) => this.space.features(p))];
    const lengthscale = selectLengthscale(this.failurePoints(rows), D);
    const inv2l2 = 1 / (2 * lengthscale * lengthscale);
    const novelty = (z: readonly number[]) => {
      let d = Infinity;
      for (const t of tried) d = Math.min(d, sqDist(z, t));
      return Number.isFinite(d) ? 1 - Math.exp(-d * inv2l2) : 1;
    };

    const saturated = ownSigs.length > 0 && this.discoverySaturated();
    const armStats = this.armStats();
    // Set for the whole batch by what full stress showed, or left to the bandit slot by slot.
    const probeTactic = this.probeTactic(verdict, saturated);
    let slot = this.state.trials.length + out.length;
    let boundaryTurn = this.state.trials.length;
    let recalls =
      priorOnly.length * RECALL_TRIES - this.state.trials.filter((t) => t.arm === "recall").length;
    let candidates: Candidate[] | undefined;
    let faceHighs: CoHighPairs | undefined;
    while (out.length < k) {
      const kind: SlotKind = saturated && slot % BOUNDARY_EVERY === 0 ? "boundary" : "discover";
      slot++;
      let arm: Arm;
      let profile: StressProfile;
      if (kind === "boundary") {
        arm = "boundary";
        profile = this.boundaryProbe(
          ownSigs[boundaryTurn++ % ownSigs.length]!,
          own,
          ownSigs,
          sigModels,
          novelty,
        );
      } else if (recalls > 0 && !this.pendingArms.includes("recall")) {
        // Recall: one slot per batch looks where similar VMs saw signatures this VM has not shown yet.
        arm = "recall";
        recalls--;
        candidates ??= this.candidates(rows, lengthscale);
        let best = candidates[0]!;
        let bestScore = -Infinity;
        for (const c of candidates) {
          let p = 0;
          for (const s of priorOnly) p += sigModels.get(s)!.predict(c.z).mean;
          const score = p * novelty(c.z);
          if (score > bestScore) {
            bestScore = score;
            best = c;
          }
        }
        profile = this.space.fromUnit(best.u);
      } else {
        arm = probeTactic ?? this.chooseArm(armStats);
        if (arm === "face") {
          faceHighs ??= this.faceHighPairs(own);
          profile = this.nextFace(faceHighs);
        } else profile = this.nextFill(explained);
      }
      tried.push(this.space.features(profile));
      this.pendingArms.push(arm);
      out.push(profile);
    }
    return out;
  }

  /**
   * The tactic of the discovery slots, from what the full-stress probe showed:
   * - nothing: `fill`. Partial corners pay only for failure modes that grow with stress, and a
   *   quiet full-stress run says there are none.
   * - a single signature: `face`, until FACE_DRY_WINDOW of them in a row find nothing new. A crash
   *   at full stress may hide milder modes, and partial corners, with a few coordinates high, are
   *   where those show without it. (On real shadows every run reports its primary failure only,
   *   so a failing full-stress run always takes this path.)
   * - several signatures: `fill`, until discovery saturates. Full stress (and its recheck) has
   *   shown the modes that grow with stress; what is left is mostly inside the space (islands),
   *   which only filling finds, at a few percent per run, so a dry spell is no reason to stop.
   *   Once saturated, the bandit: partial corners then also bracket thresholds near the top of
   *   the ranges, which fill points keep off (the boundary error at budget 50 fell with this).
   * Otherwise (the probe's outcome not known yet, partial corners run dry, or saturated after
   * several) undefined: the bandit chooses, as which tactic pays then depends on the failure
   * geometry.
   */
  private probeTactic(verdict: ProbeVerdict, saturated: boolean): Arm | undefined {
    if (verdict === "quiet") return "fill";
    if (verdict === "single" && !this.facesRanDry()) return "face";
    if (verdict === "several" && !saturated) return "fill";
    return undefined;
  }

  /** Whether the last FACE_DRY_WINDOW own `face` runs all found no new signature. */
  private facesRanDry(): boolean {
    const faceFoundNew: boolean[] = [];
    this.forEachOwnTrial((t, isNew) => {
      if (t.arm === "face") faceFoundNew.push(isNew);
    });
    return faceFoundNew.length >= FACE_DRY_WINDOW && !faceFoundNew.slice(-FACE_DRY_WINDOW).some(Boolean);
  }

  /**
   * Thompson sampling over the discovery tactics, rewarded by new signatures: which one pays
   * depends on the failure geometry (partial corners for stress-driven and crash-masked failures,
   * even filling for islands), so the campaign learns it instead of assuming it. Empirical-Bayes
   * prior: every tactic starts at the pooled success rate with the weight of two trials.
   */
  private chooseArm(armStats: Map<Arm, { pulls: number; wins: number }>): Arm {
    let wins = 0;
    let pulls = 0;
    for (const st of armStats.values()) {
      wins += st.wins;
      pulls += st.pulls;
    }
    const pooled = (wins + 1) / (pulls + 2);
    let arm: Arm = DISCOVERY_ARMS[0];
    let bestDraw = -1;
    for (const a of DISCOVERY_ARMS) {
      const st = armStats.get(a)!;
      const draw = this.rng.beta(ARM_PRIOR * pooled + st.wins, ARM_PRIOR * (1 - pooled) + st.pulls - st.wins);
      if (draw > bestDraw) {
        bestDraw = draw;
        arm = a;
      }
    }
    return arm;
  }

  /**
   * Point i of the space-filling sequence (PairCoverDesign). The initial design's knob coordinates
   * keep to the middle of their range (INITIAL_DESIGN_SPREAD): a failure region that lies inside
   * the bounds, placed anywhere, covers a central point more often than one near a face, and the
   * faces and the corner are what the full-stress probe and the `face` tactic screen. Later points
   * come in blocks moved to cover each pair of knobs where earlier points left gaps, which keeps
   * them off the edges of the ranges until every pair is covered.
   */
  private fillPoint(i: number): number[] {
    return this.design.point(i);
  }

  /**
   * `fill`: the next point of the space-filling sequence (even coverage, no pull to the corners),
   * skipping points the models of the signatures already seen explain: a run there would most
   * likely re-confirm a known signature (or, when a crash masks milder ones, could show nothing else).
   */
  private nextFill(explained: (z: readonly number[]) => number): StressProfile {
    let profile = this.space.fromUnit(this.fillPoint(this.state.design_index++));
    for (let skip = 0; skip < MAX_SKIPS && explained(this.space.features(profile)) >= EXPLAINED; skip++) {
      profile = this.space.fromUnit(this.fillPoint(this.state.design_index++));
    }
    return profile;
  }

  /**
   * `face`: a partial corner, the next sequence point with about a quarter of its coordinates at
   * their maximum (a two-level screening component). Failure modes that need a few knobs or faults
   * high show there, including those a more severe failure masks at the full corner. Which
   * coordinates: of FACE_DRAWS random sets, the one whose pairs (with the point's coordinates that
   * are high anyway) earlier partial corners had high together least often. The pair counts are
   * updated with the chosen point, so a batch spreads over the pairs too.
   */
  private nextFace(highs: CoHighPairs): StressProfile {
    // Plain R_d over the whole range: the pair-covering blocks keep knobs away from their edges,
    // and runs with a knob high but not pushed are what bracket a threshold near the top (measured:
    // with the blocks' points here, the boundary error rose and masked modes were found less often).
    const u = this.design.plainPoint(this.state.design_index++);
    let size = 0;
    for (let j = 0; j < u.length; j++) if (this.rng.random() < FACE_SHARE) size++;
    const alreadyHigh = highs.highOf(u);
    let pushed: number[] = [];
    let leastOverlap = Infinity;
    for (let draw = 0; draw < FACE_DRAWS; draw++) {
      const set = this.rng.sample(u.length, size);
      const overlap = highs.overlap([...new Set([...set, ...alreadyHigh])]);
      if (overlap < leastOverlap) {
        leastOverlap = overlap;
        pushed = set;
      }
    }
    for (const j of pushed) u[j] = 1;
    highs.add(u);
    return this.space.fromUnit(u);
  }

  /**
   * Pairs of coordinates high together in this VM's partial corners so far (see nextFace), from
   * the own rows already computed for the batch (row i is trial i).
   */
  private faceHighPairs(own: readonly Row[]): CoHighPairs {
    const highs = new CoHighPairs(this.space.size, FACE_HIGH);
    this.state.trials.forEach((t, i) => {
      if (t.arm === "face") highs.add(own[i]!.u);
    });
    return highs;
  }

  /**
   * Boundary probe for a target signature: among ablations of its least-stress positive runs, the
   * one with the largest expected lowering of the least stress seen, summed over every signature
   * found (one run can lower several): sum_s p_s(x) * (least stress of s so far - stress(x)).
   */
  private boundaryProbe(
    target: string,
    own: readonly Row[],
    ownSigs: readonly string[],
    sigModels: ReadonlyMap<string, KernelBetaModel>,
    novelty: (z: readonly number[]) => number,
  ): StressProfile {
    const least = new Map<string, number>();
    for (const s of ownSigs) {
      let m = Infinity;
      for (const r of own) if (r.signatures.includes(s)) m = Math.min(m, stressOf(r.z));
      least.set(s, m);
    }
    const positives = own
      .filter((r) => r.signatures.includes(target))
      .sort((a, b) => stressOf(a.z) - stressOf(b.z));
    const pool = this.ablations(positives.slice(0, 3).map((r) => r.z));
    let best: Candidate | undefined;
    let bestScore = 0;
    for (const c of pool) {
      const stress = stressOf(c.z);
      let gain = 0;
      for (const s of ownSigs) {
        const g = least.get(s)! - stress;
        if (g > 0) gain += sigModels.get(s)!.predict(c.z).mean * g;
      }
      const score = gain * novelty(c.z);
      if (score > bestScore) {
        bestScore = score;
        best = c;
      }
    }
    return this.space.fromUnit(best ? best.u : this.uniformUnit());
  }

  /**
   * Discovery counts as saturated when none of the last SATURATION_WINDOW own runs showed a new
   * signature. Boundary slots also need the full-stress probe to have failed: ablating toward lower
   * stress pays when failures are stress-driven; when the corner passes, the failures sit inside the
   * space and every run is better spent on discovery.
   */
  private discoverySaturated(): boolean {
    const trials = this.state.trials;
    if (trials.length < SATURATION_WINDOW) return false;
    const verdict = probeVerdict(this.fullStressProbe());
    if (verdict === "not-run" || verdict === "quiet") return false;
    let newest = -1;
    this.forEachOwnTrial((_, isNew, i) => {
      if (isNew) newest = i;
    });
    return newest < trials.length - SATURATION_WINDOW;
  }

  /** The full-stress probe's trial, once it has run on this VM (it runs once per VM). */
  private fullStressProbe(): StoredTrial | undefined {
    return this.state.trials.find((t) => t.arm === "corner");
  }

  /** Calls `fn` for every own trial in order, with whether it showed a signature not seen before it. */
  private forEachOwnTrial(fn: (trial: StoredTrial, isNew: boolean, index: number) => void): void {
    const seen = new Set<string>();
    this.state.trials.forEach((t, i) => {
      const isNew = t.outcome.signatures.some((x) => !seen.has(x));
      for (const x of t.outcome.signatures) seen.add(x);
      fn(t, isNew, i);
    });
  }

  /** Per discovery tactic: own trials it proposed and how many of them found a new signature. */
  private armStats(): Map<Arm, { pulls: number; wins: number }> {
    const stats = new Map<Arm, { pulls: number; wins: number }>(
      DISCOVERY_ARMS.map((a) => [a, { pulls: 0, wins: 0 }]),
    );
    const n = this.state.trials.length;
    this.forEachOwnTrial((t, isNew, i) => {
      const st = t.arm ? stats.get(t.arm as Arm) : undefined;
      if (!st) return;
      // Discounted: finding new signatures depletes a tactic's region, so recent results count more.
      const w = ARM_DISCOUNT ** (n - 1 - i);
      st.pulls += w;
      if (isNew) st.wins += w;
    });
    return stats;
  }

  /** Lower-stress variants of given points: random subsets of knobs scaled down (or zeroed). */
  private ablations(bases: readonly number[][]): Candidate[] {
    const out: Candidate[] = [];
    if (bases.length === 0) return out;
    for (let i = 0; i < ABLATIONS; i++) {
      const z = [...bases[i % bases.length]!];
      const q = 0.2 + 0.6 * this.rng.random();
      for (let j = 0; j < z.length; j++) {
        if (this.rng.random() < q) z[j] = this.rng.random() < 0.3 ? 0 : z[j]! * this.rng.random();
      }
      const p = this.space.profileFromFeatures(z);
      const zz = this.space.features(p);
      out.push({ u: this.space.unitFromFeatures(zz), z: zz });
    }
    return out;
  }

  /** Candidate pool: uniform points with bandit-chosen faults, jitters of failures, shrunk failures. */
  private candidates(rows: readonly Row[], lengthscale: number): Candidate[] {
    const D = this.space.size;
    const faultDims = this.space.dims.map((d, i) => (d.kind === "fault" ? i : -1)).filter((i) => i >= 0);
    // Thompson sampling per fault kind: "on" wins when a draw of its discovery rate with the fault
    // beats a draw of the rate without it.
    const stats = faultDims.map((dimIdx) => {
      const kind = this.space.dims[dimIdx]!;
      const s = { on: [1, 1], off: [1, 1] };
      this.forEachOwnTrial((t, isNew) => {
        const on = kind.kind === "fault" && t.profile.faults.some((f) => f.kind === kind.fault && f.rate > 0);
        const arm = on ? s.on : s.off;
        arm[isNew ? 0 : 1]! += 1;
      });
      return s;
    });
    const failing = rows.filter((r) => r.failed);
    const out: Candidate[] = [];
    const push = (u: number[]) => {
      const p = this.space.fromUnit(u);
      const z = this.space.features(p);
      out.push({ u: this.space.unitFromFeatures(z), z });
    };
    const sigma = Math.max(0.05, lengthscale / Math.sqrt(D));
    const banditFaults = (u: number[]) => {
      faultDims.forEach((dimIdx, j) => {
        const s = stats[j]!;
        const on = this.rng.beta(s.on[0]!, s.on[1]!) > this.rng.beta(s.off[0]!, s.off[1]!);
        u[dimIdx] = on ? 0.5 + u[dimIdx]! / 2 : u[dimIdx]! / 2;
      });
      return u;
    };
    for (let i = 0; i < CANDIDATES; i++) {
      const r = this.rng.random();
      const local = failing.length > 0 && r >= 0.6;
      if (!local && r < 0.35) push(banditFaults(this.uniformUnit()));
      else if (!local) {
        // Faces of the cube: a random subset of knobs near their maximum. A trend that grows with
        // stress peaks on these faces, so the pool must reach them (uniform points rarely do).
        const u = banditFaults(this.uniformUnit());
        const q = 0.15 + 0.6 * this.rng.random();
        for (let j = 0; j < D; j++) if (this.rng.random() < q) u[j] = 0.75 + 0.25 * this.rng.random();
        push(u);
      } else {
        const base = failing[this.rng.int(failing.length)]!;
        const u = [...base.u];
        if (r < 0.85) {
          // Jitter around a failure: neighbouring regions often hold related failure modes.
          for (let j = 0; j < D; j++) {
            const isFault = this.space.dims[j]!.kind === "fault";
            if (isFault && this.rng.random() < 0.15) u[j] = u[j]! >= 0.5 ? u[j]! / 2 : 0.5 + u[j]! / 2;
            else u[j] = clampUnit(u[j]! + sigma * 2 * this.rng.normal(), isFault ? u[j]! : undefined);
          }
        } else {
          // Shrink toward idle along a random subset of knobs: probes for the least stress.
          const f = 0.4 + 0.55 * this.rng.random();
          const z = [...base.z];
          for (let j = 0; j < D; j++) if (this.rng.random() < 0.5) z[j] = z[j]! * f;
          u.splice(0, D, ...this.space.unitFromFeatures(z));
        }
        push(u);
      }
    }
    return out;
  }
}

/** Keeps a jittered coordinate in [0,1]; a fault coordinate stays on its side of 0.5. */
function clampUnit(v: number, faultFrom?: number): number {
  if (faultFrom === undefined) return Math.min(1, Math.max(0, v));
  return faultFrom >= 0.5 ? Math.min(1, Math.max(0.5, v)) : Math.min(0.499, Math.max(0, v));
}

function probeVerdict(probe: StoredTrial | undefined): ProbeVerdict {
  if (!probe) return "not-run";
  const shown = probe.outcome.signatures.length;
  return shown === 0 ? "quiet" : shown === 1 ? "single" : "several";
}
