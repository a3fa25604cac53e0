#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: builds the package (the `memwal` binary included,
# which the process tests start) and runs every test. Needs only the Swift toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
swift test --skip-build "$@"
