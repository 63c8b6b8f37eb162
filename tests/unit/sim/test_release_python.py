"""Each simulated variant runs its JetPack release's Python, and the fleet inventory points Ansible at it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[2] / "sim"
sys.path.insert(0, str(SIM))
import build_image
import fleet

# L4T major -> the release's Ubuntu python3 (JetPack 5 = 20.04, 6 = 22.04, 7 = 24.04).
RELEASE_PYTHON = {"35": "3.8", "36": "3.10", "38": "3.12"}


@pytest.mark.parametrize("name", sorted(fleet.variants()))
def test_variant_declares_its_release_python(name):
    v = fleet.variants()[name]
    major = v["nv_tegra_release"].split()[1].lstrip("R")
    assert v["python"] == RELEASE_PYTHON[major]
    assert v["python"] in [build_image.minor(p) for p in build_image.jetpack_pythons()]
    assert fleet.python_interpreter(v) == f"/usr/bin/python{RELEASE_PYTHON[major]}"


def test_every_release_python_is_simulated():
    assert {v["python"] for v in fleet.variants().values()} == set(RELEASE_PYTHON.values())


def test_missing_interpreter_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    missing = build_image.missing_pythons()
    assert len(missing) == len(build_image.jetpack_pythons())
    assert all("pyenv install 3." in line for line in missing)
    have = build_image.jetpack_pythons()[0]
    exe = tmp_path / "versions" / have / "bin" / f"python{build_image.minor(have)}"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert len(build_image.missing_pythons()) == len(missing) - 1


def test_trimmed_copy_keeps_the_runtime():
    names = ["os.py", "json", "test", "idlelib", "tkinter", "ensurepip", "config-3.8-x86_64-linux-gnu",
             "_tkinter.cpython-38-x86_64-linux-gnu.so", "_testcapi.cpython-38-x86_64-linux-gnu.so",
             "_ssl.cpython-38-x86_64-linux-gnu.so", "os.cpython-38.pyc", "os.cpython-38.opt-1.pyc"]  # fmt: skip
    dropped = build_image.prune_python("lib/python3.8", names)
    assert set(names) - dropped == {"os.py", "json", "_ssl.cpython-38-x86_64-linux-gnu.so", "os.cpython-38.pyc"}
