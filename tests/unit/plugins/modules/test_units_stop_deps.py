"""edgeslim.jetson.units: bounded stops, units that end failed, and units systemd stops as dependencies."""

from __future__ import annotations

import json
import time
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.modules import units as units_module
from fake_systemd import FakeSystemd, FakeUnit, jetson_units
from modhelper import run_module


def run(fake: FakeSystemd, args: dict[str, Any], tmp_path, check: bool = False) -> dict:
    args = {"journal_path": str(tmp_path / "journal.json"), "verify_delay": 0, **args}
    return run_module(units_module.main, args, check=check, run_command=fake, bin_path="/bin/systemctl")


def host(*extra: FakeUnit) -> FakeSystemd:
    return FakeSystemd([*jetson_units(), *extra])


def journaled(tmp_path) -> dict[str, Any]:
    return json.loads((tmp_path / "journal.json").read_text())["layers"]["services"]["units"]


def test_unit_ignoring_sigterm_is_a_warning_naming_it(tmp_path):
    fake = host(FakeUnit("es-stubborn.service", ignores_sigterm=True))
    res = run(fake, {"disable": ["es-stubborn.service", "bluetooth"]}, tmp_path)
    assert not res.get("failed"), res
    assert fake.state("es-stubborn.service") == ("disabled", "failed")
    assert res["units"]["es-stubborn.service"]["stop_result"] == "failed"
    assert "stop_result" not in res["units"]["bluetooth.service"]
    assert len(res["stop_warnings"]) == 1
    assert res["stop_warnings"][0].startswith("es-stubborn.service ended failed after its stop (failed)")
    # the stops were queued without blocking, then waited for
    assert [c for c in fake.calls if c[1] == "disable"] == [
        ["/bin/systemctl", "disable", "--now", "--no-block", "--", "es-stubborn.service", "bluetooth.service"]
    ]
    assert any(c[1:3] == ["--no-pager", "list-jobs"] for c in fake.calls)
    # restore brings it back although it ended failed
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restored"] and fake.state("es-stubborn.service") == ("enabled", "active")


def test_a_stop_job_that_never_ends_is_bounded_and_fails(tmp_path):
    fake = host(FakeUnit("es-hang.service", stop_hangs=True))
    started = time.monotonic()
    res = run(fake, {"disable": ["es-hang.service"], "stop_timeout": 1.2}, tmp_path)
    elapsed = time.monotonic() - started
    assert res["failed"] is True
    assert "es-hang.service still stopping after 1.2 s (stop_timeout)" in res["msg"]
    assert "journal.json" in res["msg"]
    assert 1.0 <= elapsed < 10, elapsed
    assert "es-hang.service" in journaled(tmp_path)  # previous state kept for the restore


def test_units_that_went_down_unnamed_are_journaled_reported_and_restarted_last(tmp_path):
    # es-client exits when es-server stops, but no dependency property of es-server says so (e.g. it lost its
    # connection): only the before/after comparison of active units sees it.
    fake = host(FakeUnit("es-server.service", takes_down=("es-client.service",)), FakeUnit("es-client.service"))
    res = run(fake, {"disable": ["es-server.service"]}, tmp_path)
    assert not res.get("failed"), res
    assert res["stopped_with"] == {"es-client.service": {"by": None, "via": "observed"}}
    assert res["units"]["es-client.service"]["via"] == "observed"
    rec = journaled(tmp_path)["es-client.service"]
    assert rec["active_state"] == "active" and rec["via"] == "observed" and rec["unit_file_state"] == "enabled"
    fake.calls.clear()
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restarted_dependencies"] == ["es-client.service"]
    starts = [c[3:] for c in fake.calls if c[1] == "start"]
    assert starts == [["es-server.service"], ["es-client.service"]]
    assert fake.state("es-server.service") == ("enabled", "active")
    assert fake.state("es-client.service") == ("enabled", "active")


def test_requires_dependency_is_stopped_reported_and_restarted_after_its_requirement(tmp_path):
    fake = host(
        FakeUnit("es-dep-server.service", required_by=("es-dep-client.service",)),
        FakeUnit("es-dep-client.service"),
    )
    res = run(fake, {"disable": ["es-dep-server.service"]}, tmp_path)
    assert res["stopped_with"] == {"es-dep-client.service": {"by": "es-dep-server.service", "via": "Requires="}}
    assert fake.state("es-dep-client.service") == ("enabled", "inactive")
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restarted_dependencies"] == ["es-dep-client.service"]
    assert fake.state("es-dep-client.service") == ("enabled", "active")


def test_nothing_went_down_unnamed_means_no_extra_journal_write(tmp_path):
    fake = host()
    res = run(fake, {"disable": ["bluetooth"]}, tmp_path)
    assert res["stopped_with"] == {} and res["stop_warnings"] == []
    assert list(journaled(tmp_path)) == ["bluetooth.service"]
