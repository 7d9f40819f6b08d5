#!/usr/bin/env bash
# The full check: setup, type check, lint, format check, tests.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
npm run typecheck
npm run lint
npm run format:check
npm test
