// One authenticated WebSocket connection from the agent to the collector: opens wss:// with the
// operator's CA, runs the handshake of shared/proto/shadowvm/v1/control.proto (enrolling with the
// token when the agent has no secret yet), checks the collector's counter-proof, then carries
// spooled frames and reports, per frame, how sending ended (transport.ts). Heartbeats both ways:
// the session closes itself when the collector is silent for 3 heartbeat intervals.
import { EventEmitter } from "node:events";
import {
  agentProof,
  collectorProof,
  decodeFrame,
  type Envelope,
  type EnvelopeInit,
  encodeFrame,
  type Logger,
  newNonce,
  PROTOCOL_VERSION,
  proofMatches,
  SHADOWVM_VERSION,
  ShadowvmError,
  shadowvm,
  silentLogger,
} from "@shadowvm/shared";
import WebSocket from "ws";
import type { SpoolRecord } from "../spool/spool.js";
import type { CredentialsFileStore } from "./credentials.js";
import type { FrameTransport, SendResult } from "./transport.js";

const ErrorCode = shadowvm.v1.ErrorCode;

/** Why a session could not be established; `retryable` false = a configuration problem. */
export class SessionError extends ShadowvmError {
  readonly retryable: boolean;
  readonly retryInMillis: number | undefined;
  constructor(
    code: string,
    message: string,
    retryable: boolean,
    retryInMillis?: number,
    options?: { cause?: unknown },
  ) {
    super("collector", code, message, options);
    this.name = "SessionError";
    this.retryable = retryable;
    this.retryInMillis = retryInMillis;
  }
}

export interface SessionOptions {
  url: string;
  agentId: string;
  hostname: string;
  /** PEM CA bundle that signed the collector's certificate (default: the system's CAs). */
  ca?: Buffer | undefined;
  /** Accept ws:// (tests only; the token and secret would cross in clear text). */
  allowInsecure?: boolean;
  credentials: CredentialsFileStore;
  /** The enrollment token, read when needed (config value or file). */
  enrollmentToken?: () => string | undefined;
  capabilities?: string[];
  maxFrameBytes: number;
  handshakeTimeoutMs: number;
  logger?: Logger;
}

interface InFlight {
  resolve: (r: SendResult) => void;
  timer: NodeJS.Timeout;
  bytes: number;
}

export interface SessionEvents {
  /** The collector committed these ranges (already applied to the in-flight sends). */
  ack: [ranges: { epoch: number; first_seq: number; last_seq: number }[]];
  close: [reason: string];
}

/** Error codes after which the frame named in ref_seq must never be sent again. */
const FATAL_FOR_FRAME = new Set<number>([
  ErrorCode.ERROR_CODE_INVALID_MESSAGE,
  ErrorCode.ERROR_CODE_FRAME_TOO_LARGE,
  ErrorCode.ERROR_CODE_MALFORMED_FRAME,
]);

export class CollectorSession extends EventEmitter<SessionEvents> implements FrameTransport {
  readonly resume: { epoch: number; committed_seq: number }[];
  readonly heartbeatIntervalMs: number;
  private readonly inFlight = new Map<number, InFlight>();
  private inFlightBytes = 0;
  private closedReason: string | undefined;
  private retryAfterMs: number | undefined;
  private lastReceived = Date.now();
  private readonly heartbeat: NodeJS.Timeout;
  private heartbeatBody: () => shadowvm.v1.IHeartbeat = () => ({});

  private constructor(
    private readonly ws: WebSocket,
    private readonly options: SessionOptions,
    private readonly logger: Logger,
    result: shadowvm.v1.IAuthResult,
  ) {
    super();
    this.resume = (result.resume ?? []).map((r) => ({
      epoch: r.epoch ?? 0,
      committed_seq: r.committed_seq ?? 0,
    }));
    this.heartbeatIntervalMs = result.heartbeat_interval_ms || 5000;
    ws.on("message", (data: Buffer) => this.onMessage(data));
    ws.on("close", (code, reason) => {
      if (code === 1009 && this.inFlight.size > 0) {
        logger.error(
          { max_frame_bytes: options.maxFrameBytes },
          "the collector refused a frame as too large without reading it: its ingest.max_frame_bytes is below this agent's collector.max_frame_bytes",
        );
      }
      this.finish(`connection closed (${code}${reason.length ? ` ${reason}` : ""})`);
    });
    ws.on("error", (err) => this.finish(`connection error: ${err.message}`));
    this.heartbeat = setInterval(() => this.tick(), this.heartbeatIntervalMs);
    this.heartbeat.unref();
  }

