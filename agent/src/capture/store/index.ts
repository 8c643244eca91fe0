// Public API of the capture store (see README.md for the format and the figures).

export {
  type BeginCaptureOptions,
  CaptureStore,
  type CaptureStoreOptions,
  type GcResult,
  newCaptureId,
  type RecoverResult,
  type RestoreOptions,
  type RestoreResult,
  type RetentionPolicy,
  type RetentionResult,
  type ScanResult,
  type VerifyProblem,
  type VerifyResult,
} from "./capture-store.js";
export {
  type AddPartOptions,
  type CaptureInfo,
  CaptureWriter,
  type PartInfo,
  type PartProgress,
} from "./capture-writer.js";
export { type ChunkerParams, DEFAULT_CHUNKER_PARAMS } from "./chunker.js";
export { CaptureStoreError, type CaptureStoreErrorCode } from "./errors.js";
export type { StoreIo } from "./fs-util.js";
export { KEY_FILE_HEADER } from "./key-file.js";
