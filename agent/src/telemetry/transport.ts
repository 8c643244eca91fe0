// The transport contract, OpenTelemetry-exporter style: sending one spooled frame ends in a value,
// not an exception. success = the collector committed and acknowledged it (delete it from the
// spool); retryable = it may succeed later (keep it, reconnect, resend); failure = the collector
// refused this frame for good (move it to the spool's dead letters, never resend).
import type { SpoolRecord } from "../spool/spool.js";

export type SendResult =
  | { status: "success" }
  | { status: "retryable"; reason: string; retryInMillis?: number }
  | { status: "failure"; reason: string };

export interface FrameTransport {
  send(record: SpoolRecord, timeoutMs: number): Promise<SendResult>;
}
