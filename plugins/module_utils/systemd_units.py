# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd unit states, batch plans and restore plans for the ``edgeslim.jetson.units`` module.

Pure Python: the caller runs the argv lists built here (one ``systemctl show`` for every unit of the plan, a
handful of batched ``systemctl mask|disable|stop|set-default`` calls) and feeds the output back in.

Why the rules below (sources: docs/references.md):
- ``gdm3`` is an *alias* of ``gdm.service`` and ``gdm`` is *static* on JetPack 6 [AUDIT-AGX], so "disable gdm3"
  does nothing useful: aliases are resolved through ``Id``/``Names`` and a static unit can only be stopped+masked.
- socket/path/timer-activated daemons re-spawn unless their trigger goes too [AUDIT-AGX, derived]: the units that
  trigger a unit (``TriggeredBy``) follow it as companions.
- headless = ``systemctl set-default multi-user.target`` [SKILL-HEADLESS].
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

SHOW_PROPERTIES = (
    "Id",
    "Names",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "FragmentPath",
    "TriggeredBy",
    "ConsistsOf",
    "RequiredBy",
    "RequisiteOf",
    "BoundBy",
    "RefuseManualStop",
)

# Reverse dependencies along which systemd propagates a stop job (its UNIT_ATOM_PROPAGATE_STOP): stopping a unit
# also stops every unit that is PartOf=, Requires=, Requisite= or BindsTo= it. Property on the stopped unit ->
# the directive on the unit that goes down with it.
STOP_PROPAGATION = (
    ("ConsistsOf", "PartOf="),
    ("RequiredBy", "Requires="),
    ("RequisiteOf", "Requisite="),
    ("BoundBy", "BindsTo="),
)

UNIT_SUFFIXES = (
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
)
# systemd's own rule (unit_name_is_valid): [A-Za-z0-9:-_.\\@] plus a known suffix, at most 255 characters.
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(%s)$" % "|".join(UNIT_SUFFIXES))  # noqa: UP031

# Unit file states that mean "something will start this unit at boot": undone with ``disable``.
ENABLED_STATES = ("enabled", "enabled-runtime", "indirect", "linked", "linked-runtime", "alias")
MASKED_STATES = ("masked", "masked-runtime")
# Active states in which the unit still holds (or is about to hold) memory.
RUNNING_STATES = ("active", "activating", "reloading", "deactivating", "refreshing")
# Units that start others: restored before the units they trigger.
TRIGGER_SUFFIXES = ("socket", "path", "timer")
# Unit types compared before and after a batch to find the units systemd stopped as dependencies.
OBSERVED_TYPES = ("service", "socket", "path", "timer")
OBSERVED_VIA = "observed"
# Units no caller or profile can unprotect (``protected`` only adds to these): losing one cuts the device off
# (ssh, the bus systemctl and logind talk over, logging, console gettys = the recovery path) or breaks the A/B boot
# chain (NVIDIA's slot bookkeeping and rootfs validation). Patterns use the same matcher as ``protected``.
CORE_PROTECTED = {
    "ssh.service": "management access (sshd.service is its alias on Debian/Ubuntu)",
    "sshd.service": "management access",
    "ssh.socket": "socket-activated management access (Ubuntu 22.10+)",
    "sshd.socket": "socket-activated management access",
    "dbus.service": "system bus: systemctl, logind and most daemons need it",
    "dbus.socket": "system bus socket: stopping it stops dbus.service and everything bound to the bus",
    "systemd-journald.service": "logging core",
    "systemd-journald*.socket": "journald sockets (stdout, /dev/log, audit); journald stops with them",
    "systemd-logind.service": "sessions and SSH logins",
    "nv-l4t-bootloader-config.service": "A/B slot bookkeeping; without it boot-chain fallback breaks",
    "l4t-rootfs-validation-config.service": "rootfs A/B validation; without it a good slot is never committed",
    "nvgetty.service": "serial console on ttyTHS0, the recovery path",
    "serial-getty@*.service": "serial console gettys, the recovery path",
    "getty@*.service": "console gettys, the local recovery path",
}
# Which units carry a link, by interface name (regex, same table as the preflight role): the units carrying the
# management interface join the core set for the run. WWAN also under systemd's predictable names (wwp0s20f0u6i12).
LINK_CARRIERS = (
    (r"^(ww|ppp|cdc-wdm)", ("ModemManager.service", "NetworkManager.service")),
    (r"^wl", ("wpa_supplicant.service", "NetworkManager.service", "iwd.service")),
    (r"^(l4tbr|usb|rndis)", ("nv-l4t-usb-device-mode.service",)),
    (r"^(eth|en|mgbe|eqos|br|bond|vlan)", ("NetworkManager.service", "systemd-networkd.service", "networking.service")),
)
# A default target other than these boots a Jetson into a state without ssh (rescue, emergency) or not at all.
ALLOWED_DEFAULT_TARGETS = ("multi-user.target", "graphical.target")
# Mask writes a /dev/null symlink into /etc/systemd/system; it cannot when the unit file itself lives there.
UNMASKABLE_PREFIXES = ("/etc/systemd/system/", "/run/systemd/system/")


