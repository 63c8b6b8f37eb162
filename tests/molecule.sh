#!/usr/bin/env bash
# Run every Molecule scenario under extensions/molecule/ serially (2 cores: never two at once), each under the
# shared podman lock, and fail if any failed. Usage: tests/molecule.sh [scenario ...]
# Run from the collection root: Molecule finds the scenarios' base, extensions/molecule/config.yml, from there.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/sim/containers.conf}
export PATH=$PWD/.venv/bin:$PATH
bash tests/sim/build-image.sh >/dev/null || { echo "molecule: image build failed"; exit 1; }
eval "$(python tests/sim/fleet.py env)"
if [ $# -gt 0 ]; then scenarios=("$@"); else
  mapfile -t scenarios < <(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' \
    | xargs -n1 basename | grep -vx shared | sort)
fi
failed=() ; summary=()
for s in "${scenarios[@]}"; do
  echo "=== molecule scenario $s"
  t0=$(date +%s)
  if flock /tmp/edgeslim-podman.lock molecule test -s "$s"; then r=ok; else r=FAILED; failed+=("$s"); fi
  summary+=("$(printf '%-22s %-6s %4ss' "$s" "$r" $(( $(date +%s) - t0 )))")
done
printf '%s\n' "=== molecule summary" "${summary[@]}"
[ ${#failed[@]} -eq 0 ] || { echo "molecule: failed: ${failed[*]}"; exit 1; }
