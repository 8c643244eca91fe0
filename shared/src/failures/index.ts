// Public surface of the console failure parser (see docs/failure-signatures.md).
export { CORPUS_TYPE_CLASSES, classMatchesCorpusType } from "./class-map.js";
export { ConsoleScanner, parseConsole, rankFailures } from "./console-parser.js";
export { failureFingerprint, normalizeFailureTitle } from "./fingerprint.js";
export {
  consoleLinePattern,
  consoleLineTimeMs,
  type LinePattern,
  MAX_PATTERN_CHARS,
  patternWords,
} from "./line-pattern.js";
export { oomKillTitle, oomKillVictim } from "./signals.js";
export { FAILURE_CLASSES, type FailureClass, type ParsedFailure } from "./types.js";
