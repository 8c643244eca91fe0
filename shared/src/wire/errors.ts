import { ShadowvmError } from "../errors.js";

/**
 * What was wrong with a frame:
 * - oversized:  longer than the maximum frame size (checked before decoding)
 * - truncated:  a field or nested message runs past the end of the data that holds it
 * - malformed:  not protobuf (bad tag, wire type, varint or UTF-8)
 * - invalid:    decodes, but breaks a rule of the protocol (no body, unknown enum value, ...)
 * - too_deep:   nests groups/messages deeper than the decoder's recursion limit
 */
export type WireErrorCode = "oversized" | "truncated" | "malformed" | "invalid" | "too_deep";

/**
 * The one error the frame codec throws (origin "wire"). The message says what was wrong and what
 * was expected.
 */
export class WireError extends ShadowvmError {
  declare readonly code: WireErrorCode;
  constructor(code: WireErrorCode, message: string, options?: { cause?: unknown }) {
    super("wire", code, message, options);
    this.name = "WireError";
  }
}