class UnitsError(ValueError):
    """Bad input or unparseable systemctl output."""


def normalize_unit(name: Any) -> str:
    """``gdm3`` -> ``gdm3.service``; reject anything systemd would not accept as a unit name."""
    if not isinstance(name, str) or not name.strip():
        raise UnitsError(f"unit name must be a non-empty string, got {name!r}")
    name = name.strip()
    if "." not in name or name.rsplit(".", 1)[1] not in UNIT_SUFFIXES:
        name = name + ".service"
    if len(name) > 255 or not _UNIT_RE.match(name) or name.startswith("-"):
        raise UnitsError(f"invalid unit name {name!r}")
    return name


# A protected entry may be a shell-style pattern over unit names (fnmatch: ``*``, ``?``, ``[...]``), e.g.
# ``serial-getty@*.service``: the serial console getty is named after the console, which differs per chip.
_PATTERN_RE = re.compile(r"^[A-Za-z0-9:_.\\\-*?\[\]!]+(@[A-Za-z0-9:_.\\\-*?\[\]!]*)?\.(%s)$" % "|".join(UNIT_SUFFIXES))  # noqa: UP031


def normalize_protected(names: Any) -> list[str]:
    """Protected unit names or patterns (``nvgetty`` -> ``nvgetty.service``; ``serial-getty@*`` kept a pattern)."""
    if names is None:
        return []
    if not isinstance(names, (list, tuple)):
        raise UnitsError(f"protected must be a list of unit names or patterns, got {type(names).__name__}")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise UnitsError(f"protected unit name must be a non-empty string, got {name!r}")
        unit = name.strip()
        if "." not in unit or unit.rsplit(".", 1)[1] not in UNIT_SUFFIXES:
            unit += ".service"
        if len(unit) > 255 or not _PATTERN_RE.match(unit) or unit.startswith("-"):
            raise UnitsError(f"invalid protected unit name or pattern {unit!r}")
        if unit not in out:
            out.append(unit)
    return out


def link_carriers(interface: str | None) -> list[str]:
    """The units that carry network interface ``interface`` (empty for no or an unknown interface)."""
    if not interface:
        return []
    out: list[str] = []
    for pattern, units in LINK_CARRIERS:
        if re.search(pattern, interface):
            out += [u for u in units if u not in out]
    return out


def core_protected(management_interface: str | None = None) -> dict[str, str]:
    """The built-in core set (name or pattern -> why), plus the carriers of the management interface."""
    core = dict(CORE_PROTECTED)
    for unit in link_carriers(management_interface):
        core.setdefault(unit, f"carries the management link on {management_interface}")
    return core


