// The agent's failure-signature database (see docs/detection.md).
export {
  type PendingSignatureUpdate,
  type PrecursorMatch,
  type PrecursorStat,
  SignatureDb,
  type SignatureDbOptions,
  type SignatureObservation,
  type SignatureRecord,
  signatureDbPath,
  signatureUpdateMessage,
} from "./signature-db.js";
