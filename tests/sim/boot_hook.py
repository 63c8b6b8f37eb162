#!/usr/bin/env python
"""podman OCI hook of the simulated Jetson fleet (stage createRuntime), installed by tests/sim/testbed.sh into
/var/lib/edgeslim-sim and registered in tests/sim/containers.conf's hooks_dir. It only dispatches: the container's
annotation io.edgeslim.sim.boot names the boot stand-in (tests/sim/boot_standin.py) of the checkout that started the
container, which gets the container state on stdin. Several checkouts on one machine each run their own stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ANNOTATION = "io.edgeslim.sim.boot"


def main() -> int:
    raw = sys.stdin.read()
    state = json.loads(raw)
    annotations = state.get("annotations") or {}
    if ANNOTATION not in annotations:  # older runtimes leave the annotations out of the state
        with open(os.path.join(state["bundle"], "config.json")) as handle:
            annotations = json.load(handle).get("annotations") or {}
    script = annotations.get(ANNOTATION, "")
    if not (os.path.isabs(script) and os.path.basename(script) == "boot_standin.py" and os.path.isfile(script)):
        print(f"edgeslim boot hook: {ANNOTATION}={script!r} is not a boot_standin.py of a checkout", file=sys.stderr)
        return 1
    return subprocess.run([sys.executable, script, "hook"], input=raw, text=True, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
