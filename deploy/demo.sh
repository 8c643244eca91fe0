#!/usr/bin/env bash
# The README's main job: set everything up (Debian packages, pnpm, build, demo guest image), then
# run the whole loop on the demo (agent/src/demo/main-job.ts): Alertmanager, the collector, two demo
# VMs (one leaking memory), the agent with a shadow campaign, progress, the risk table, the alerts
# and an HTML report. Options are passed on: --keep, --until-production-fails, --json-summary FILE,
# --help for the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node agent/dist/demo/main-job.js "$@"
