#!/usr/bin/env node
// Compiled entry point: systemd runs this with plain node, no TypeScript loader.
import { main } from "../dist/cli/main.js";

process.exitCode = await main(process.argv.slice(2));