def protected_by(names: Any, protected: list[str]) -> list[str]:
    """The protected entries (names or patterns) matching any of ``names`` (a unit name or a set of its names)."""
    names = {names} if isinstance(names, str) else set(names)
    return sorted(p for p in protected if any(fnmatch.fnmatchcase(n, p) for n in names))


def normalize_units(names: Any, what: str) -> list[str]:
    if names is None:
        return []
    if not isinstance(names, (list, tuple)):
        raise UnitsError(f"{what} must be a list of unit names, got {type(names).__name__}")
    out: list[str] = []
    for name in names:
        unit = normalize_unit(name)
        if unit not in out:
            out.append(unit)
    return out


def show_argv(systemctl: str, units: list[str]) -> list[str]:
    """One ``systemctl show`` for all units; systemd prints one block per argument, in argument order."""
    return [systemctl, "--no-pager", "show", "--property=" + ",".join(SHOW_PROPERTIES), "--", *units]


def parse_show(text: str) -> list[dict[str, str]]:
    """Split ``systemctl show`` output into one dict per unit (blocks separated by blank lines)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or not key[0].isalpha():
            raise UnitsError(f"unexpected line in systemctl show output: {line[:120]!r}")
        current[key] = value
    if current:
        blocks.append(current)
    return blocks


@dataclass
class UnitState:
    """One unit as ``systemctl show`` reports it; ``requested`` is the name the caller asked for."""

    requested: str
    id: str
    names: list[str]
    load_state: str
    active_state: str
    sub_state: str
    unit_file_state: str
    fragment_path: str
    triggered_by: list[str]
    refuse_manual_stop: bool
    consists_of: list[str] = field(default_factory=list)
    required_by: list[str] = field(default_factory=list)
    requisite_of: list[str] = field(default_factory=list)
    bound_by: list[str] = field(default_factory=list)

    @classmethod
    def from_block(cls, requested: str, block: dict[str, str]) -> UnitState:
        unit_id = block.get("Id") or requested
        names = block.get("Names", "").split() or [unit_id]
        return cls(
            requested=requested,
            id=unit_id,
            names=names,
            load_state=block.get("LoadState", ""),
            active_state=block.get("ActiveState", ""),
            sub_state=block.get("SubState", ""),
            unit_file_state=block.get("UnitFileState", ""),
            fragment_path=block.get("FragmentPath", ""),
            triggered_by=block.get("TriggeredBy", "").split(),
            refuse_manual_stop=block.get("RefuseManualStop", "no") == "yes",
            consists_of=block.get("ConsistsOf", "").split(),
            required_by=block.get("RequiredBy", "").split(),
            requisite_of=block.get("RequisiteOf", "").split(),
            bound_by=block.get("BoundBy", "").split(),
        )

    def stops_with_it(self) -> list[tuple[str, str]]:
        """``(unit, directive)`` for every unit systemd stops together with this one (one level)."""
        by_prop = {
            "ConsistsOf": self.consists_of,
            "RequiredBy": self.required_by,
            "RequisiteOf": self.requisite_of,
            "BoundBy": self.bound_by,
        }
        return [(unit, how) for prop, how in STOP_PROPAGATION for unit in by_prop[prop]]

    @property
    def exists(self) -> bool:
        # "not-found" with an active state still holds memory (unit file deleted while running): treat as present.
        return self.load_state != "not-found" or self.running

    @property
    def masked(self) -> bool:
        return self.load_state == "masked" or self.unit_file_state in MASKED_STATES

    @property
    def enabled(self) -> bool:
        return self.unit_file_state in ENABLED_STATES

    @property
    def running(self) -> bool:
        return self.active_state in RUNNING_STATES

    def record(self) -> dict[str, str]:
        """What the journal keeps to restore this unit exactly."""
        return {
            "unit_file_state": self.unit_file_state,
            "active_state": self.active_state,
            "load_state": self.load_state,
        }


def match_states(requested: list[str], blocks: list[dict[str, str]]) -> dict[str, UnitState]:
    """Pair blocks with requested names (by position; checked against ``Id``/``Names``)."""
    if len(blocks) != len(requested):
        raise UnitsError(
            f"systemctl show returned {len(blocks)} unit blocks for {len(requested)} units; output truncated?"
        )
    states: dict[str, UnitState] = {}
    for name, block in zip(requested, blocks):
        state = UnitState.from_block(name, block)
        if state.load_state != "not-found" and name not in state.names and name != state.id:
            raise UnitsError(f"systemctl show answered {state.id!r} (names {state.names}) for {name!r}")
        states[name] = state
    return states


@dataclass
class UnitPlan:
    unit: str  # canonical Id
    requested: list[str]
    want: str  # "disable" | "mask" | "stop" (a PartOf= unit that stops with its parent)
    before: dict[str, str]
    actions: list[str] = field(default_factory=list)  # subset of stop, disable, mask (in that meaning)
    notes: list[str] = field(default_factory=list)
    companion_of: str | None = None
    block: str | None = None
    via: str | None = None  # for a unit that stops with companion_of: the directive that takes it down (PartOf=, ...)

    @property
    def expected_after(self) -> dict[str, str]:
        after = dict(self.before)
        if "mask" in self.actions:
            after["unit_file_state"] = "masked"
        elif "disable" in self.actions:
            after["unit_file_state"] = "disabled"
        if self.actions and self.before["active_state"] in RUNNING_STATES:
            after["active_state"] = "inactive"
        return after

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "requested": self.requested,
            "want": self.want,
            "actions": list(self.actions),
            "before": dict(self.before),
            "after": self.expected_after,
            "notes": list(self.notes),
            "companion_of": self.companion_of,
            "block": self.block,
            "via": self.via,
        }


@dataclass
class Plan:
    units: list[UnitPlan]
    absent: list[str]
    kept: list[str]
    default_target_before: str | None
    default_target_after: str | None
    errors: list[str]
    # the caller's protected names/patterns plus the core set: a unit among them must never go down as collateral
    protected: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return any(u.actions for u in self.units) or self.default_target_after != self.default_target_before

    def commands(self, systemctl: str) -> list[list[str]]:
        """Batched argv: ``mask --now``, ``disable --now``, ``stop`` (static units), ``set-default``. The stops are
        queued with ``--no-block``: the caller waits for their jobs with its own deadline (``wait_stop_jobs``)."""
        mask = [u.unit for u in self.units if "mask" in u.actions]
        disable = [u.unit for u in self.units if "disable" in u.actions and "mask" not in u.actions]
        stop = [u.unit for u in self.units if u.actions == ["stop"]]
        argvs: list[list[str]] = []
        if mask:
            argvs.append([systemctl, "mask", "--now", "--no-block", "--", *mask])
        if disable:
            argvs.append([systemctl, "disable", "--now", "--no-block", "--", *disable])
        if stop:
            argvs.append([systemctl, "stop", "--no-block", "--", *stop])
        if self.default_target_after and self.default_target_after != self.default_target_before:
            argvs.append([systemctl, "set-default", self.default_target_after])
        return argvs

    def as_dict(self) -> dict[str, Any]:
        return {
            "units": [u.as_dict() for u in self.units],
            "absent": list(self.absent),
            "kept": list(self.kept),
            "default_target": {"before": self.default_target_before, "after": self.default_target_after},
        }


def _all_names(state: UnitState) -> set[str]:
    return {state.requested, state.id, *state.names}


def _why(hit: list[str], core: dict[str, str]) -> str:
    """`` (core: why)`` when a core entry protects the unit: the caller cannot lift it with ``protected``."""
    reasons = [f"{p}: {core[p]}" for p in hit if p in core]
    return f" (core set, cannot be unprotected -- {'; '.join(reasons)})" if reasons else ""


def validate_request(
    disable: list[str],
    mask: list[str],
    protected: list[str],
    default_target: str | None,
    core: dict[str, str] | None = None,
) -> list[str]:
    """Errors visible from the names alone (before asking systemd anything)."""
    core = core or {}
    errors = []
    for unit in mask + disable:
        hit = protected_by(unit, protected)
        if hit:
            how = "" if hit == [unit] else f" (by {', '.join(hit)})"
            errors.append(f"unit {unit} is protected{how} and must not be stopped, disabled or masked{_why(hit, core)}")
    if default_target is not None and default_target not in ALLOWED_DEFAULT_TARGETS:
        errors.append(
            f"default_target must be {' or '.join(ALLOWED_DEFAULT_TARGETS)}, got {default_target!r} "
            "(any other target boots the device without ssh, or not at all)"
        )
    return errors


def compute_plan(
    states: dict[str, UnitState],
    disable: list[str],
    mask: list[str],
    keep: list[str],
    protected: list[str],
    default_target_before: str | None,
    default_target: str | None,
    companions: dict[str, str] | None = None,
    blocks: dict[str, str] | None = None,
    stop: list[str] | None = None,
    core: dict[str, str] | None = None,
    via: dict[str, str] | None = None,
) -> Plan:
    """Compute what to do. ``states`` covers every name in disable+mask (+ companions, + ``stop``); ``companions``
    maps a companion unit (or a unit in ``stop``) to the unit it follows, ``via`` a unit in ``stop`` to the
    directive that takes it down with that unit (``PartOf=``, ``Requires=``, ...). Aliases collapse onto one
    canonical ``Id``; ``mask`` beats ``disable``; ``keep`` beats both; a protected unit (under any of its names)
    is an error, not a skip, and so is a protected or kept unit that would stop with one of the plan."""
    companions = companions or {}
    blocks = blocks or {}
    core = core or {}
    via = via or {}
    protected = list(protected) + [c for c in core if c not in protected]
    errors = validate_request(disable, mask, protected, default_target, core)
    keep_set = set(keep)
    by_id: dict[str, UnitPlan] = {}
    absent: list[str] = []
    kept: list[str] = []
    order = [(u, "mask") for u in mask] + [(u, "disable") for u in disable if u not in mask]
    order += [(u, "stop") for u in stop or [] if u not in mask and u not in disable]
    for name, want in order:
        state = states.get(name)
        if state is None:
            raise UnitsError(f"no state was read for {name}")
        names = _all_names(state)
        hit = protected_by(names, protected)
        if want == "stop" and name in companions and (hit or names & keep_set) and state.exists:
            what = "protected" if hit else "kept"
            errors.append(
                f"stopping {companions[name]} would also stop {what} unit {state.id} "
                f"({via.get(name, 'PartOf=')} {companions[name]}){_why(hit, core)}; refusing"
            )
            continue
        if hit and not protected_by(name, protected):
            errors.append(
                f"unit {name} is an alias of protected unit {', '.join(hit)}; refusing to touch it{_why(hit, core)}"
            )
            continue
        if names & keep_set:
            kept.append(name)
            continue
        if not state.exists:
            absent.append(name)
            continue
        if state.refuse_manual_stop and state.running:
            errors.append(f"unit {state.id} refuses manual stop (RefuseManualStop=yes); keep it or change the unit")
            continue
        plan = by_id.get(state.id)
        if plan is None:
            plan = UnitPlan(unit=state.id, requested=[name], want=want, before=state.record())
            plan.companion_of = companions.get(name)
            plan.block = blocks.get(name) or blocks.get(companions.get(name, ""))
            if want == "stop" and name in companions:
                plan.via = via.get(name, "PartOf=")
            by_id[state.id] = plan
        else:
            if name not in plan.requested:
                plan.requested.append(name)
            if want == "mask":
                plan.want = "mask"
            continue
        if name != state.id:
            plan.notes.append(f"{name} is an alias of {state.id}")
        if want == "stop" and name in companions:
            how = via.get(name, "PartOf=")
            if how == "PartOf=":
                plan.notes.append(
                    f"part of {companions[name]} (PartOf=): stops with it, journaled so restore starts it"
                )
            else:
                plan.notes.append(f"{how}{companions[name]}: stops with it, journaled so restore starts it")
    for plan in by_id.values():
        state = next(s for s in states.values() if s.id == plan.unit)
        plan.actions = _unit_actions(state, plan)
    if default_target is not None and protected_by(default_target, protected):
        errors.append(f"default_target {default_target} is protected")
    # Fewer errors than one per name: the same unit reached under two names reports once.
    errors = list(dict.fromkeys(errors))
    after = default_target if default_target is not None else default_target_before
    return Plan(
        units=list(by_id.values()),
        absent=absent,
        kept=kept,
        default_target_before=default_target_before,
        default_target_after=after,
        errors=errors,
        protected=protected,
    )


def _unit_actions(state: UnitState, plan: UnitPlan) -> list[str]:
    if state.masked:
        if state.running:  # masked while running (masked by hand without --now): still needs a stop
            return ["stop"]
        return []
    actions: list[str] = []
    want = plan.want
    if want == "stop":
        return ["stop"] if state.running else []
    if want == "mask" and state.fragment_path.startswith(UNMASKABLE_PREFIXES):
        plan.notes.append(f"unit file {state.fragment_path} lives in /etc or /run: cannot mask, disabling instead")
        want = "disable"
    if want == "mask":
        return ["mask"]  # `mask --now` also stops it
    if state.enabled:
        actions.append("disable")  # `disable --now` also stops it
    elif state.running:
        actions.append("stop")
        if state.unit_file_state in ("static", "generated", "transient", ""):
            plan.notes.append(f"{state.unit_file_state or 'no'} unit file state: stopped only; mask it to keep it down")
    return actions


def parse_list_units(text: str) -> list[str]:
    """Unit names from ``systemctl list-units --plain --no-legend --full`` (first column; a leading state marker
    such as ``●`` is skipped)."""
    names = []
    for line in text.splitlines():
        fields = [f for f in line.split()[:2] if _UNIT_RE.match(f)]
        if fields:
            names.append(fields[0])
    return names


def parse_list_jobs(text: str) -> list[tuple[str, str, str]]:
    """``(unit, type, state)`` from ``systemctl list-jobs --plain --no-legend --full`` (``JOB UNIT TYPE STATE``);
    lines that are not a job (``No jobs running.``) are skipped."""
    jobs = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit():
            jobs.append((fields[1], fields[2], fields[3]))
    return jobs


def observed_record(state: UnitState) -> dict[str, Any]:
    """Journal record of a unit that was active before a batch and inactive after it although no command named
    it (systemd stopped it as a dependency): restore starts it again; its unit file state is not touched."""
    return {
        "unit_file_state": state.unit_file_state,
        "active_state": "active",
        "load_state": state.load_state,
        "requested": [],
        "action": "stop",
        "companion_of": None,
        "block": None,
        "via": OBSERVED_VIA,
    }


def verify_applied(plan: Plan, states: dict[str, UnitState], default_target: str | None) -> list[str]:
    """Check the final states against the plan; return problems (empty list = verified)."""
    problems = []
    by_id = {s.id: s for s in states.values()}
    for unit in plan.units:
        state = by_id.get(unit.unit)
        if state is None:
            problems.append(f"{unit.unit}: no state after apply")
            continue
        if state.running:
            problems.append(f"{unit.unit} is still {state.active_state} after stop")
        if "mask" in unit.actions and not state.masked:
            problems.append(f"{unit.unit} is {state.unit_file_state}, expected masked")
        if "disable" in unit.actions and state.enabled:
            problems.append(f"{unit.unit} is still {state.unit_file_state}, expected disabled")
    if plan.default_target_after and default_target != plan.default_target_after:
        problems.append(f"default target is {default_target}, expected {plan.default_target_after}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# journal layer helpers


def merge_layer(
    old: dict[str, Any] | None, plan: Plan, now: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Add this plan's previous states to the services layer. The FIRST record of a unit wins: on a re-run the
    current state is the slimmed one, and the journal must keep the state from before edgeslim touched it."""
    layer = dict(old or {})
    layer.setdefault("created", now)
    units = dict(layer.get("units") or {})
    for unit in plan.units:
        if not unit.actions or unit.unit in units:
            continue
        units[unit.unit] = {
            **unit.before,
            "requested": list(unit.requested),
            "action": "mask" if "mask" in unit.actions else ("disable" if "disable" in unit.actions else "stop"),
            "companion_of": unit.companion_of,
            "block": unit.block,
            "via": unit.via,
        }
    layer["units"] = units
    if (
        plan.default_target_after != plan.default_target_before
        and layer.get("default_target") is None
        and plan.default_target_before
    ):
        layer["default_target"] = plan.default_target_before
    layer.setdefault("default_target", None)
    if extra:
        layer.update(extra)
    layer["updated"] = now
    return layer


