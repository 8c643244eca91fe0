// A minimal, unauthenticated WebSocket client speaking raw frames: it sends whatever bytes it is
// given and reads what comes back, frame by frame. The security and fault tests use it to send
// what a real agent never would (garbage, truncated and oversized frames, other agents' ids); it is
// also handy to poke a collector by hand. Real agents use CollectorSession.
import { decodeFrame, type Envelope } from "@shadowvm/shared";
import WebSocket from "ws";

export type WireEvent =
  | { type: "frame"; envelope: Envelope }
  | { type: "undecodable"; error: string }
  | { type: "closed"; code: number; reason: string };

export class WireClient {
  private readonly events: WireEvent[] = [];
  private waiter: (() => void) | undefined;
  private closedEvent: WireEvent | undefined;

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data: Buffer) => {
      try {
        this.push({ type: "frame", envelope: decodeFrame(data) });
      } catch (err) {
        this.push({ type: "undecodable", error: (err as Error).message });
      }
    });
    ws.on("close", (code, reason) => {
      this.closedEvent = { type: "closed", code, reason: reason.toString() };
      this.push(this.closedEvent);
    });
    ws.on("error", () => {}); // the close event follows
  }

  private push(e: WireEvent): void {
    this.events.push(e);
    this.waiter?.();
  }

  /** Opens a connection; rejects when the WebSocket cannot be opened (e.g. TLS refused). */
  static connect(
    url: string,
    options: { ca?: Buffer; timeoutMs?: number; maxPayload?: number } = {},
  ): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        ...(options.ca ? { ca: options.ca } : {}),
        handshakeTimeout: options.timeoutMs ?? 5000,
        perMessageDeflate: false,
        maxPayload: options.maxPayload ?? 64 * 1024 * 1024,
      });
      ws.once("open", () => resolve(new WireClient(ws)));
      ws.once("error", (err) => reject(err));
      ws.once("close", (code) => reject(new Error(`closed before opening (${code})`)));
    });
  }

  /** Sends bytes as one binary message (or a string as a text message). */
  send(data: Uint8Array | string): void {
    this.ws.send(data, { binary: typeof data !== "string" });
  }

  /** The next event, or throws when none arrives in time. */
  async next(timeoutMs = 5000): Promise<WireEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.shift();
      if (e) return e;
      if (this.closedEvent && this.events.length === 0) return this.closedEvent;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame or close within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  /** Skips frames (e.g. heartbeats) until one with `body`, or the close. */
  async expect(body: string, timeoutMs = 5000): Promise<WireEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = await this.next(Math.max(1, deadline - Date.now()));
      if (e.type !== "frame" || e.envelope.body === body || e.envelope.body === "error") return e;
    }
  }

  /** Waits for the close, returning its code and reason. */
  async closed(timeoutMs = 5000): Promise<{ code: number; reason: string; error?: Envelope["error"] }> {
    const deadline = Date.now() + timeoutMs;
    let error: Envelope["error"];
    for (;;) {
      const e = await this.next(Math.max(1, deadline - Date.now()));
      if (e.type === "frame" && e.envelope.body === "error") error = e.envelope.error;
      if (e.type === "closed") return { code: e.code, reason: e.reason, error };
    }
  }

  close(): void {
    this.ws.terminate();
  }
}