  /** Connects and authenticates; throws SessionError. */
  static async connect(options: SessionOptions): Promise<CollectorSession> {
    const logger = options.logger ?? silentLogger();
    const url = options.url;
    if (!/^wss:\/\//i.test(url) && !(options.allowInsecure && /^ws:\/\//i.test(url))) {
      throw new SessionError(
        "insecure",
        `refusing ${url}: the collector URL must be wss:// (the enrollment token and secret must not cross in clear text)`,
        false,
      );
    }
    const ws = new WebSocket(url, {
      ...(options.ca ? { ca: options.ca } : {}),
      maxPayload: options.maxFrameBytes,
      perMessageDeflate: false,
      handshakeTimeout: options.handshakeTimeoutMs,
    });
    const frames = new FrameQueue(ws, options.maxFrameBytes);
    const deadline = Date.now() + options.handshakeTimeoutMs;
    try {
      await frames.opened(deadline);
      const result = await handshake(ws, frames, options, deadline, logger);
      frames.detach();
      return new CollectorSession(ws, options, logger, result);
    } catch (err) {
      frames.detach();
      ws.removeAllListeners();
      ws.on("error", () => {});
      ws.terminate();
      if (err instanceof SessionError) throw err;
      throw new SessionError(
        "unreachable",
        `cannot reach the collector at ${url}: ${(err as Error).message}`,
        true,
        undefined,
        {
          cause: err,
        },
      );
    }
  }

