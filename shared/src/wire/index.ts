// Public API of the wire protocol: generated message classes, the frame codec, validation, the
// stress profile <-> protobuf conversion and the authentication proofs.
export { shadowvm } from "../../generated/shadowvm.js";
export {
  AGENT_SECRET_BYTES,
  AUTH_NONCE_BYTES,
  agentProof,
  collectorProof,
  MAX_NONCE_BYTES,
  MIN_NONCE_BYTES,
  newAgentSecret,
  newNonce,
  PROOF_BYTES,
  proofMatches,
} from "./auth.js";
export { WireError, type WireErrorCode } from "./errors.js";
export {
  DATA_BODY_KINDS,
  DEFAULT_MAX_FRAME_BYTES,
  decodeFrame,
  ENVELOPE_BODY_KINDS,
  type Envelope,
  type EnvelopeBodyKind,
  type EnvelopeInit,
  encodeFrame,
  type FrameOptions,
  MAX_NESTING_DEPTH,
  PROTOCOL_VERSION,
} from "./frame.js";
export {
  faultKindFromProto,
  faultKindToProto,
  stressProfileFromProto,
  stressProfileToProto,
} from "./stress-profile-codec.js";
export { MAX_AGENT_ID_LENGTH, validateEnvelope, validateWireMessage } from "./validate.js";