@dataclass
class RestorePlan:
    units: list[dict[str, Any]]
    default_target_before: str | None
    default_target_after: str | None

    @property
    def changes(self) -> bool:
        return any(u["actions"] for u in self.units) or self.default_target_after != self.default_target_before

    def commands(self, systemctl: str) -> list[list[str]]:
        """Every argv of the restore, in order: ``named_commands`` then ``collateral_commands``."""
        return self.named_commands(systemctl) + self.collateral_commands(systemctl)

    def named_commands(self, systemctl: str) -> list[list[str]]:
        """unmask, mask, enable, disable, set-default, then start/stop of the units the run named (after the
        daemon-reloads those imply). Any failure here fails the restore."""
        argvs: list[list[str]] = []
        for verb in ("unmask", "mask", "enable", "disable"):
            units = [u["unit"] for u in self.units if verb in u["actions"]]
            if units:
                argvs.append([systemctl, verb, "--", *units])
        if self.default_target_after and self.default_target_after != self.default_target_before:
            argvs.append([systemctl, "set-default", self.default_target_after])
        # Triggers first: systemd refuses to start a socket whose service is already running ("Job failed"),
        # so sockets/paths/timers start in their own call before the services they trigger.
        starts = [u["unit"] for u in self.units if "start" in u["actions"] and not u.get("collateral")]
        triggers = [u for u in starts if u.rsplit(".", 1)[-1] in TRIGGER_SUFFIXES]
        for group in (triggers, [u for u in starts if u not in triggers]):
            if group:
                argvs.append([systemctl, "start", "--", *group])
        stops = [u["unit"] for u in self.units if "stop" in u["actions"]]
        if stops:
            argvs.append([systemctl, "stop", "--", *stops])
        return argvs

    def collateral_commands(self, systemctl: str) -> list[list[str]]:
        """The starts of the collateral units (those the run stopped only through a dependency: PartOf=,
        Requires=, ..., or observed going down with the batch), after the named units run again; their triggers
        first. The caller runs them without failing on their exit code and checks each unit afterwards: a
        collateral unit that does not start is reported, not fatal to the rest."""
        starts = self.collateral_starts
        triggers = [u for u in starts if u.rsplit(".", 1)[-1] in TRIGGER_SUFFIXES]
        groups = (triggers, [u for u in starts if u not in triggers])
        return [[systemctl, "start", "--", *group] for group in groups if group]

    @property
    def collateral_starts(self) -> list[str]:
        """Collateral units still not running: the only ones started again (one already back is left alone)."""
        return [u["unit"] for u in self.units if "start" in u["actions"] and u.get("collateral")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "units": [dict(u) for u in self.units],
            "default_target": {"before": self.default_target_before, "after": self.default_target_after},
        }


