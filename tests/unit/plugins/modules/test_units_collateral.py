"""Collateral: the units a batch took down without the request naming them (PartOf=/Requires=/... parts, units seen
going down with it). Journaled by name before the apply returns, reported with a warning, started again by the
rollback after the named units (a failed start reported, not fatal); a protected one restarted at once and the
apply failed. The engine and the deadline restore share the same code (units_apply)."""

from __future__ import annotations

import json
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils import journal as jn
from ansible_collections.edgeslim.jetson.plugins.module_utils import systemd_units as su
from ansible_collections.edgeslim.jetson.plugins.module_utils import units_apply as ua
from ansible_collections.edgeslim.jetson.plugins.modules import units as units_module
from fake_systemd import FakeSystemd, FakeUnit, jetson_units
from modhelper import run_module


def run(fake: FakeSystemd, args: dict[str, Any], tmp_path) -> dict:
    args = {"journal_path": str(tmp_path / "journal.json"), "verify_delay": 0, **args}
    return run_module(units_module.main, args, run_command=fake, bin_path="/bin/systemctl")


def host(*extra: FakeUnit) -> FakeSystemd:
    return FakeSystemd([*jetson_units(), *extra])


def layer(tmp_path) -> dict[str, Any]:
    return json.loads((tmp_path / "journal.json").read_text())["layers"].get("services")


def starts(fake: FakeSystemd) -> list[list[str]]:
    return [c[3:] for c in fake.calls if c[1] == "start"]


def server_and_clients(**client: Any) -> FakeSystemd:
    # es-client exits when es-server stops (no dependency property says so); es-part is PartOf= es-server
    return host(
        FakeUnit("es-server.service", takes_down=("es-client.service",), consists_of=("es-part.service",)),
        FakeUnit("es-client.service", **client),
        FakeUnit("es-part.service", "static"),
    )


def test_collateral_is_journaled_by_name_reported_and_warned_about(tmp_path):
    fake = server_and_clients()
    res = run(fake, {"disable": ["es-server.service", "bluetooth"]}, tmp_path)
    assert not res.get("failed"), res
    assert res["collateral"] == {
        "es-client.service": {"by": None, "via": "observed", "state": "inactive"},
        "es-part.service": {"by": "es-server.service", "via": "PartOf=", "state": "inactive"},
    }
    rec = layer(tmp_path)
    assert rec["collateral"] == ["es-client.service", "es-part.service"]
    assert rec["units"]["es-client.service"]["via"] == "observed"
    assert rec["units"]["es-part.service"]["via"] == "PartOf="
    assert "bluetooth.service" not in res["collateral"]  # named: not collateral
    warning = res["collateral_warning"]
    assert "es-client.service (observed, now inactive)" in warning
    assert "es-part.service (PartOf= es-server.service, now inactive)" in warning
    assert "rollback starts them again after the named units" in warning


def test_a_collateral_unit_that_ended_failed_counts(tmp_path):
    fake = host(FakeUnit("es-server.service"), FakeUnit("es-client.service"))

    original = fake._stop

    def stop(unit: FakeUnit) -> str | None:  # the client crashes when its server goes
        err = original(unit)
        if unit.id == "es-server.service":
            fake.units["es-client.service"].active = "failed"
        return err

    fake._stop = stop
    res = run(fake, {"disable": ["es-server.service"]}, tmp_path)
    assert res["collateral"] == {"es-client.service": {"by": None, "via": "observed", "state": "failed"}}
    assert layer(tmp_path)["collateral"] == ["es-client.service"]
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restored"] and res["collateral"] == ["es-client.service"]
    assert fake.state("es-client.service") == ("enabled", "active")


