// Public surface of the stress-profile explorer.
export { DEFAULT_VM_PROFILE, Explorer, type ExplorerOptions } from "./adaptive-explorer.js";
export {
  type BaselineMappingOptions,
  type BaselineStressProfile,
  baselineToStressProfile,
  generateStressProfile,
  type ProductionVmData,
} from "./baseline.js";
export { type Boundary, needLabel, type SignatureBoundary } from "./boundary.js";
export {
  EXPLORE_USAGE,
  ExploreUsageError,
  formatSummary,
  loadVmProfile,
  type ParsedArgs,
  parseExploreArgs,
  runExploreCommand,
  runOracleCampaign,
} from "./cli.js";
export { defaultInitialDesign, type ExploreOptions, type ExploreResult, explore } from "./explore.js";
export { type RandomSource, Rng } from "./rng.js";
export {
  FunctionRunner,
  OracleError,
  type OracleProcessOptions,
  OracleProcessRunner,
  parseOutcome,
  profileToJson,
  type TrialRunner,
} from "./runner.js";
export { type ProfileBounds, ProfileSpace, stressOf } from "./space.js";
export { ExplorerStateStore } from "./state-store.js";
export type { ExplorerState, Outcome, StoredTrial, StrategyName, Trial } from "./types.js";
