#!/usr/bin/env bash
# Static guard: code that runs on a device must run on the oldest supported JetPack Python (3.8, L4T R35).
# vermin finds stdlib and syntax features newer than that (datetime.UTC, zip(strict=), str.removeprefix, match, ...);
# annotations are not evaluated at run time (`from __future__ import annotations`), so typing generics pass.
# Usage: tests/device-compat.sh [paths]   (default: the device code and its unit tests)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- plugins/modules plugins/module_utils roles/boot_commit/files \
  tests/unit/plugins/modules tests/unit/plugins/module_utils tests/unit/roles tests/unit/faults
exec "${VERMIN:-.venv/bin/vermin}" --no-config-file -t=3.8- --violations --no-tips --backport typing -q "$@"
