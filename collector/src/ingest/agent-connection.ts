// One agent's WebSocket connection on the collector: the handshake of control.proto (Hello ->
// AuthChallenge -> [EnrollRequest -> EnrollResult] -> AuthResponse -> AuthResult), then data
// frames into the batch writer and acknowledgements back after their commit.
//
// Anything wrong closes this connection only, after an Error frame saying what was wrong, and is
// counted (frames_rejected_total{reason} or auth_failures_total{reason}): other agents are never
// affected. WebSocket close codes: 1007 undecodable frame, 1008 policy (authentication, a frame
// out of place), 1009 too large, 1001 shutting down, 1011 store failure, 4000 replaced by a newer
// connection of the same agent, 4001 heartbeat timeout.
import { randomBytes } from "node:crypto";
import {
  agentProof,
  collectorProof,
  decodeFrame,
  type Envelope,
  type EnvelopeInit,
  encodeFrame,
  type Logger,
  PROTOCOL_VERSION,
  proofMatches,
  SHADOWVM_VERSION,
  shadowvm,
  WireError,
} from "@shadowvm/shared";
import type { WebSocket } from "ws";
import type { AuthStore } from "../auth/auth-store.js";
import type { CollectorMetrics } from "../metrics/collector-metrics.js";
import type { StreamPoint } from "../store/ingest-store.js";
import type { BatchWriter, FrameSource } from "./batch-writer.js";
import type { FrameDecoder } from "./decode-pool.js";
import type { Decoded } from "./ingest-frame.js";
import type { SampleClockCheck } from "./sample-clock.js";

const ErrorCode = shadowvm.v1.ErrorCode;
type ErrorCode = shadowvm.v1.ErrorCode;

export interface ConnectionContext {
  auth: AuthStore;
  /** Decodes frames of authenticated connections (a worker thread, or inline). */
  decoder: FrameDecoder;
  writer: BatchWriter;
  /** Tells the operator about samples whose timestamps cannot be right (a host's clock). */
  sampleClock: SampleClockCheck;
  metrics: CollectorMetrics;
  logger: Logger;
  maxFrameBytes: number;
  heartbeatIntervalMs: number;
  handshakeTimeoutMs: number;
  maxPendingFrames: number;
  resumePoints(agentId: string): StreamPoint[];
  /** Registers the authenticated connection; the registry closes an older one of the same agent. */
  authenticated(conn: AgentConnection): void;
  closed(conn: AgentConnection): void;
  /** Whether the service stopped reading every socket (global backpressure). */
  globallyPaused(): boolean;
}

type State = "hello" | "challenged" | "enrolled" | "streaming" | "closed";

let nextId = 1;

