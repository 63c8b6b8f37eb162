"""The device-code guard (tests/device-compat.sh) passes on the tree and refuses constructs newer than Python 3.8."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GUARD = ROOT / "tests" / "device-compat.sh"
VERMIN = str(Path(sys.executable).with_name("vermin"))


def guard(*paths: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VERMIN": VERMIN}
    return subprocess.run(["bash", str(GUARD), *paths], capture_output=True, text=True, env=env, check=False)


def test_device_code_passes():
    result = guard()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("source", "needs"),
    [
        ("import datetime\nnow = datetime.datetime.now(datetime.UTC)\n", "3.11"),
        ("pairs = list(zip([1], [2], strict=True))\n", "3.10"),
        ("name = 'a.service'.removesuffix('.service')\n", "3.9"),
        ("def f(x):\n    match x:\n        case 1:\n            return 1\n", "3.10"),
        ("import functools\n\n@functools.cache\ndef f():\n    return 1\n", "3.9"),
    ],
)
def test_newer_construct_refused(tmp_path, source, needs):
    bad = tmp_path / "module.py"
    bad.write_text("from __future__ import annotations\n\n" + source)
    result = guard(str(bad))
    assert result.returncode != 0
    assert needs in result.stdout
