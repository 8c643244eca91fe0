// The usocket native module (unix sockets with SCM_RIGHTS descriptor passing, which Node's net
// cannot do), typed for what shadowvm uses of it and loaded lazily so a host without it can still
// use everything but fd passing. The installed module is patched (patches/usocket@1.1.0.patch):
// its descriptors are close-on-exec, and its libuv poll handle outlives a garbage-collected socket.
import { createRequire } from "node:module";
import type { Duplex } from "node:stream";

/** A connected socket: data plus descriptors received with it ("fds"). */
export type USocket = Duplex & {
  fd?: number;
  connect(path: string): void;
  on(event: "fds", cb: (fds: number[]) => void): USocket;
};

export interface UServer {
  fd?: number;
  listen(path: string, cb?: () => void): void;
  close(): void;
  on(event: "connection", cb: (s: USocket) => void): void;
  on(event: "error", cb: (e: Error) => void): void;
  once(event: "listening" | "error", cb: (e?: Error) => void): void;
}

export interface UsocketModule {
  USocket: new () => USocket;
  UServer: new () => UServer;
}

let loaded: { module: UsocketModule | null; error?: unknown } | undefined;

/** The module, or null where it is not installed or failed to build (`usocketLoadError` says why). */
export function loadUsocket(): UsocketModule | null {
  if (loaded === undefined) {
    try {
      loaded = { module: createRequire(import.meta.url)("usocket") as UsocketModule };
    } catch (error) {
      loaded = { module: null, error };
    }
  }
  return loaded.module;
}

/** Why `loadUsocket` returned null (the require's error), for a caller's error message. */
export function usocketLoadError(): unknown {
  loadUsocket();
  return loaded?.error;
}
