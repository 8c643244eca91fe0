#!/usr/bin/env bash
# The README's test command: set everything up, then run the linter, the build and every test.
# The last line printed is `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node scripts/run-tests.mjs "$@"
