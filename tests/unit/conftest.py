"""Make ``ansible_collections.edgeslim.jetson`` importable from this checkout.

`make venv` links the checkout into ``.collections/ansible_collections/edgeslim/jetson``; putting
``.collections`` on sys.path lets tests import plugins by their real FQCN paths, exactly as Ansible does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK_PARENT = ROOT / ".collections"
LINK = LINK_PARENT / "ansible_collections" / "edgeslim" / "jetson"
if not LINK.exists():
    LINK.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("../../..", LINK)
if str(LINK_PARENT) not in sys.path:
    sys.path.insert(0, str(LINK_PARENT))

FIXTURES = Path(__file__).parent / "fixtures"


def swiotlb_debugfs(tmp_path: Path, **counters: int) -> str:
    """A debugfs ``swiotlb`` directory in the kernel's format ("%llu\\n" per file), e.g. nslabs=2048, used=0."""
    from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb

    path = tmp_path / "swiotlb"
    path.mkdir()
    for key, value in counters.items():
        (path / tlb.COUNTERS[key]).write_text(f"{value}\n")
    return str(path)
