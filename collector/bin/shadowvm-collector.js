#!/usr/bin/env node
// Compiled entry point: systemd runs this with plain node, no TypeScript loader. SIGTERM and
// SIGINT stop `serve` gracefully; a second signal exits at once.
import { main } from "../dist/cli/main.js";

const controller = new AbortController();
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  });
}
process.exitCode = await main(process.argv.slice(2), undefined, process.env, controller.signal);
