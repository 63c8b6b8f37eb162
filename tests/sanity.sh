#!/usr/bin/env bash
# ansible-test sanity, offline-friendly. ansible-test must run inside .../ansible_collections/<ns>/<name>/ and lists
# files through git, so we stage the checkout's files (tracked + new, minus .gitignore'd) into build/sanity as their
# own git tree. Its per-test venvs bootstrap pip from a host we cannot reach: tests/sanity_get_pip.py stands in.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stage=$root/build/sanity/ansible_collections/edgeslim/jetson
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

pip_version=$(python3 - <<'PY'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
m = re.search(r"PIP_VERSION\s*=\s*'([^']+)'", src.read_text()) if src.exists() else None
print(m.group(1) if m else "24.2")
PY
)
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cmp -s tests/sanity_get_pip.py "$cache" || cp tests/sanity_get_pip.py "$cache"

rm -rf "$stage" && mkdir -p "$stage"
# --ignore-failed-read: a tracked file deleted in the work tree is simply not staged. The collections/ links that let a
# Git checkout run itself (docs/gitops.md) are not collection content (galaxy.yml build_ignore) and not staged.
git ls-files -co --exclude-standard -z | grep -zv -e '^collections/' -e '^playbooks/collections$' |
  tar --null --ignore-failed-read -cf - -T - 2>/dev/null | tar -xf - -C "$stage"
cd "$stage"
git init -q && git add -A && git -c user.email=ci@edgeslim.invalid -c user.name=ci commit -qm sanity
ansible-test sanity --python "$py" --requirements "$@" 2>&1 | grep -vE '^(WARNING: Location|Looking in|Requirement already)'