  get isOpen(): boolean {
    return this.closedReason === undefined;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  get pendingBytes(): number {
    return this.inFlightBytes;
  }

  /** What the agent's heartbeats report (its spool backlog). */
  setHeartbeatBody(body: () => shadowvm.v1.IHeartbeat): void {
    this.heartbeatBody = body;
  }

  /** Sends one spooled frame; resolves when it is acknowledged, refused, or can no longer be. */
  send(record: SpoolRecord, timeoutMs: number): Promise<SendResult> {
    if (this.closedReason !== undefined) {
      return Promise.resolve(this.retryable(this.closedReason));
    }
    return new Promise<SendResult>((resolve) => {
      const timer = setTimeout(() => {
        // An unacknowledged frame means the connection (or the collector) is stuck: start over.
        this.close(`no acknowledgement for frame ${record.seq} within ${timeoutMs} ms`);
      }, timeoutMs);
      timer.unref();
      this.inFlight.set(record.seq, { resolve, timer, bytes: record.frame.byteLength });
      this.inFlightBytes += record.frame.byteLength;
      this.ws.send(record.frame, { binary: true });
    });
  }

  private settle(seq: number, result: SendResult): boolean {
    const f = this.inFlight.get(seq);
    if (!f) return false;
    this.inFlight.delete(seq);
    this.inFlightBytes -= f.bytes;
    clearTimeout(f.timer);
    f.resolve(result);
    return true;
  }

  private retryable(reason: string): SendResult {
    return this.retryAfterMs !== undefined
      ? { status: "retryable", reason, retryInMillis: this.retryAfterMs }
      : { status: "retryable", reason };
  }

  private onMessage(data: Buffer): void {
    this.lastReceived = Date.now();
    let e: Envelope;
    try {
      e = decodeFrame(data, { maxFrameBytes: this.options.maxFrameBytes });
    } catch (err) {
      this.close(`undecodable frame from the collector: ${(err as Error).message}`);
      return;
    }
    switch (e.body) {
      case "ack": {
        const ranges = (e.ack?.ranges ?? []).map((r) => ({
          epoch: r.epoch ?? 0,
          first_seq: r.first_seq ?? 0,
          last_seq: r.last_seq ?? 0,
        }));
        for (const r of ranges) {
          if (r.last_seq - r.first_seq < this.inFlight.size) {
            for (let seq = r.first_seq; seq <= r.last_seq; seq++) this.settle(seq, { status: "success" });
          } else {
            for (const seq of [...this.inFlight.keys()]) {
              if (seq >= r.first_seq && seq <= r.last_seq) this.settle(seq, { status: "success" });
            }
          }
        }
        this.emit("ack", ranges);
        return;
      }
      case "error": {
        const err = e.error!;
        const codeName = ErrorCode[err.code ?? 0] ?? String(err.code);
        if (err.retry_after_ms) this.retryAfterMs = err.retry_after_ms;
        if (err.ref_seq && FATAL_FOR_FRAME.has(err.code ?? 0)) {
          this.settle(err.ref_seq, { status: "failure", reason: `${codeName}: ${err.message}` });
        }
        this.logger.warn(
          { code: codeName, message: err.message, closes: err.closes },
          "collector reported an error",
        );
        if (err.closes) this.close(`collector closed the connection: ${codeName}: ${err.message}`);
        return;
      }
      case "heartbeat":
        return;
      default:
        this.logger.warn({ body: e.body }, "unexpected frame from the collector; ignored");
    }
  }

  private tick(): void {
    if (Date.now() - this.lastReceived > 3 * this.heartbeatIntervalMs) {
      this.close(`collector silent for ${Date.now() - this.lastReceived} ms (3 heartbeat intervals)`);
      return;
    }
    this.sendControl({ heartbeat: this.heartbeatBody() });
  }

  private sendControl(init: Omit<EnvelopeInit, "agent_id" | "epoch" | "seq" | "sent_at_ms">): void {
    if (this.closedReason !== undefined || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(control(this.options.agentId, init));
  }

  private finish(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    clearInterval(this.heartbeat);
    for (const seq of [...this.inFlight.keys()]) this.settle(seq, this.retryable(reason));
    this.emit("close", reason);
  }

  /** Closes the connection; in-flight sends end as retryable. */
  close(reason = "closed by the agent"): void {
    this.finish(reason);
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(1000);
      setTimeout(() => this.ws.terminate(), 2000).unref();
    }
  }

  /** The reason the session ended, if it did. */
  get endReason(): string | undefined {
    return this.closedReason;
  }
}

function control(
  agentId: string,
  init: Omit<EnvelopeInit, "agent_id" | "epoch" | "seq" | "sent_at_ms">,
): Uint8Array {
  return encodeFrame({ agent_id: agentId, epoch: 0, seq: 0, sent_at_ms: Date.now(), ...init });
}

/** Frames of the handshake, awaited one at a time with the handshake's deadline. */
class FrameQueue {
  private readonly frames: Envelope[] = [];
  private failure: Error | undefined;
  private waiter: (() => void) | undefined;
  private readonly onMessage = (data: Buffer) => {
    try {
      this.frames.push(decodeFrame(data, { maxFrameBytes: this.maxFrameBytes }));
    } catch (err) {
      this.failure ??= err as Error;
    }
    this.waiter?.();
  };
  private readonly onClose = (code: number, reason: Buffer) => {
    this.failure ??= new Error(
      `the collector closed the connection (${code}${reason.length ? ` ${reason}` : ""})`,
    );
    this.waiter?.();
  };
  private readonly onError = (err: Error) => {
    this.failure ??= err;
    this.waiter?.();
  };
  private readonly onOpen = () => this.waiter?.();

  constructor(
    private readonly ws: WebSocket,
    private readonly maxFrameBytes: number,
  ) {
    ws.on("message", this.onMessage);
    ws.on("close", this.onClose);
    ws.on("error", this.onError);
    ws.on("open", this.onOpen);
  }

  private wait(deadline: number, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new SessionError("handshake_timeout", `no ${what} from the collector in time`, true)),
        Math.max(0, deadline - Date.now()),
      );
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve();
      };
    });
  }

  async opened(deadline: number): Promise<void> {
    while (this.ws.readyState === WebSocket.CONNECTING && !this.failure)
      await this.wait(deadline, "WebSocket open");
    if (this.failure) throw this.failure;
  }

  async next(deadline: number, what: string): Promise<Envelope> {
    for (;;) {
      const f = this.frames.shift();
      if (f) return f;
      if (this.failure) throw this.failure;
      await this.wait(deadline, what);
    }
  }

  detach(): void {
    this.ws.off("message", this.onMessage);
    this.ws.off("close", this.onClose);
    this.ws.off("error", this.onError);
    this.ws.off("open", this.onOpen);
  }
}