def test_a_unit_that_exits_a_moment_after_the_stop_is_caught_once_the_batch_settled(tmp_path):
    # the client exits 0.3 s after its server stopped: the comparison waits for the batch to settle (verify_delay),
    # so the rollback knows to start it again
    fake = host(
        FakeUnit("es-server.service", takes_down=("es-client.service",)), FakeUnit("es-client.service", lingers=0.3)
    )
    applied = run(fake, {"disable": ["es-server.service"], "verify_delay": 0.8}, tmp_path)
    assert not applied.get("failed"), applied
    assert fake.state("es-client.service") == ("enabled", "failed")
    restored = run(fake, {"state": "restore"}, tmp_path)
    assert restored["restored"]
    assert fake.state("es-client.service") == ("enabled", "active")
    assert restored["collateral"] == ["es-client.service"]
    assert applied["collateral"] == {"es-client.service": {"by": None, "via": "observed", "state": "failed"}}


def test_rollback_starts_the_named_units_first_then_the_collateral(tmp_path):
    fake = server_and_clients()
    run(fake, {"disable": ["es-server.service", "bluetooth"]}, tmp_path)
    fake.calls.clear()
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restored"] and res["collateral_failed"] == []
    assert res["collateral"] == ["es-client.service", "es-part.service"]
    assert starts(fake) == [["bluetooth.service", "es-server.service"], ["es-client.service", "es-part.service"]]
    for unit in ("es-server.service", "es-client.service", "es-part.service", "bluetooth.service"):
        assert fake.state(unit)[1] == "active", unit
    assert layer(tmp_path) is None


def test_only_collateral_still_down_is_started(tmp_path):
    fake = server_and_clients()
    run(fake, {"disable": ["es-server.service"]}, tmp_path)
    fake.units["es-client.service"].active = "active"  # something brought it back meanwhile
    fake.calls.clear()
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restored"] and res["collateral"] == ["es-part.service"]
    assert starts(fake) == [["es-server.service"], ["es-part.service"]]


def test_a_collateral_unit_that_does_not_start_is_reported_not_fatal(tmp_path):
    fake = server_and_clients()
    run(fake, {"disable": ["es-server.service", "bluetooth"]}, tmp_path)
    fake.units["es-client.service"].start_fails = True
    res = run(fake, {"state": "restore"}, tmp_path)
    assert not res.get("failed"), res
    assert res["restored"] is True
    assert res["collateral_failed"] == [
        {
            "unit": "es-client.service",
            "active_state": "failed",
            "error": "Job for es-client.service failed because the control process exited with error code.",
        }
    ]
    assert "collateral not started again: es-client.service (failed)" in res["collateral_warning"]
    # the rest is back: the named units and the other collateral unit; the layer is cleared
    assert fake.state("es-server.service") == ("enabled", "active")
    assert fake.state("bluetooth.service") == ("enabled", "active")
    assert fake.state("es-part.service") == ("static", "active")
    assert layer(tmp_path) is None


def test_a_named_unit_that_does_not_start_still_fails_the_restore(tmp_path):
    fake = server_and_clients()
    run(fake, {"disable": ["es-server.service"]}, tmp_path)
    fake.units["es-server.service"].start_fails = True
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["failed"] is True and "restore failed" in res["msg"] and "journal layer is kept" in res["msg"]
    assert layer(tmp_path)["units"]["es-server.service"]["active_state"] == "active"


def test_an_old_journal_without_collateral_or_via_still_rolls_back(tmp_path):
    fake = host(FakeUnit("es-old.service", "disabled", active="inactive"))
    old = {
        "created": "2025-01-01T00:00:00Z",
        "updated": "2025-01-01T00:00:00Z",
        "default_target": None,
        "units": {
            "es-old.service": {"unit_file_state": "enabled", "active_state": "active", "load_state": "loaded"},
        },
    }
    jn.update_layer(str(tmp_path / "journal.json"), "services", lambda _o: old)
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restored"] and res["collateral"] == [] and res["collateral_failed"] == []
    assert fake.state("es-old.service") == ("enabled", "active")
    assert starts(fake) == [["es-old.service"]]


