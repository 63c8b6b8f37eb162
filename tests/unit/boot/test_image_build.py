"""The emulated-boot image builder's rootfs stage (tests/boot/image.py): mmdebstrap's phases become timed steps, a
failure shows mmdebstrap's own output, and the rootfs tarball's cache key follows the code that builds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "boot"))
import image

# What mmdebstrap prints at its default verbosity, with the dpkg output and the hooks' markers in between.
FAKE_RUN = """
echo 'I: finding correct signed-by value...'
echo 'I: installing essential packages...'; sleep 1.1
echo 'Setting up dpkg ...'
echo "I: running --customize-hook in shell: sh -c '/venv/bin/python image.py --mmdebstrap-hook customize' exec /r"
echo 'I: edgeslim: update-initramfs (once)'; sleep 1.1
echo 'I: removing tempdir /var/tmp/build-x/mmdebstrap.Ab12...'; sleep 1.1
echo 'I: success in 3.3 seconds'
"""


@pytest.fixture(autouse=True)
def steps(monkeypatch):
    monkeypatch.setattr(image, "STEPS", [])
    return image.STEPS


def test_phases_that_take_time_become_steps_without_paths(steps, capsys):
    image.run_mmdebstrap(["sh", "-c", FAKE_RUN], dict(os.environ))
    assert [s["step"] for s in steps] == [
        "rootfs: installing essential packages",
        "rootfs: edgeslim: update-initramfs (once)",
        "rootfs: removing tempdir",
    ]
    assert all(1.0 <= s["seconds"] < 10 for s in steps)
    out = capsys.readouterr().out
    assert "boot-image: rootfs: installing essential packages: " in out and "Setting up dpkg" not in out


def test_failure_raises_and_prints_mmdebstrap_output(steps, capsys):
    with pytest.raises(subprocess.CalledProcessError) as err:
        image.run_mmdebstrap(["sh", "-c", "echo 'dpkg: error processing package x'; echo 'E: broke'; exit 3"],
                             dict(os.environ))  # fmt: skip
    assert err.value.returncode == 3
    captured = capsys.readouterr()
    assert "dpkg: error processing package x" in captured.err and "boot-image: mmdebstrap: E: broke" in captured.out


def test_rootfs_key_follows_packages_options_and_hook_code(monkeypatch):
    key = image.rootfs_key()
    assert image.rootfs_key() == key
    for name, value in (("PACKAGES", [*image.PACKAGES, "less"]), ("MMDEBSTRAP_OPTS", image.MMDEBSTRAP_OPTS[1:])):
        with monkeypatch.context() as patch:
            patch.setattr(image, name, value)
            assert image.rootfs_key() != key, name

    def hook_customize(root: Path) -> None:
        """A changed hook: the cached rootfs was built by other code."""

    monkeypatch.setattr(image, "hook_customize", hook_customize)
    assert image.rootfs_key() != key


def test_hooks_call_back_into_this_file_with_this_interpreter():
    argv = image.mmdebstrap_argv(Path("/cache/rootfs.tar.part"))
    assert argv[-3:] == [image.SUITE, "/cache/rootfs.tar.part", image.MIRROR]
    assert "--include=" + ",".join(image.PACKAGES) in argv and "--format=tar" in argv
    hooks = [a for a in argv if a.startswith(("--essential-hook=", "--customize-hook="))]
    assert hooks == [
        f'--essential-hook={sys.executable} {Path(image.__file__).resolve()} --mmdebstrap-hook essential "$1"',
        f'--customize-hook={sys.executable} {Path(image.__file__).resolve()} --mmdebstrap-hook customize "$1"',
    ]
