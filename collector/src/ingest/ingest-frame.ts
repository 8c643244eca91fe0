// A decoded agent data frame in the form the store writes: the stream position and, for telemetry,
// the samples as columns (typed arrays), for anything else the body as a plain object. The same
// conversion runs inline or in the decode worker (decode-pool.ts); typed arrays cross the thread
// boundary without a copy, where thousands of decoded Sample objects would be cloned one by one.
import {
  DATA_BODY_KINDS,
  decodeFrame,
  type Envelope,
  type EnvelopeBodyKind,
  type FrameOptions,
  WireError,
  type WireErrorCode,
} from "@shadowvm/shared";

/** The counter columns of the samples table, in table order. */
export const COUNTERS = [
  "memory_used_bytes",
  "memory_available_bytes",
  "memory_balloon_bytes",
  "disk_read_bytes",
  "disk_write_bytes",
  "disk_read_ops",
  "disk_write_ops",
  "net_rx_bytes",
  "net_tx_bytes",
  "net_rx_packets",
  "net_tx_packets",
  "net_rx_drops",
  "net_tx_drops",
] as const;

export interface SampleColumns {
  n: number;
  scope: Uint8Array;
  /** null for host samples. */
  vmUuid: (string | null)[];
  /** Integers (int64 on the wire, safe integers after validation). */
  ts: Float64Array;
  cpu: Float64Array;
  /** COUNTERS.length * n values, counter-major: counter c of row r at c * n + r. */
  counters: Float64Array;
  /** Sample.extra as JSON, null when empty. */
  extra: (string | null)[];
}

export interface IngestFrame {
  agentId: string;
  epoch: number;
  seq: number;
  sentAtMs: number;
  kind: EnvelopeBodyKind;
  /** Rows it carries: samples for telemetry, 1 otherwise. */
  records: number;
  /** Encoded size on the wire. */
  bytes: number;
  samples?: SampleColumns;
  /** Any other body, as a plain object with 64-bit integers as numbers and unset fields absent. */
  body?: Record<string, unknown>;
}

type ToObject = (m: unknown, o: object) => Record<string, unknown>;
const PLAIN = { longs: Number, json: false } as const;

/** Converts a decoded envelope carrying a data body. */
export function toIngestFrame(e: Envelope, bytes: number): IngestFrame {
  const kind = e.body!;
  const frame: IngestFrame = {
    agentId: e.agent_id,
    epoch: e.epoch,
    seq: e.seq,
    sentAtMs: e.sent_at_ms,
    kind,
    records: 1,
    bytes,
  };
  if (kind === "telemetry_batch") {
    const samples = e.telemetry_batch?.samples ?? [];
    const n = samples.length;
    const cols: SampleColumns = {
      n,
      scope: new Uint8Array(n),
      vmUuid: new Array(n),
      ts: new Float64Array(n),
      cpu: new Float64Array(n),
      counters: new Float64Array(COUNTERS.length * n),
      extra: new Array(n),
    };
    for (let r = 0; r < n; r++) {
      const s = samples[r]!;
      cols.scope[r] = s.scope ?? 0;
      cols.vmUuid[r] = s.vm_uuid ? s.vm_uuid : null;
      cols.ts[r] = s.ts_ms ?? 0;
      cols.cpu[r] = s.cpu_usage ?? 0;
      for (let c = 0; c < COUNTERS.length; c++)
        cols.counters[c * n + r] = (s[COUNTERS[c]!] as number | null) ?? 0;
      const extra = s.extra;
      cols.extra[r] = extra && Object.keys(extra).length > 0 ? JSON.stringify(extra) : null;
    }
    frame.samples = cols;
    frame.records = n;
  } else {
    const msg = (e as unknown as Record<string, unknown>)[kind] as { constructor: { toObject?: ToObject } };
    const toObject = msg.constructor.toObject;
    frame.body = toObject ? toObject(msg, PLAIN) : (msg as unknown as Record<string, unknown>);
  }
  return frame;
}

/** Buffers that can be transferred (not copied) to another thread. */
export function transferables(frame: IngestFrame): ArrayBuffer[] {
  const s = frame.samples;
  return s ? ([s.scope.buffer, s.ts.buffer, s.cpu.buffer, s.counters.buffer] as ArrayBuffer[]) : [];
}

/** What decoding one received message gives the connection. */
export type Decoded =
  | {
      ok: true;
      agentId: string;
      kind: EnvelopeBodyKind | undefined;
      epoch: number;
      seq: number;
      /** Set for data bodies. */
      frame?: IngestFrame;
      /** Set for an Error body (the agent reporting a problem). */
      error?: Record<string, unknown>;
    }
  | { ok: false; code: WireErrorCode; message: string; ref?: { epoch: number; seq: number } };

/**
 * Reads Envelope.epoch (field 2) and seq (field 3) from the top of a frame that does not decode as
 * a whole: they are varints near the start of every agent frame. Undefined when unreadable.
 */
export function peekStreamPosition(data: Uint8Array): { epoch: number; seq: number } | undefined {
  let pos = 0;
  const varint = (): number | undefined => {
    let value = 0;
    for (let shift = 0; shift < 64 && pos < data.length; shift += 7) {
      const b = data[pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
    }
    return undefined;
  };
  let epoch: number | undefined;
  let seq: number | undefined;
  for (
    let fields = 0;
    fields < 8 && pos < data.length && (epoch === undefined || seq === undefined);
    fields++
  ) {
    const tag = varint();
    if (tag === undefined) return undefined;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      const v = varint();
      if (v === undefined) return undefined;
      if (field === 2) epoch = v;
      if (field === 3) seq = v;
    } else if (wire === 2) {
      const len = varint();
      if (len === undefined || pos + len > data.length) return undefined;
      pos += len;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else return undefined;
  }
  return epoch !== undefined && seq !== undefined && Number.isSafeInteger(seq) && seq > 0
    ? { epoch, seq }
    : undefined;
}

/** Decodes and validates one message of an authenticated connection (inline or in the worker). */
export function decodeMessage(data: Uint8Array, options: FrameOptions): Decoded {
  let e: Envelope;
  try {
    e = decodeFrame(data, options);
  } catch (err) {
    const code = err instanceof WireError ? err.code : "malformed";
    const ref = peekStreamPosition(data);
    return { ok: false, code, message: (err as Error).message, ...(ref ? { ref } : {}) };
  }
  const kind = e.body ?? undefined;
  const out: Decoded = { ok: true, agentId: e.agent_id, kind, epoch: e.epoch, seq: e.seq };
  if (kind && DATA_BODY_KINDS.has(kind)) out.frame = toIngestFrame(e, data.byteLength);
  else if (kind === "error" && e.error) {
    out.error = (e.error.constructor as unknown as { toObject: ToObject }).toObject(e.error, {
      ...PLAIN,
      enums: String,
    });
  }
  return out;
}
