#!/usr/bin/env bash
# Benchmark: wall time to bring up N simulated Jetsons until each answers ssh + sudo (scale 0.1), then remove them.
# Usage: bash bench/fleet_up.sh [N ...]   (default: 20 50). Prints one line per N.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/sim/containers.conf}
for n in "${@:-20 50}"; do
  for m in $n; do
    inv=$(mktemp)
    t0=$(date +%s.%N)
    flock /tmp/edgeslim-podman.lock python tests/sim/fleet.py up --fleet bench --count "$m" --prefix bench \
      --inventory "$inv" >/dev/null
    t1=$(date +%s.%N)
    rss=$(free -m | awk '/^Mem:/{print $3}')
    python tests/sim/fleet.py down --fleet bench --inventory "$inv" >/dev/null
    rm -f "$inv"
    printf 'fleet up: %3d hosts ready in %6.1f s (host memory used with the fleet up: %s MiB)\n' "$m" \
      "$(echo "$t1 - $t0" | bc)" "$rss"
  done
done
