"""Fixtures of the emulated-boot lane (docs/emulated-boot.md): one cached image per recipe, one fresh qcow2 overlay
and one QEMU per test (never two at once: tests run serially), artifacts under build/boot/<test>/."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import image
import qemu
from lane import ARTIFACTS, Device, record


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "full_lane: single-layer test left out of CI's budget (`make test-boot-ci`); `make test-boot` runs it. What it "
        "checks beyond the CI tests: the SWIOTLB role alone at 32 MiB, the reserved-memory carve-out formula.",
    )


@pytest.fixture(scope="session")
def boot_image() -> Path:
    return image.ensure()


@pytest.fixture
def device(request: pytest.FixtureRequest, boot_image: Path):
    """A fresh guest per test: qcow2 overlay on the cached base, cold boot, SSH up. QEMU stopped by PID at the end,
    also on failure; console.log and boots.json stay in build/boot/<test>/."""
    run_dir = ARTIFACTS / request.node.name
    shutil.rmtree(run_dir, ignore_errors=True)
    guest = qemu.Guest(boot_image, run_dir, name="orin-nano-emu")
    t0 = time.monotonic()
    cold, dev = None, None
    guest.start()
    try:
        guest.wait_ssh()
        cold = round(time.monotonic() - t0, 1)
        print(f"cold boot to ssh: {cold} s")
        dev = Device(guest, run_dir)
        yield dev
    finally:
        guest.stop()
        stats = guest.stats()
        record(f"{request.node.name}.boots", cold_boot_s=cold, boots=stats["boots"],
               watchdog_resets=len(stats["watchdog_resets"]), gave_up=stats["watchdog_gave_up"],
               ansible=dev.ansible_runs if dev else [])  # fmt: skip
