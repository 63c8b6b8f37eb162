"""A small in-memory systemd that answers the argv lists the units module runs.

It prints `systemctl show` blocks in systemd's shape (see tests/unit/fixtures/units/README.md) and models what
matters here: aliases (`gdm3` -> `gdm.service`), static/enabled/disabled/indirect unit files, masking (and its
refusal when the unit file lives in /etc/systemd/system), `--now`, RefuseManualStop, triggers, the default target,
stop propagation to the units PartOf=/Requires=/Requisite=/BindsTo= a stopped unit (transitively, as systemd's
UNIT_ATOM_PROPAGATE_STOP), `list-units --state=active` and `list-jobs` in systemd's `--plain --no-legend` shape,
and injected faults (a unit whose stop fails, a unit that ignores SIGTERM and ends `failed` when systemd kills it
after TimeoutStopSec=, a stop job that never finishes, a unit that goes down with another although no dependency
property says so -- at once or a moment later --, a unit whose start fails).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any


@dataclasses.dataclass
class FakeUnit:
    id: str
    file_state: str = "enabled"  # enabled | disabled | static | indirect
    active: str = "active"
    aliases: tuple[str, ...] = ()
    fragment: str = ""
    triggered_by: tuple[str, ...] = ()
    refuse_manual_stop: bool = False
    stop_fails: bool = False
    masked: bool = False
    consists_of: tuple[str, ...] = ()
    required_by: tuple[str, ...] = ()
    requisite_of: tuple[str, ...] = ()
    bound_by: tuple[str, ...] = ()
    ignores_sigterm: bool = False  # the stop times out: systemd SIGKILLs it and the unit ends "failed"
    stop_hangs: bool = False  # the stop job never finishes (stays listed by list-jobs, unit "deactivating")
    takes_down: tuple[str, ...] = ()  # units that exit when this one stops, invisible to `systemctl show`
    start_fails: bool = False  # its start job fails (ExecStart exits non-zero): the unit ends "failed"
    lingers: float = 0.0  # taken down by a takes_down unit: exits (failed) this many seconds after that one stopped
    exits_at: float | None = None

    def __post_init__(self) -> None:
        # what `enable` brings back: an indirect unit (enabled through Also=) returns to indirect
        self.enabled_as = self.file_state if self.file_state in ("enabled", "indirect") else "enabled"
        if not self.fragment:
            self.fragment = "/lib/systemd/system/" + self.id


class FakeSystemd:
    def __init__(self, units: list[FakeUnit], default_target: str = "graphical.target", omit_empty: bool = False):
        self.units = {u.id: u for u in units}
        self.alias = {a: u.id for u in units for a in u.aliases}
        self.default_target = default_target
        self.omit_empty = omit_empty
        self.calls: list[list[str]] = []
        self.jobs: list[tuple[str, str]] = []  # (unit, type) of the jobs still running

    # -- helpers
    def get(self, name: str) -> FakeUnit | None:
        return self.units.get(self.alias.get(name, name))

    def state(self, name: str) -> tuple[str, str]:
        unit = self.get(name)
        assert unit is not None, name
        return ("masked" if unit.masked else unit.file_state, unit.active)

    def snapshot(self) -> dict[str, Any]:
        return {
            "default": self.default_target,
            "units": {k: (("masked" if u.masked else u.file_state), u.active) for k, u in self.units.items()},
        }

    def _block(self, name: str) -> str:
        unit = self.get(name)
        if unit is None:
            props = {
                "Id": name,
                "Names": name,
                "LoadState": "not-found",
                "ActiveState": "inactive",
                "SubState": "dead",
                "FragmentPath": "",
                "UnitFileState": "",
                "TriggeredBy": "",
                "ConsistsOf": "",
                "RequiredBy": "",
                "RequisiteOf": "",
                "BoundBy": "",
                "RefuseManualStop": "no",
            }
        else:
            props = {
                "Id": unit.id,
                "Names": " ".join((unit.id, *unit.aliases)),
                "TriggeredBy": " ".join(unit.triggered_by),
                "ConsistsOf": " ".join(unit.consists_of),
                "RequiredBy": " ".join(unit.required_by),
                "RequisiteOf": " ".join(unit.requisite_of),
                "BoundBy": " ".join(unit.bound_by),
                "LoadState": "masked" if unit.masked else "loaded",
                "ActiveState": unit.active,
                "SubState": {"active": "running", "failed": "failed"}.get(unit.active, "dead"),
                "FragmentPath": "" if unit.masked else unit.fragment,
                "UnitFileState": "masked" if unit.masked else unit.file_state,
                "RefuseManualStop": "yes" if unit.refuse_manual_stop else "no",
            }
        lines = [f"{k}={v}" for k, v in props.items() if v or not self.omit_empty]
        return "\n".join(lines) + "\n"

    def _stop(self, unit: FakeUnit) -> str | None:
        if unit.active != "active":
            return None
        if unit.refuse_manual_stop:
            return (
                f"Failed to stop {unit.id}: Operation refused, unit {unit.id} may be requested by dependency only "
                "(it is configured to refuse manual start/stop).\n"
            )
        if unit.stop_fails:
            return f"Job for {unit.id} failed.\n"
        if unit.stop_hangs:
            unit.active = "deactivating"
            self.jobs.append((unit.id, "stop"))
            return None
        unit.active = "failed" if unit.ignores_sigterm else "inactive"
        self._propagate_stop(unit)
        for name in unit.takes_down:
            dep = self.units.get(name)
            if dep is not None and dep.active == "active":
                if dep.lingers:
                    dep.exits_at = time.monotonic() + dep.lingers
                else:
                    dep.active = "inactive"
        return None

    def _tick(self) -> None:
        """Units whose lingering exit is due are down now (a client noticing a moment later that its server went)."""
        for unit in self.units.values():
            if unit.exits_at is not None and time.monotonic() >= unit.exits_at:
                unit.exits_at = None
                if unit.active == "active":
                    unit.active = "failed"

    def _propagate_stop(self, unit: FakeUnit) -> None:
        for name in (*unit.consists_of, *unit.required_by, *unit.requisite_of, *unit.bound_by):
            dep = self.units.get(name)
            if dep is not None and dep.active == "active":
                dep.active = "inactive"
                self._propagate_stop(dep)

    # -- the runner interface: argv -> (rc, stdout, stderr)
    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        self._tick()
        args = [a for a in argv[1:] if a not in ("--no-pager", "--")]
        verb = args[0]
        now = "--now" in args
        names = [a for a in args[1:] if not a.startswith("--")]
        if verb == "show":
            return 0, "\n".join(self._block(n) for n in names), ""
        if verb == "list-units":
            assert "--plain" in args and "--no-legend" in args, args
            states = next(a.split("=", 1)[1].split(",") for a in args if a.startswith("--state="))
            types = next(a.split("=", 1)[1].split(",") for a in args if a.startswith("--type="))
            lines = [
                f"{u.id} loaded {u.active} {'running' if u.active == 'active' else 'dead'} {u.id} daemon"
                for u in sorted(self.units.values(), key=lambda x: x.id)
                if u.active in states and u.id.rsplit(".", 1)[1] in types
            ]
            return 0, "".join(line + "\n" for line in lines), ""
        if verb == "list-jobs":
            assert "--plain" in args and "--no-legend" in args, args
            return 0, "".join(f"{n + 100} {u} {k} running\n" for n, (u, k) in enumerate(self.jobs)), ""
        if verb == "get-default":
            return 0, self.default_target + "\n", ""
        if verb == "set-default":
            self.default_target = names[0]
            return 0, "", f"Created symlink /etc/systemd/system/default.target -> /lib/systemd/system/{names[0]}.\n"
        errors = []
        for name in names:
            unit = self.get(name)
            if unit is None:
                errors.append(f"Failed to {verb} unit: Unit file {name} does not exist.\n")
                continue
            err = None
            if verb == "mask":
                if unit.fragment.startswith("/etc/systemd/system/"):
                    errors.append(f"Failed to mask unit: File /etc/systemd/system/{unit.id} already exists.\n")
                    continue
                unit.masked = True
                err = self._stop(unit) if now else None
            elif verb == "unmask":
                unit.masked = False
            elif verb == "disable":
                if unit.file_state in ("enabled", "indirect"):
                    unit.file_state = "disabled"
                err = self._stop(unit) if now else None
            elif verb == "enable":
                if unit.file_state == "disabled":
                    unit.file_state = unit.enabled_as
            elif verb == "stop":
                err = self._stop(unit)
            elif verb == "start":
                served = [u for u in self.units.values() if unit.id in u.triggered_by and u.active == "active"]
                if unit.id.endswith(".socket") and unit.active != "active" and served:
                    err = 'Job failed. See "journalctl -xe" for details.\n'  # real systemd 252 behaviour
                elif unit.masked:
                    err = f"Failed to start {unit.id}: Unit {unit.id} is masked.\n"
                elif unit.start_fails:
                    unit.active = "failed"
                    err = f"Job for {unit.id} failed because the control process exited with error code.\n"
                else:
                    unit.active = "active"
            else:
                raise AssertionError(f"unexpected systemctl verb {verb}")
            if err:
                errors.append(err)
        return (1 if errors else 0), "", "".join(errors)


def jetson_units(**overrides: Any) -> list[FakeUnit]:
    """A JetPack-6-like unit set [AUDIT-AGX inventory, reconstructed]."""
    units = [
        FakeUnit(
            "gdm.service",
            "static",
            aliases=("gdm3.service", "display-manager.service"),
            consists_of=("gnome-session-desktop.service",),
        ),
        FakeUnit("gnome-session-desktop.service"),
        FakeUnit("avahi-daemon.service", triggered_by=("avahi-daemon.socket",)),
        FakeUnit("avahi-daemon.socket"),
        FakeUnit("ModemManager.service"),
        FakeUnit("bluetooth.service"),
        FakeUnit("packagekit.service", "static"),
        FakeUnit("nvargus-daemon.service"),
        FakeUnit("snapd.service", triggered_by=("snapd.socket",)),
        FakeUnit("snapd.socket"),
        FakeUnit("kerneloops.service", active="inactive", masked=True),
        FakeUnit("ssh.service", aliases=("sshd.service",)),
        FakeUnit("NetworkManager.service"),
        FakeUnit("nvgetty.service"),
        FakeUnit("rpcbind.service", "indirect", triggered_by=("rpcbind.socket",)),
        FakeUnit("rpcbind.socket"),
    ]
    for unit in units:
        for key, value in overrides.get(unit.id, {}).items():
            setattr(unit, key, value)
    return units
