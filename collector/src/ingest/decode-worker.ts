// The decode worker (a worker_threads thread): decodes and validates frames of authenticated
// connections and turns telemetry into columns, off the collector's main thread. Started by
// decode-pool.ts; answers every request, in order, with a Decoded value.
import { parentPort, workerData } from "node:worker_threads";
import { decodeMessage, transferables } from "./ingest-frame.js";

const { maxFrameBytes } = workerData as { maxFrameBytes: number };

parentPort!.on("message", (msg: { id: number; data: Uint8Array }) => {
  const decoded = decodeMessage(msg.data, { maxFrameBytes });
  parentPort!.postMessage(
    { id: msg.id, decoded },
    decoded.ok && decoded.frame ? transferables(decoded.frame) : [],
  );
});
