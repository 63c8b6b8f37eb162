#!/usr/bin/env bash
# Run every Molecule scenario under extensions/molecule/ serially (2 cores: never two at once), each under the
# shared podman lock, and fail if any failed. Usage: tests/molecule.sh [scenario ...]
# Run from the collection root: Molecule finds the scenarios' base, extensions/molecule/config.yml, from there.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/sim/containers.conf}
# The testbed's Ansible configuration for the runs scenarios start themselves (Molecule's own runs use its own).
export ANSIBLE_CONFIG=$PWD/tests/ansible.cfg
export PATH=$PWD/.venv/bin:$PATH
bash tests/sim/build-image.sh >/dev/null || { echo "molecule: image build failed"; exit 1; }
eval "$(python tests/sim/fleet.py env)"
if [ $# -gt 0 ]; then scenarios=("$@"); else
  mapfile -t scenarios < <(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' \
    | xargs -n1 basename | grep -vx shared | sort)
fi
# The pull scenario's device (the simulated Jetson plus git and ansible-core), built or found only when it runs.
if printf '%s\n' "${scenarios[@]}" | grep -qx pull; then
  EDGESLIM_SIM_PULL_IMAGE=$(python tests/sim/build_pull_image.py | tail -n 1) || { echo "molecule: pull image build failed"; exit 1; }
  export EDGESLIM_SIM_PULL_IMAGE
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