export class AgentConnection implements FrameSource {
  readonly id = nextId++;
  agentId: string | undefined;
  private state: State = "hello";
  private clientNonce: Uint8Array | undefined;
  private serverNonce: Uint8Array | undefined;
  private secret: Uint8Array | undefined;
  private pendingFrames = 0;
  private pendingBytes = 0;
  /** Frames handed to the decoder and not back yet. */
  private decoding = 0;
  private lastReceived = Date.now();
  private readonly handshakeTimer: NodeJS.Timeout;
  private readonly log: Logger;

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: ConnectionContext,
    readonly remote: string,
  ) {
    this.log = ctx.logger.child({ conn: this.id, remote });
    ctx.metrics.connections.inc({ state: "handshake" });
    this.handshakeTimer = setTimeout(() => {
      if (this.state !== "streaming" && this.state !== "closed") {
        this.ctx.metrics.authFailures.inc({ reason: "handshake_timeout" });
        this.reject(
          ErrorCode.ERROR_CODE_UNAUTHENTICATED,
          `handshake not finished within ${ctx.handshakeTimeoutMs} ms`,
          1008,
        );
      }
    }, ctx.handshakeTimeoutMs);
    ws.on("message", (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on("error", (err: Error & { code?: string }) => this.onSocketError(err));
    ws.on("close", () => this.onClose());
  }

  get isStreaming(): boolean {
    return this.state === "streaming";
  }

  private send(init: Omit<EnvelopeInit, "agent_id" | "epoch" | "seq" | "sent_at_ms">): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    const frame = encodeFrame({
      agent_id: this.agentId ?? "unknown",
      epoch: 0,
      seq: 0,
      sent_at_ms: Date.now(),
      ...init,
    });
    this.ws.send(frame);
  }

  /** Sends Error{closes} and closes the connection with a WebSocket close code and short reason. */
  reject(
    code: ErrorCode,
    message: string,
    wsCode: number,
    extra: { ref?: { epoch: number; seq: number }; retryAfterMs?: number } = {},
  ): void {
    if (this.state === "closed") return;
    this.log.warn(
      { agent_id: this.agentId, code: ErrorCode[code], reason: message },
      "ingest: closing agent connection",
    );
    try {
      this.send({
        error: {
          code,
          message,
          closes: true,
          ref_epoch: extra.ref?.epoch ?? 0,
          ref_seq: extra.ref?.seq ?? 0,
          retry_after_ms: extra.retryAfterMs ?? 0,
        },
      });
    } catch (err) {
      this.log.debug({ err }, "ingest: could not send the error frame");
    }
    this.finish();
    // WebSocket close reasons are limited to 123 bytes.
    const reason = Buffer.from(message).subarray(0, 120).toString();
    this.ws.close(wsCode, reason.replace(/\uFFFD$/, ""));
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  private finish(): void {
    if (this.state === "closed") return;
    const wasStreaming = this.state === "streaming";
    this.state = "closed";
    clearTimeout(this.handshakeTimer);
    this.ctx.metrics.connections.dec({ state: wasStreaming ? "authenticated" : "handshake" });
    this.ctx.closed(this);
  }

  private onClose(): void {
    this.finish();
  }

  private onSocketError(err: Error & { code?: string }): void {
    if (err.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
      // ws refused a message over maxPayload before buffering it, and closes with 1009.
      this.ctx.metrics.framesRejected.inc({ reason: "oversized" });
      this.log.warn(
        { agent_id: this.agentId, reason: err.message },
        "ingest: frame too large, connection closed",
      );
    } else {
      this.ctx.metrics.error(err.code ?? "socket_error", "websocket");
      this.log.warn({ agent_id: this.agentId, err }, "ingest: WebSocket error");
    }
    this.finish();
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.state === "closed") return;
    this.lastReceived = Date.now();
    this.ctx.metrics.bytesReceived.inc(data.byteLength);
    if (!isBinary) {
      this.ctx.metrics.framesRejected.inc({ reason: "text" });
      this.reject(
        ErrorCode.ERROR_CODE_MALFORMED_FRAME,
        "text message; expected binary protobuf frames (one shadowvm.v1.Envelope each)",
        1003,
      );
      return;
    }
    if (this.state === "streaming") {
      this.onStreamingMessage(data);
      return;
    }
    // The handshake's few small frames are decoded right here.
    let envelope: Envelope;
    try {
      envelope = decodeFrame(data, { maxFrameBytes: this.ctx.maxFrameBytes });
    } catch (err) {
      this.rejectUndecodable(err instanceof WireError ? err.code : "malformed", (err as Error).message);
      return;
    }
    this.ctx.metrics.framesReceived.inc({ kind: envelope.body ?? "none" });
    if (this.agentId !== undefined && envelope.agent_id !== this.agentId) {
      this.wrongAgent(envelope.agent_id, envelope);
      return;
    }
    if (this.state === "hello") this.onHello(envelope);
    else if (this.state === "challenged" || this.state === "enrolled") this.onHandshake(envelope);
  }

  private rejectUndecodable(code: string, message: string, ref?: { epoch: number; seq: number }): void {
    this.ctx.metrics.framesRejected.inc({ reason: code });
    const [errorCode, wsCode] =
      code === "oversized"
        ? [ErrorCode.ERROR_CODE_FRAME_TOO_LARGE, 1009]
        : code === "invalid"
          ? [ErrorCode.ERROR_CODE_INVALID_MESSAGE, 1007]
          : [ErrorCode.ERROR_CODE_MALFORMED_FRAME, 1007];
    // Naming the frame (when its header is readable) lets the agent set aside that one frame
    // instead of resending it forever.
    this.reject(errorCode, message, wsCode, ref ? { ref } : {});
  }

  private wrongAgent(agentId: string, ref: { epoch: number; seq: number }): void {
    this.ctx.metrics.authFailures.inc({ reason: "agent_id_mismatch" });
    this.reject(
      ErrorCode.ERROR_CODE_UNAUTHENTICATED,
      `frame for agent ${JSON.stringify(agentId)} on a connection of agent ${JSON.stringify(this.agentId)}`,
      1008,
      { ref: { epoch: ref.epoch, seq: ref.seq } },
    );
  }

  /** Frames of an authenticated connection go through the decoder, which keeps their order. */
  private onStreamingMessage(data: Buffer): void {
    const bytes = data.byteLength;
    this.decoding++;
    if (this.pendingFrames + this.decoding >= this.ctx.maxPendingFrames) this.pause();
    this.ctx.decoder.decode(data).then(
      (decoded) => {
        this.decoding--;
        if (this.state === "streaming") this.onDecoded(decoded, bytes);
      },
      (err: Error) => {
        this.decoding--;
        this.ctx.metrics.error("decoder_failed", "ingest");
        this.reject(ErrorCode.ERROR_CODE_INTERNAL, err.message, 1011, { retryAfterMs: 1000 });
      },
    );
  }

  private unexpected(
    envelope: { body?: string | undefined | null },
    expected: string,
    code = ErrorCode.ERROR_CODE_UNAUTHENTICATED,
  ): void {
    this.ctx.metrics.framesRejected.inc({ reason: "unexpected" });
    if (code === ErrorCode.ERROR_CODE_UNAUTHENTICATED)
      this.ctx.metrics.authFailures.inc({ reason: "not_authenticated" });
    this.reject(code, `unexpected ${envelope.body} frame; expected ${expected}`, 1008);
  }

  private onHello(e: Envelope): void {
    if (e.body !== "hello" || !e.hello) {
      if (e.body === "heartbeat") return;
      this.unexpected(e, "hello (the first frame of a connection)");
      return;
    }
    const hello = e.hello;
    if (hello.protocol_version !== PROTOCOL_VERSION) {
      this.ctx.metrics.authFailures.inc({ reason: "unsupported_protocol" });
      this.reject(
        ErrorCode.ERROR_CODE_UNSUPPORTED_PROTOCOL,
        `protocol version ${hello.protocol_version} is not supported; this collector speaks ${PROTOCOL_VERSION}`,
        1008,
      );
      return;
    }
    this.agentId = e.agent_id;
    this.clientNonce = hello.client_nonce ?? new Uint8Array(0);
    this.serverNonce = new Uint8Array(randomBytes(32));
    this.log.debug({ agent_id: this.agentId, version: hello.agent_version }, "ingest: hello");
    this.state = "challenged";
    this.send({
      auth_challenge: {
        server_nonce: this.serverNonce,
        enrolled: this.ctx.auth.agentSecret(this.agentId) !== undefined,
        collector_version: SHADOWVM_VERSION,
      },
    });
  }

  private onHandshake(e: Envelope): void {
    const agentId = this.agentId!;
    if (e.body === "heartbeat") return;
    if (e.body === "enroll_request" && e.enroll_request && this.state === "challenged") {
      if (this.ctx.auth.agentSecret(agentId) !== undefined) {
        this.ctx.metrics.authFailures.inc({ reason: "already_enrolled" });
        this.reject(
          ErrorCode.ERROR_CODE_ENROLLMENT_REJECTED,
          `agent id ${JSON.stringify(agentId)} is already enrolled; an operator must revoke it first (shadowvm-collector agents revoke ${agentId})`,
          1008,
        );
        return;
      }
      const check = this.ctx.auth.checkToken(e.enroll_request.enrollment_token ?? "");
      if (!check.ok) {
        this.ctx.metrics.authFailures.inc({ reason: `token_${check.reason}` });
        this.reject(
          ErrorCode.ERROR_CODE_ENROLLMENT_REJECTED,
          `enrollment token refused (${check.reason}); ask the operator for a new one (shadowvm-collector token create)`,
          1008,
        );
        return;
      }
      const secret = this.ctx.auth.enrollAgent(agentId, check.token.id, e.enroll_request.hostname ?? "");
      if (!secret) {
        this.ctx.metrics.authFailures.inc({ reason: "already_enrolled" });
        this.reject(
          ErrorCode.ERROR_CODE_ENROLLMENT_REJECTED,
          `agent id ${JSON.stringify(agentId)} was enrolled by another connection just now`,
          1008,
        );
        return;
      }
      this.ctx.metrics.enrollments.inc();
      this.log.info({ agent_id: agentId, token_id: check.token.id }, "ingest: agent enrolled");
      this.secret = secret;
      this.state = "enrolled";
      this.send({ enroll_result: { agent_secret: secret } });
      return;
    }
    if (e.body !== "auth_response" || !e.auth_response) {
      this.unexpected(e, this.state === "challenged" ? "enroll_request or auth_response" : "auth_response");
      return;
    }
    const secret = this.secret ?? this.ctx.auth.agentSecret(agentId);
    const expected = secret ? agentProof(secret, agentId, this.serverNonce!, this.clientNonce!) : undefined;
    if (!secret || !expected || !proofMatches(expected, e.auth_response.proof)) {
      this.ctx.metrics.authFailures.inc({ reason: secret ? "wrong_proof" : "unknown_agent" });
      this.reject(
        ErrorCode.ERROR_CODE_UNAUTHENTICATED,
        secret
          ? "authentication failed: wrong proof for this agent id"
          : `authentication failed: agent ${JSON.stringify(agentId)} is not enrolled (or was revoked); enroll it with a token`,
        1008,
      );
      return;
    }
    this.secret = secret;
    clearTimeout(this.handshakeTimer);
    this.state = "streaming";
    this.ctx.metrics.connections.dec({ state: "handshake" });
    this.ctx.metrics.connections.inc({ state: "authenticated" });
    this.ctx.authenticated(this);
    const resume = this.ctx.resumePoints(agentId);
    this.log.info({ agent_id: agentId, resume }, "ingest: agent authenticated");
    this.send({
      auth_result: {
        ok: true,
        server_proof: collectorProof(secret, agentId, this.clientNonce!, this.serverNonce!),
        resume,
        heartbeat_interval_ms: this.ctx.heartbeatIntervalMs,
      },
    });
  }

  private onDecoded(d: Decoded, bytes: number): void {
    if (!d.ok) {
      this.rejectUndecodable(d.code, d.message, d.ref);
      return;
    }
    const kind = d.kind;
    this.ctx.metrics.framesReceived.inc({ kind: kind ?? "none" });
    if (d.agentId !== this.agentId) {
      this.wrongAgent(d.agentId, d);
      return;
    }
    if (kind === "heartbeat") return;
    if (kind === "error") {
      this.log.warn({ agent_id: this.agentId, error: d.error }, "ingest: the agent reported an error");
      return;
    }
    if (!d.frame) {
      this.unexpected(
        { body: kind },
        "a data frame, heartbeat or error",
        ErrorCode.ERROR_CODE_INVALID_MESSAGE,
      );
      return;
    }
    if (d.epoch < 1 || d.seq < 1) {
      this.ctx.metrics.framesRejected.inc({ reason: "invalid" });
      this.reject(
        ErrorCode.ERROR_CODE_INVALID_MESSAGE,
        `data frame without a stream position (epoch ${d.epoch}, seq ${d.seq}); expected both >= 1`,
        1008,
        { ref: d },
      );
      return;
    }
    if (d.frame.samples) this.ctx.sampleClock.check(d.agentId, d.frame.samples);
    this.pendingFrames++;
    this.pendingBytes += bytes;
    this.ctx.writer.enqueue(this, d.frame);
    if (this.pendingFrames + this.decoding >= this.ctx.maxPendingFrames) this.pause();
  }

  acknowledge(
    ranges: { epoch: number; first_seq: number; last_seq: number }[],
    frames: number,
    bytes: number,
  ): void {
    this.pendingFrames -= frames;
    this.pendingBytes -= bytes;
    if (this.state !== "streaming") return;
    this.send({ ack: { ranges } });
    this.ctx.metrics.acksSent.inc();
    this.ctx.metrics.framesAcked.inc(frames);
    this.maybeResume();
  }

  commitFailed(reason: string, frames: number, bytes: number): void {
    this.pendingFrames -= frames;
    this.pendingBytes -= bytes;
    this.reject(ErrorCode.ERROR_CODE_INTERNAL, `storing frames failed: ${reason}`, 1011, {
      retryAfterMs: 1000,
    });
  }

  /** Resumes reading once below the per-connection limit (and the global one allows it). */
  maybeResume(): void {
    if (
      this.ws.isPaused &&
      this.state === "streaming" &&
      this.pendingFrames + this.decoding < this.ctx.maxPendingFrames &&
      !this.ctx.globallyPaused()
    ) {
      this.ws.resume();
    }
  }

  pause(): void {
    if (!this.ws.isPaused) this.ws.pause();
  }

  /** Heartbeat tick: drops a silent connection, notices revocation, else sends a Heartbeat. */
  tick(now: number): void {
    if (this.state !== "streaming") return;
    // A socket the collector stopped reading (backpressure) cannot show its heartbeats: not silent.
    if (this.ws.isPaused) this.lastReceived = now;
    if (now - this.lastReceived > 3 * this.ctx.heartbeatIntervalMs) {
      this.ctx.metrics.error("heartbeat_timeout", "connection");
      this.reject(
        ErrorCode.ERROR_CODE_UNSPECIFIED,
        `nothing received for ${now - this.lastReceived} ms (3 heartbeat intervals)`,
        4001,
      );
      return;
    }
    const current = this.ctx.auth.agentSecret(this.agentId!);
    if (!current || !this.secret || !proofMatches(current, this.secret)) {
      this.ctx.metrics.authFailures.inc({ reason: "revoked" });
      this.reject(ErrorCode.ERROR_CODE_UNAUTHENTICATED, "the agent's credentials were revoked", 1008);
      return;
    }
    this.send({ heartbeat: {} });
  }

  /** Closes because a newer connection of the same agent authenticated. */
  replaced(): void {
    this.reject(ErrorCode.ERROR_CODE_UNSPECIFIED, "replaced by a newer connection of the same agent", 4000);
  }

  /** Closes for shutdown, telling the agent when to come back. */
  shutdown(): void {
    this.reject(ErrorCode.ERROR_CODE_SHUTTING_DOWN, "the collector is shutting down", 1001, {
      retryAfterMs: 1000,
    });
  }
}
