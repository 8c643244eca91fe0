#!/usr/bin/env bash
# The README's main job: set everything up (Debian packages, pnpm, build, demo guest image), then
# run the demo. Options are passed on (e.g. --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node agent/dist/demo/main-job.js "$@"