def compute_restore(layer: dict[str, Any], states: dict[str, UnitState], default_target_now: str | None) -> RestorePlan:
    """What brings every journaled unit (and the default target) back to its recorded state."""
    units = []
    for name, rec in sorted((layer.get("units") or {}).items()):
        state = states[name]
        actions: list[str] = []
        if not state.exists:
            units.append(
                {
                    "unit": name,
                    "actions": [],
                    "before": state.record(),
                    "after": state.record(),
                    "notes": ["unit no longer exists on this host; nothing to restore"],
                }
            )
            continue
        want_masked = rec.get("unit_file_state") in MASKED_STATES or rec.get("load_state") == "masked"
        want_enabled = rec.get("unit_file_state") in ENABLED_STATES
        want_running = rec.get("active_state") in RUNNING_STATES
        if state.masked and not want_masked:
            actions.append("unmask")
        elif want_masked and not state.masked:
            actions.append("mask")
        if not want_masked:
            now_enabled = state.enabled and not state.masked
            if want_enabled and not now_enabled:
                actions.append("enable")
            elif not want_enabled and now_enabled:
                actions.append("disable")
        if want_running and not state.running:
            actions.append("start")
        elif not want_running and state.running:
            actions.append("stop")
        units.append(
            {
                "unit": name,
                "actions": actions,
                "before": state.record(),
                "after": {k: rec.get(k, "") for k in ("unit_file_state", "active_state", "load_state")},
                "dependency": rec.get("via") not in (None, "PartOf="),
                "collateral": is_collateral(name, rec, layer),
            }
        )
    target = layer.get("default_target")
    return RestorePlan(
        units=units,
        default_target_before=default_target_now,
        default_target_after=target if target else default_target_now,
    )


