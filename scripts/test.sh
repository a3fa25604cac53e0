#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: builds the package (the `memwal` binary included,
# which the process tests start) and runs every test. Needs only the Swift toolchain (and Debian's
# openssl for the TLS tests; .ci/run installs it).
#
# With arguments, they go to `swift test` as they are. Without, two phases: every suite but the
# multi-node ones, in parallel; then the multi-node suites (several replicating nodes in one
# process or as child processes) on their own, so their heartbeats and timeouts do not compete for
# the two cores with the crash sweeps.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
if [ "$#" -gt 0 ]; then
  exec swift test --skip-build "$@"
fi
multi_node='ReplicationTests|ClusterProcessTests'
swift test --skip-build --skip "$multi_node"
swift test --skip-build --filter "$multi_node"
