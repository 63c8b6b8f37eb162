#!/usr/bin/env bash
# Build (or reuse) the simulated-Jetson image; prints its tag. See tests/sim/build_image.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/sim/containers.conf}
exec .venv/bin/python tests/sim/build_image.py "$@"
