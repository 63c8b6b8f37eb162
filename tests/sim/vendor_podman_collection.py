"""Place containers.podman into the venv without Galaxy.

Galaxy is unreachable on our machines, but the PyPI package ``ansible`` bundles containers.podman.
We download that wheel (no dependencies) and extract only ``ansible_collections/containers/podman/``
into the venv's site-packages, where ansible-core finds collections. ansible 12 pairs with core 2.19.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

ANSIBLE_BUNDLE = "ansible>=12,<13"  # the bundle matching ansible-core 2.19
PREFIX = "ansible_collections/containers/podman/"


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    target = site / PREFIX
    if (target / "MANIFEST.json").exists():
        print(f"containers.podman already present in {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, ANSIBLE_BUNDLE],
            check=True,
        )
        wheels = list(Path(tmp).glob("ansible-*.whl"))
        if len(wheels) != 1:
            print(f"expected one ansible wheel, got {wheels}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [m for m in zf.namelist() if m.startswith(PREFIX)]
            if not members:
                print("the ansible wheel has no containers.podman collection", file=sys.stderr)
                return 1
            zf.extractall(site, members)
    print(f"containers.podman extracted to {target} ({len(members)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