def is_collateral(name: str, rec: dict[str, Any], layer: dict[str, Any]) -> bool:
    """Whether a journaled unit went down only as collateral of the run: through a dependency (its record's
    ``via``: ``PartOf=``, ``Requires=``, ..., ``observed``) or listed in the layer's ``collateral``. A journal
    written before either key existed has neither: every unit in it counts as named."""
    return bool(rec.get("via")) or name in (layer.get("collateral") or [])


def verify_restored(
    layer: dict[str, Any],
    states: dict[str, UnitState],
    default_target: str | None,
    not_running_ok: Any = (),
) -> list[str]:
    """Problems left after a restore (empty: restored). ``not_running_ok``: units whose not running again is
    reported by the caller instead (collateral units that did not start)."""
    problems = []
    for name, rec in sorted((layer.get("units") or {}).items()):
        state = states[name]
        if not state.exists:
            continue
        want_running = rec.get("active_state") in RUNNING_STATES
        if state.running != want_running and not (want_running and name in not_running_ok):
            problems.append(f"{name} is {state.active_state}, journal says {rec.get('active_state')}")
        want_masked = rec.get("unit_file_state") in MASKED_STATES
        want_enabled = rec.get("unit_file_state") in ENABLED_STATES
        if state.masked != want_masked or (not want_masked and state.enabled != want_enabled):
            problems.append(f"{name} is {state.unit_file_state}, journal says {rec.get('unit_file_state')}")
    target = layer.get("default_target")
    if target and target != default_target:
        problems.append(f"default target is {default_target}, journal says {target}")
    return problems


def diff_text(entries: list[dict[str, Any]], target_before: str | None, target_after: str | None) -> tuple[str, str]:
    """``--diff`` before/after text: one line per unit, ``unit: unit_file_state/active_state``."""
    before_lines, after_lines = [], []
    for entry in entries:
        if not entry["actions"]:
            continue
        b, a = entry["before"], entry["after"]
        before_lines.append(f"{entry['unit']}: {b['unit_file_state']}/{b['active_state']}")
        after_lines.append(f"{entry['unit']}: {a['unit_file_state']}/{a['active_state']}")
    if target_before != target_after:
        before_lines.append(f"default.target: {target_before}")
        after_lines.append(f"default.target: {target_after}")
    return "\n".join(before_lines) + ("\n" if before_lines else ""), "\n".join(after_lines) + (
        "\n" if after_lines else ""
    )
