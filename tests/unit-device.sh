#!/usr/bin/env bash
# Unit tests of the code that runs on a device (modules, module_utils, the boot-commit checker) on the Python of
# every supported JetPack release: 3.8 (L4T R35), 3.10 (R36), 3.12 (R38). Each interpreter gets its own venv in
# .cache/device-py/<version> with tests/requirements-device.txt; ansible-core's module_utils (target code, 3.8+)
# come from .venv, as ansible-core ships them to a device inside each module's payload.
# Interpreters: $EDGESLIM_PYTHON_3_8 (etc.), else pyenv's ~/.pyenv/versions/3.8.*, else python3.8 on PATH.
# Usage: tests/unit-device.sh [3.8 3.10 3.12] [-- pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
versions=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do versions+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#versions[@]} -gt 0 ] || versions=(3.8 3.10 3.12)
tests=(tests/unit/plugins/modules tests/unit/plugins/module_utils tests/unit/roles/test_boot_commit_checker.py
  tests/unit/roles/test_boot_commit_management.py tests/unit/roles/test_boot_commit_trial.py tests/unit/faults)

find_python() {  # $1 = 3.8 -> path of an interpreter of that version, or nothing
  local v=$1 var="EDGESLIM_PYTHON_${1//./_}" cand
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v"; do
    [ -x "$cand" ] && { echo "$cand"; return; }
  done
  command -v "python$v" || true
}

ansible_pkg=$("$root/.venv/bin/python" -c 'import ansible, os; print(os.path.dirname(ansible.__file__))')
shim=$root/.cache/device-py/ansible-core
mkdir -p "$shim" && ln -sfn "$ansible_pkg" "$shim/ansible"

failed=()
for v in "${versions[@]}"; do
  py=$(find_python "$v")
  if [ -z "$py" ]; then
    echo "unit-device: no Python $v found (set EDGESLIM_PYTHON_${v//./_}, or 'pyenv install $v')" >&2
    exit 2
  fi
  venv=$root/.cache/device-py/$v
  stamp=$venv/.stamp-$(sha256sum tests/requirements-device.txt | cut -c1-12)
  if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements-device.txt 2>&1 \
      | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -c 'import pytest, hypothesis, yaml' || { echo "unit-device: $v venv setup failed" >&2; exit 2; }
    "$venv/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/edgeslim-ansible.pth", "w").write(sys.argv[1] + "\n")' "$shim"
    touch "$stamp"
  fi
  echo "=== device unit tests on $("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" "$@"; then failed+=("$v"); fi
done
[ ${#failed[@]} -eq 0 ] || { echo "unit-device: failed on Python ${failed[*]}"; exit 1; }
