#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: builds the package (the `memwal` binary included,
# which the process tests start) and runs every test. Needs only the Swift toolchain (and Debian's
# openssl for the TLS tests; .ci/run installs it).
#
# With arguments, they go to `swift test` as they are. Without, two phases: every other suite in
# parallel; then, one test at a time, the suites whose TLS handshakes, heartbeats and timeouts need
# a free thread of Swift's cooperative pool (two threads on two cores) while other tests may block
# one with synchronous process and socket I/O or hold one with a crash sweep: several replicating
# nodes in one process or as child processes, the TLS suites, the controller against fake nodes,
# the cluster client against fake nodes with deadlines, and the 20-second load test, whose clients
# and memory sampler share that pool and stall behind a crash sweep (CI saw 190 operations and 5 of
# 20 samples in 20 s when it ran beside them), and the suites whose timers (a watermark's timeout,
# the idle applier's wake-up for a time-triggered checkpoint) must fire within their deadlines.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
if [ "$#" -gt 0 ]; then
  exec swift test --skip-build "$@"
fi
timing='ReplicationTests|ClusterProcessTests|PeerTLSTests|APITLSTests|NodeControlTests|ControllerService|ControllerCommandTests|FailoverProcessTests|ClusterScriptTests|MemWALClientTests.FailoverTests|APIFuzzTests|ChaosTests|LoadTests|LSNWatermarkTests|CheckpointFailureTests|FollowerEngineTests'
swift test --skip-build --skip "$timing"
swift test --skip-build --no-parallel --filter "$timing"
