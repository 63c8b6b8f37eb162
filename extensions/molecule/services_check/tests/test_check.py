"""After `--check --diff`: every unit, alias and the default target exactly as prepare left them; no journal."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "sim"))
import simcheck


def test_every_unit_back_exactly(host):
    assert simcheck.check_units_as_recorded(host) == []


def test_aliases_and_default_target_back(host):
    assert simcheck.check_default_target(host) + simcheck.check_display_manager_aliases(host) == []


def test_nothing_written(host):
    assert not host.file("/var/lib/edgeslim/journal.json").exists
    assert not host.file("/etc/systemd/journald.conf.d/60-edgeslim.conf").exists
    assert not host.file("/root/es-services-result.json").exists