def test_a_protected_unit_going_down_as_collateral_is_restarted_at_once_and_fails(tmp_path):
    fake = host(FakeUnit("es-server.service", takes_down=("dbus.service",)), FakeUnit("dbus.service", "static"))
    res = run(fake, {"disable": ["es-server.service"]}, tmp_path)
    assert res["failed"] is True
    assert "protected unit went down as collateral of the batch: dbus.service (protected by dbus.service)" in res["msg"]
    assert "started them again at once" in res["msg"]
    assert res["collateral_protected"] == ["dbus.service"] and res["collateral_restarted"] == ["dbus.service"]
    assert fake.state("dbus.service") == ("static", "active")
    assert ["/bin/systemctl", "start", "--", "dbus.service"] in fake.calls
    # journaled before the restart: a restore still knows it (and the named unit)
    rec = layer(tmp_path)
    assert rec["collateral"] == ["dbus.service"] and "es-server.service" in rec["units"]
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["restored"] and fake.state("es-server.service") == ("enabled", "active")


def test_a_caller_protected_unit_going_down_is_named_as_such_even_when_it_cannot_start(tmp_path):
    fake = host(
        FakeUnit("es-server.service", takes_down=("es-vital.service",)),
        FakeUnit("es-vital.service", start_fails=True),
    )
    res = run(fake, {"disable": ["es-server.service"], "protected": ["es-vital*"]}, tmp_path)
    assert res["failed"] is True
    assert "es-vital.service (protected by es-vital*.service)" in res["msg"]
    assert "starting them again failed for es-vital.service" in res["msg"]
    assert res["collateral_restarted"] == []


class Module:
    """The part of AnsibleModule units_apply uses, on a FakeSystemd (what the deadline's Device provides)."""

    def __init__(self, fake: FakeSystemd) -> None:
        self.fake = fake
        self.warnings: list[str] = []

    def run_command(self, argv: list[str], **_kwargs: Any) -> tuple[int, str, str]:
        return self.fake(argv)

    @staticmethod
    def atomic_move(src: str, dest: str) -> None:
        import os

        os.replace(src, dest)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def test_rollback_services_of_the_engine_and_the_deadline_reports_collateral_failures(tmp_path):
    fake = server_and_clients()
    run(fake, {"disable": ["es-server.service"]}, tmp_path)
    fake.units["es-part.service"].start_fails = True
    module = Module(fake)
    out = ua.rollback_services(module, ua.Runner(module, "/bin/systemctl"), str(tmp_path / "journal.json"))
    assert out["restored"] is True and out["restore_error"] == ""
    assert out["collateral"] == ["es-client.service", "es-part.service"]
    assert [f["unit"] for f in out["collateral_failed"]] == ["es-part.service"]
    assert "es-part.service (failed)" in out["collateral_warning"]
    assert any("collateral not started again" in w for w in module.warnings)
    assert fake.state("es-client.service") == ("enabled", "active")
    assert layer(tmp_path) is None


def test_restore_plan_orders_named_then_collateral_triggers_first():
    def state(name: str, active: str = "inactive") -> su.UnitState:
        block = {"Id": name, "LoadState": "loaded", "ActiveState": active, "UnitFileState": "enabled"}
        return su.UnitState.from_block(name, block)

    rec = {"unit_file_state": "enabled", "active_state": "active", "load_state": "loaded"}
    lay = {
        "units": {
            "a.service": rec,
            "a.socket": rec,
            "b.service": {**rec, "via": "PartOf="},
            "c.socket": {**rec, "via": "observed"},
            "d.service": rec,
        },
        "collateral": ["d.service"],
    }
    plan = su.compute_restore(lay, {n: state(n) for n in lay["units"]}, None)
    assert plan.named_commands("sc") == [["sc", "start", "--", "a.socket"], ["sc", "start", "--", "a.service"]]
    assert plan.collateral_commands("sc") == [
        ["sc", "start", "--", "c.socket"],
        ["sc", "start", "--", "b.service", "d.service"],
    ]
    assert plan.commands("sc") == plan.named_commands("sc") + plan.collateral_commands("sc")
    assert su.is_collateral("d.service", rec, lay) and not su.is_collateral("a.service", rec, lay)
    # failed collateral is the caller's report, a named unit down is a problem
    states = {n: state(n) for n in lay["units"]}
    problems = su.verify_restored(lay, states, None, not_running_ok={"b.service", "c.socket", "d.service"})
    assert problems == ["a.service is inactive, journal says active", "a.socket is inactive, journal says active"]
