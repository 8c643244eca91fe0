// Live failure detection in a shadow run (see docs/detection.md).
export { ConsoleFollower, type ConsoleFollowerOptions } from "./console-follower.js";
export { type ConsoleHit, LiveConsole, parseConsoleFile } from "./live-console.js";
export {
  assessControl,
  type ControlOptions,
  decideOutcome,
  failureToProto,
  type OutcomeInput,
  outcomeToProto,
  rankDetected,
} from "./outcome.js";
export {
  type ConsoleView,
  consolePatterns,
  DEFAULT_PRECURSOR_OPTIONS,
  extractPrecursors,
  type PrecursorOptions,
  type PrecursorTarget,
  precursorSpecificity,
  startupPatterns,
} from "./precursors.js";
export {
  eventEvidence,
  GUEST_PANICKED_TITLE,
  type QemuEventFailure,
  qemuEventFailure,
} from "./qemu-events.js";
export {
  describeSample,
  LatencyMonitor,
  latencyThresholdFromControl,
  MAX_KEPT_SAMPLES,
  type ProbeResult,
  type ProbeTarget,
  probeOnce,
  probeStats,
  type ThresholdOptions,
} from "./service-probe.js";
export {
  type FinishOptions,
  type HeartbeatOptions,
  type QmpEventSource,
  ShadowObserver,
  type ShadowObserverOptions,
} from "./shadow-observer.js";
export type {
  ControlVerdict,
  DetectedFailure,
  DetectionClass,
  FailureSource,
  ObservationResult,
  ProbeSample,
  ProbeStats,
  RunOutcome,
} from "./types.js";