/** Turns an Error frame received during the handshake into a SessionError. */
function handshakeError(e: Envelope, step: string): SessionError {
  const err = e.error;
  if (!err) return new SessionError("protocol", `expected ${step}, got ${e.body}`, true);
  const name = ErrorCode[err.code ?? 0] ?? String(err.code);
  const retryAfter = err.retry_after_ms || undefined;
  switch (err.code) {
    case ErrorCode.ERROR_CODE_UNAUTHENTICATED:
      return new SessionError(
        "unauthenticated",
        `collector refused authentication: ${err.message}`,
        true,
        retryAfter,
      );
    case ErrorCode.ERROR_CODE_ENROLLMENT_REJECTED:
      return new SessionError(
        "enrollment_rejected",
        `collector refused enrollment: ${err.message}`,
        true,
        retryAfter,
      );
    case ErrorCode.ERROR_CODE_UNSUPPORTED_PROTOCOL:
      return new SessionError("unsupported_protocol", `collector: ${err.message}`, false);
    default:
      return new SessionError(
        name.toLowerCase(),
        `collector error during ${step}: ${name}: ${err.message}`,
        true,
        retryAfter,
      );
  }
}

async function handshake(
  ws: WebSocket,
  frames: FrameQueue,
  o: SessionOptions,
  deadline: number,
  logger: Logger,
): Promise<shadowvm.v1.IAuthResult> {
  const clientNonce = newNonce();
  ws.send(
    control(o.agentId, {
      hello: {
        agent_id: o.agentId,
        agent_version: SHADOWVM_VERSION,
        hostname: o.hostname,
        protocol_version: PROTOCOL_VERSION,
        capabilities: o.capabilities ?? ["telemetry"],
        client_nonce: clientNonce,
      },
    }),
  );
  const challengeFrame = await frames.next(deadline, "auth_challenge");
  const challenge = challengeFrame.auth_challenge;
  if (!challenge) throw handshakeError(challengeFrame, "auth_challenge");
  const serverNonce = challenge.server_nonce ?? new Uint8Array(0);
  let credentials = o.credentials.load(o.agentId);
  if (credentials && !challenge.enrolled) {
    logger.warn(
      { credentials_file: o.credentials.path },
      "the collector does not know this agent's secret (revoked, or a new collector); enrolling again if a token is configured",
    );
  }
  if (!credentials && challenge.enrolled) {
    throw new SessionError(
      "secret_lost",
      `the collector has agent ${o.agentId} enrolled but this agent has no secret (${o.credentials.path} missing); an operator must run "shadowvm-collector agents revoke ${o.agentId}" and give this agent an enrollment token`,
      true,
    );
  }
  if (!credentials || !challenge.enrolled) {
    const token = o.enrollmentToken?.();
    if (!token) {
      throw new SessionError(
        "not_enrolled",
        `agent ${o.agentId} is not enrolled and no enrollment token is configured (collector.enrollment_token or collector.enrollment_token_file)`,
        true,
      );
    }
    ws.send(control(o.agentId, { enroll_request: { enrollment_token: token, hostname: o.hostname } }));
    const enrolled = await frames.next(deadline, "enroll_result");
    if (!enrolled.enroll_result) throw handshakeError(enrolled, "enroll_result");
    credentials = {
      agent_id: o.agentId,
      secret: enrolled.enroll_result.agent_secret ?? new Uint8Array(0),
      enrolled_at_ms: Date.now(),
      collector_url: o.url,
    };
    o.credentials.save(credentials);
    logger.info({ credentials_file: o.credentials.path }, "enrolled with the collector; secret stored");
  }
  const secret = credentials.secret;
  ws.send(
    control(o.agentId, {
      auth_response: { proof: agentProof(secret, o.agentId, serverNonce, clientNonce) },
    }),
  );
  const resultFrame = await frames.next(deadline, "auth_result");
  const result = resultFrame.auth_result;
  if (!result) throw handshakeError(resultFrame, "auth_result");
  const expected = collectorProof(secret, o.agentId, clientNonce, serverNonce);
  if (!result.ok || !proofMatches(expected, result.server_proof)) {
    throw new SessionError(
      "impostor",
      "the collector's proof does not match this agent's secret: it is not the collector this agent enrolled with",
      true,
    );
  }
  return result;
}
