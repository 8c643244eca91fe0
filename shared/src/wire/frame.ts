// The frame codec. One frame = one WebSocket binary message = one encoded shadowvm.v1.Envelope
// (shared/proto/shadowvm/v1/envelope.proto), nothing around it: the WebSocket already delimits
// messages. Decoding checks the size first, maps every protobufjs failure to a WireError and then
// validates the result; encoding validates first, so an invalid frame never reaches the wire.
import protobuf from "protobufjs/minimal.js";
import { shadowvm } from "../../generated/shadowvm.js";
import { schema } from "../../generated/shadowvm-schema.js";
import { WireError } from "./errors.js";
import { validateEnvelope } from "./validate.js";

/** Version of this protocol, sent in Hello.protocol_version. Bump on incompatible changes. */
export const PROTOCOL_VERSION = 1;
/** 4 MiB: a telemetry batch of a few thousand samples is well below it. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Nesting (groups and messages) the decoder follows before giving up with "too_deep". */
export const MAX_NESTING_DEPTH: number = protobuf.Reader.recursionLimit;

export type Envelope = shadowvm.v1.Envelope;
/** An Envelope as a plain object (what encodeFrame takes); unset fields may be left out. */
export type EnvelopeInit = shadowvm.v1.Envelope.$Properties;
/** Name of the body field that is set, e.g. "hello" or "telemetry_batch". */
export type EnvelopeBodyKind = NonNullable<shadowvm.v1.Envelope["body"]>;

export interface FrameOptions {
  /** Frames longer than this are refused (decode) or not produced (encode). */
  maxFrameBytes?: number;
}

function maxBytes(options: FrameOptions | undefined): number {
  const max = options?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(max) || max <= 0)
    throw new RangeError(`maxFrameBytes must be a positive integer, got ${max}`);
  return max;
}

/**
 * Validates and encodes an envelope. Throws WireError "invalid" if it breaks a protocol rule and
 * "oversized" if the encoding is longer than maxFrameBytes (split the batch and retry).
 * The result may be a view into a shared buffer: send it or copy it, don't use `.buffer`.
 */
export function encodeFrame(envelope: EnvelopeInit, options?: FrameOptions): Uint8Array {
  const max = maxBytes(options);
  validateEnvelope(envelope);
  const bytes = shadowvm.v1.Envelope.encode(envelope).finish();
  if (bytes.byteLength > max) {
    throw new WireError(
      "oversized",
      `encoded frame of ${bytes.byteLength} bytes exceeds the maximum of ${max} bytes (split it into smaller frames)`,
    );
  }
  return bytes;
}

/** Turns whatever protobufjs threw into a WireError saying what was wrong. */
function decodeError(err: unknown, size: number): WireError {
  const text = err instanceof Error ? err.message : String(err);
  const expected = "expected one complete encoded shadowvm.v1.Envelope";
  if (/max depth exceeded|call stack/i.test(text)) {
    return new WireError(
      "too_deep",
      `frame nests groups or messages deeper than ${MAX_NESTING_DEPTH} levels (${text}); expected at most ${MAX_NESTING_DEPTH}`,
      { cause: err },
    );
  }
  if (/index out of range/.test(text)) {
    return new WireError(
      "truncated",
      `truncated frame: a field runs past the end of the ${size}-byte frame or of the message holding it (${text}); ${expected}`,
      { cause: err },
    );
  }
  if (/missing end group/.test(text)) {
    return new WireError(
      "truncated",
      `truncated frame: a group is not closed before the frame ends; ${expected}`,
      {
        cause: err,
      },
    );
  }
  if (/encoded data was not valid|utf-?8/i.test(text)) {
    return new WireError("malformed", `malformed frame: a string field is not valid UTF-8; ${expected}`, {
      cause: err,
    });
  }
  return new WireError("malformed", `malformed frame: ${text}; ${expected}`, { cause: err });
}

/**
 * Decodes and validates one frame. Throws WireError (and nothing else): "oversized" before
 * decoding anything, "truncated" / "malformed" / "too_deep" when protobufjs cannot decode it,
 * "invalid" when it decodes but breaks a protocol rule. Unknown fields (from a newer peer) are
 * skipped; a body unknown to this version leaves the envelope without a body, which is "invalid".
 */
export function decodeFrame(bytes: Uint8Array | ArrayBuffer, options?: FrameOptions): Envelope {
  const max = maxBytes(options);
  const data = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes;
  if (!(data instanceof Uint8Array)) {
    throw new WireError("malformed", `frame must be binary (Uint8Array or ArrayBuffer), got ${typeof bytes}`);
  }
  if (data.byteLength > max) {
    throw new WireError("oversized", `frame of ${data.byteLength} bytes exceeds the maximum of ${max} bytes`);
  }
  let envelope: Envelope;
  try {
    const reader = protobuf.Reader.create(data);
    reader.discardUnknown = true; // nothing keeps them, and each would cost an allocation
    envelope = shadowvm.v1.Envelope.decode(reader);
  } catch (err) {
    throw decodeError(err, data.byteLength);
  }
  try {
    checkSingleBody(data);
    validateEnvelope(envelope);
  } catch (err) {
    if (err instanceof WireError) throw err;
    throw new WireError("invalid", `invalid frame: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
    });
  }
  return envelope;
}

const envelopeSchema = schema.messages["shadowvm.v1.Envelope"];
/** envelope.proto numbers session bodies 10..29 and data bodies from 30 on. */
const FIRST_DATA_BODY_FIELD = 30;

/** Names of all body kinds, in field-number order: read from the generated schema, never listed by hand. */
export const ENVELOPE_BODY_KINDS = (envelopeSchema?.oneofs["body"] ?? []) as readonly EnvelopeBodyKind[];
const BODY_BY_ID = new Map(
  (envelopeSchema?.fields ?? [])
    .filter((f) => envelopeSchema?.oneofs["body"]?.includes(f.name))
    .map((f) => [f.id, f.name]),
);
/**
 * Bodies an agent sends as data: spooled, numbered (epoch, seq) and acknowledged by the collector.
 * The others (field numbers 10..29 in envelope.proto: handshake, acks, errors, heartbeats) belong
 * to the session itself. Read from the schema, so a new data body is data without a code change.
 */
export const DATA_BODY_KINDS: ReadonlySet<EnvelopeBodyKind> = new Set(
  [...BODY_BY_ID].filter(([id]) => id >= FIRST_DATA_BODY_FIELD).map(([, name]) => name as EnvelopeBodyKind),
);

/**
 * protobufjs keeps only the last of several oneof members on the wire (and merges repeats of one),
 * so a frame with two bodies would decode as one of them. Counting the top-level body fields
 * refuses such a frame instead. Runs after a successful decode, so the bytes are well-formed.
 */
function checkSingleBody(data: Uint8Array): void {
  const reader = protobuf.Reader.create(data);
  const bodies: string[] = [];
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const name = BODY_BY_ID.get(tag >>> 3);
    if (name !== undefined && (tag & 7) === 2) bodies.push(name);
    reader.skipType(tag & 7, 0, tag >>> 3);
  }
  if (bodies.length > 1) {
    throw new WireError(
      "invalid",
      `invalid frame: envelope must have exactly one body, but the frame carries ${bodies.length} (${bodies.join(", ")})`,
    );
  }
}
