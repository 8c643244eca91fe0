// Where authenticated connections' frames are decoded: a worker thread (default), so that decoding
// and validating thousands of samples per frame, and the garbage it leaves, run beside the main
// thread's DuckDB appends instead of between them; or inline (ingest.decode_workers: 0). Answers
// come back in request order, which keeps every connection's frames in order.
import { Worker } from "node:worker_threads";
import { createError, type Logger } from "@shadowvm/shared";
import { type Decoded, decodeMessage } from "./ingest-frame.js";

export interface FrameDecoder {
  decode(data: Uint8Array): Promise<Decoded>;
  close(): Promise<void>;
}

export class InlineDecoder implements FrameDecoder {
  constructor(private readonly maxFrameBytes: number) {}
  decode(data: Uint8Array): Promise<Decoded> {
    return Promise.resolve(decodeMessage(data, { maxFrameBytes: this.maxFrameBytes }));
  }
  async close(): Promise<void> {}
}

interface Pending {
  resolve: (d: Decoded) => void;
  reject: (err: Error) => void;
}

export class WorkerDecoder implements FrameDecoder {
  private worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly logger: Logger,
  ) {
    this.worker = this.spawn();
  }

  private spawn(): Worker {
    const worker = new Worker(new URL("./decode-worker.js", import.meta.url), {
      workerData: { maxFrameBytes: this.maxFrameBytes },
    });
    worker.on("message", (msg: { id: number; decoded: Decoded }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (this.pending.size === 0) this.worker.unref();
      p.resolve(msg.decoded);
    });
    worker.on("error", (err) => this.failAll(err));
    worker.on("exit", (code) => {
      if (this.closed) return;
      this.failAll(new Error(`decode worker exited with code ${code}`));
      this.logger.error({ code }, "ingest: decode worker exited; starting a new one");
      this.worker = this.spawn();
    });
    worker.unref();
    return worker;
  }

  private failAll(err: Error): void {
    const error = createError("ingest", "decoder_failed", `frame decoder failed: ${err.message}`, {
      cause: err,
    });
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    this.worker?.unref();
  }

  decode(data: Uint8Array): Promise<Decoded> {
    if (this.closed) return Promise.reject(createError("ingest", "closed", "the frame decoder is closed"));
    const id = this.nextId++;
    // Transfer the bytes when the message owns its buffer; copy a slice of a shared one.
    const own =
      data.byteOffset === 0 &&
      data.buffer.byteLength === data.byteLength &&
      data.buffer instanceof ArrayBuffer;
    const bytes = own ? data : new Uint8Array(data);
    return new Promise<Decoded>((resolve, reject) => {
      // An idle worker does not keep the process alive; one with work does.
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, data: bytes }, [bytes.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failAll(new Error("closing"));
    await this.worker.terminate();
  }
}
