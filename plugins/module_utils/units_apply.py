# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan, apply and restore a systemd unit plan on the host: the one copy shared by ``edgeslim.jetson.units`` and
``edgeslim.jetson.engine``.

``systemd_units`` is the pure part (parsing, plans, verification); this file runs ``systemctl`` through an
``AnsibleModule`` (``run_command``, ``atomic_move``, ``warn``) and raises ``UnitsFailure`` with the message and the
extra result keys of a failure, so that each module decides how to fail (the engine restores first).
"""

from __future__ import annotations

import time
from typing import Any

# Upper bound of a batch's stop jobs (seconds): a unit's own TimeoutStopSec= still applies (systemd kills it then
# and marks it failed); past this deadline the batch fails and the engine restores.
DEFAULT_STOP_TIMEOUT = 120.0
STOP_POLL_INTERVAL = 0.5

from ansible_collections.edgeslim.jetson.plugins.module_utils import journald_dropin as dropin
from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import (
    JournalError,
    load_journal_fallback,
    update_layer,
    utc_now,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import (
    OBSERVED_TYPES,
    OBSERVED_VIA,
    Plan,
    UnitsError,
    UnitState,
    compute_plan,
    compute_restore,
    core_protected,
    diff_text,
    match_states,
    merge_layer,
    normalize_protected,
    normalize_unit,
    normalize_units,
    observed_record,
    parse_list_jobs,
    parse_list_units,
    parse_show,
    protected_by,
    show_argv,
    verify_applied,
    verify_restored,
)


class RunError(Exception):
    def __init__(self, argv: list[str], rc: int, out: str, err: str) -> None:
        super().__init__(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}")
        self.argv, self.rc, self.out, self.err = argv, rc, out, err


class UnitsFailure(Exception):
    """A unit plan that cannot go on: ``msg`` for the user, ``extra`` for the failed result."""

    def __init__(self, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


class Runner:
    """Runs systemctl argv lists through the module; counts calls (returned as ``systemctl_calls``)."""

    def __init__(self, module: Any, systemctl: str) -> None:
        self.module = module
        self.systemctl = systemctl
        self.calls = 0
        self.ran: list[list[str]] = []

    def run(self, argv: list[str], check: bool = True) -> tuple[int, str, str]:
        self.calls += 1
        rc, out, err = self.module.run_command(argv, environ_update={"SYSTEMD_PAGER": "", "LC_ALL": "C"})
        if check and rc != 0:
            raise RunError(argv, rc, out, err)
        return rc, out, err

    def states(self, units: list[str]) -> dict[str, Any]:
        if not units:
            return {}
        _rc, out, _err = self.run(show_argv(self.systemctl, units))
        return match_states(units, parse_show(out))

    def active_units(self) -> set[str]:
        """Every active unit of the types a batch can take down as dependencies (a unit still activating, e.g. a
        oneshot running, is left out: it goes inactive on its own)."""
        _rc, out, _err = self.run(
            [
                self.systemctl,
                "--no-pager",
                "list-units",
                "--plain",
                "--no-legend",
                "--full",
                "--state=active",
                "--type=" + ",".join(OBSERVED_TYPES),
            ]
        )
        return set(parse_list_units(out))

    def stop_jobs(self) -> list[str]:
        """Units with a queued or running stop job."""
        _rc, out, _err = self.run([self.systemctl, "--no-pager", "list-jobs", "--plain", "--no-legend", "--full"])
        return [unit for unit, kind, _state in parse_list_jobs(out) if kind == "stop"]

    def default_target(self) -> str | None:
        rc, out, _err = self.run([self.systemctl, "get-default"], check=False)
        return out.strip() or None if rc == 0 else None

    def failure(self, msg: str, **extra: Any) -> UnitsFailure:
        return UnitsFailure(msg, systemctl_calls=self.calls, commands=self.ran, **extra)


# argument_spec of a unit plan request, shared by every module that takes one (see UnitsRequest.from_params).
REQUEST_OPTIONS = {
    "disable": {"type": "list", "elements": "str", "default": []},
    "mask": {"type": "list", "elements": "str", "default": []},
    "keep": {"type": "list", "elements": "str", "default": []},
    "protected": {"type": "list", "elements": "str", "default": []},
    "default_target": {"type": "str"},
    "companions": {"type": "bool", "default": True},
    "blocks": {"type": "dict", "default": {}},
}


class UnitsRequest:
    """A unit plan request, normalized (raises ``UnitsError`` on bad names, before asking systemd anything)."""

    def __init__(
        self,
        disable: Any = None,
        mask: Any = None,
        keep: Any = None,
        protected: Any = None,
        default_target: str | None = None,
        companions: bool = True,
        blocks: dict[str, Any] | None = None,
        management_interface: str | None = None,
    ) -> None:
        self.disable = normalize_units(disable, "disable")
        self.mask = normalize_units(mask, "mask")
        self.keep = normalize_units(keep, "keep")
        self.protected = normalize_protected(protected)
        self.default_target = normalize_unit(default_target) if default_target else None
        self.blocks = {normalize_unit(k): str(v) for k, v in (blocks or {}).items()}
        self.companions = companions
        self.management_interface = management_interface

    @classmethod
    def from_params(cls, p: dict[str, Any], management_interface: str | None) -> UnitsRequest:
        """From module parameters named as the units module's options."""
        return cls(
            p["disable"],
            p["mask"],
            p["keep"],
            p["protected"],
            p["default_target"],
            p["companions"],
            p["blocks"],
            management_interface,
        )


def diff_dict(before: str, after: str, header: str = "systemd units") -> dict[str, str]:
    return {"before": before, "after": after, "before_header": header, "after_header": header}


def plan_units(runner: Runner, req: UnitsRequest) -> tuple[Plan, dict[str, Any]]:
    """Read every state the plan needs and compute it (read-only). A refusal raises ``UnitsFailure``."""
    disable, mask, keep = list(req.disable), list(req.mask), req.keep
    core = core_protected(req.management_interface)
    requested = mask + [u for u in disable if u not in mask]
    # One `systemctl show` for every requested unit, then one per level of the units they bring along that the
    # caller did not list: trigger companions (TriggeredBy: sockets/paths/timers, same action) and every unit
    # systemd stops with them (PartOf=/Requires=/Requisite=/BindsTo= them, transitively): those are stopped,
    # journaled so that restore starts them again, and refused when protected or kept.
    states = runner.states(requested)
    companions: dict[str, str] = {}
    via: dict[str, str] = {}
    parts: list[str] = []
    frontier = list(requested)
    while frontier:
        known = set(states) | {s.id for s in states.values()}
        found: dict[str, str] = {}
        for name in frontier:
            state = states[name]
            if not state.exists or (set(state.names) | {name}) & set(keep):
                continue
            if name in requested and req.companions:
                for unit in state.triggered_by:
                    if unit not in known and unit not in found:
                        found[unit] = name
                        (mask if name in mask else disable).append(unit)
            for unit, how in state.stops_with_it():
                if unit not in known and unit not in found:
                    found[unit] = name
                    via[unit] = how
                    parts.append(unit)
        if found:
            states.update(runner.states(list(found)))
            companions.update(found)
        frontier = list(found)
    target_before = runner.default_target()
    plan = compute_plan(
        states,
        disable,
        mask,
        keep,
        req.protected,
        target_before,
        req.default_target,
        companions=companions,
        blocks=req.blocks,
        stop=parts,
        core=core,
        via=via,
    )
    if plan.errors:
        raise runner.failure("refusing to change anything: " + "; ".join(plan.errors), errors=plan.errors)
    entries = [u.as_dict() for u in plan.units]
    stopped = [e for e in entries if e["actions"] and e["before"] != e["after"] and _was_stopped(e)]
    before_text, after_text = diff_text(entries, plan.default_target_before, plan.default_target_after)
    result: dict[str, Any] = {
        "changed": plan.changes,
        "units": {e["unit"]: e for e in entries},
        "absent": plan.absent,
        "kept": plan.kept,
        # Memory of the units the caller named (with their triggers and PartOf= parts) is attributed to the plan;
        # units that only went down through Requires=/Requisite=/BindsTo= are reported apart, in stopped_with.
        "stopped": [e["unit"] for e in stopped if e["via"] in (None, "PartOf=")],
        "stopped_with": {
            e["unit"]: {"by": e["companion_of"], "via": e["via"]} for e in stopped if e["via"] not in (None, "PartOf=")
        },
        "default_target": {"before": plan.default_target_before, "after": plan.default_target_after},
        "commands": plan.commands(runner.systemctl),
        "diff": diff_dict(before_text, after_text),
        "systemctl_calls": runner.calls,
    }
    return plan, result


def journal_plan(
    module: Any,
    runner: Runner,
    plan: Plan,
    journal_path: str,
    layer: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Journal the previous states BEFORE any change (first record of a unit wins, see merge_layer)."""
    try:
        update_layer(
            journal_path, layer, lambda old: merge_layer(old, plan, utc_now(), extra), replace=module.atomic_move
        )
    except JournalError as exc:
        raise runner.failure(f"cannot journal the previous states, nothing changed: {exc}") from exc


def run_plan(
    runner: Runner,
    plan: Plan,
    result: dict[str, Any],
    journal_path: str,
    layer: str,
    delay: float,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> None:
    """Run the batched commands of a journaled plan, wait for their stop jobs (at most ``stop_timeout`` s), then
    verify (after ``delay`` s: catch units that something restarts behind our back).

    Collateral: the units active before the batch and not after it has settled (stop jobs done, then ``delay``)
    that the request did not name -- the PartOf=/Requires=/... units the plan saw coming, and those only the
    comparison sees (``via: observed``, added to ``units`` and ``stopped_with``). Their names are journaled in the
    layer's ``collateral`` (observed ones with their previous state) before this returns, so that restore starts them
    again after the named units; they are reported in ``collateral`` with a warning naming them. A protected or core
    unit among them is started again at once and the apply fails (``record_collateral``).

    A unit of the plan that ends ``failed`` (its stop timed out and systemd killed it) is a warning, kept in
    ``stop_warnings`` and in its entry of ``units`` (``stop_result``)."""
    units = list(result["units"])
    try:
        active_before = runner.active_units()
        for argv in result["commands"]:
            runner.ran.append(argv)
            runner.run(argv)
        pending = wait_stop_jobs(runner, active_before | {u.unit for u in plan.units}, stop_timeout)
    except (RunError, UnitsError) as exc:
        raise runner.failure(
            f"{exc}. Previous states are in {journal_path} (layer {layer}); "
            "run edgeslim.jetson.units with state=restore to undo the partial change",
            units=result["units"],
            current=_safe_states(runner, units),
        ) from exc
    if pending:
        raise runner.failure(
            f"{', '.join(pending)} still stopping after {stop_timeout:g} s (stop_timeout); the stop job is left "
            f"to systemd (the unit's own TimeoutStopSec= applies). Previous states are in {journal_path} "
            f"(layer {layer})",
            units=result["units"],
            current=_safe_states(runner, units),
        )
    # settled: what exits on its own once its server is gone (no stop job) has had ``delay`` seconds to do so
    time.sleep(max(0.0, delay))
    states = record_collateral(runner, plan, result, journal_path, layer, active_before)
    states = {u: states[u] for u in units}
    problems = verify_applied(plan, states, runner.default_target())
    if problems:
        raise runner.failure("verification failed after apply: " + "; ".join(problems), units=result["units"])
    warnings = result.setdefault("stop_warnings", [])
    for name, state in sorted(states.items()):
        if state.active_state == "failed":
            msg = (
                f"{name} ended failed after its stop ({state.sub_state or 'failed'}): it did not exit on SIGTERM "
                "within its TimeoutStopSec= and systemd killed it, or its stop command failed; it is down, "
                "check `systemctl status` / `journalctl -u` for it"
            )
            result["units"][name]["stop_result"] = "failed"
            result["units"][name].setdefault("notes", []).append(msg)
            warnings.append(msg)
            runner.module.warn(msg)
    result["systemctl_calls"] = runner.calls


def wait_stop_jobs(runner: Runner, units: set[str], timeout: float) -> list[str]:
    """Wait until none of ``units`` has a stop job (``--no-block`` queued them); return those still stopping at
    the deadline (empty: all done)."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        pending = sorted(set(runner.stop_jobs()) & units)
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(min(STOP_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def named_units(plan: Plan) -> set[str]:
    """The units the request named: listed by the caller (any alias) or their trigger companions (disabled or
    masked with them); every other unit of the plan stops only through a dependency (its ``via``)."""
    named: set[str] = set()
    for unit in plan.units:
        if unit.via is None:
            named.add(unit.unit)
            named.update(unit.requested)
    return named


def record_collateral(
    runner: Runner, plan: Plan, result: dict[str, Any], journal_path: str, layer: str, active_before: set[str]
) -> dict[str, UnitState]:
    """Journal and report the collateral of the batch: units active before it, not active now, not named. Returns
    the states read (the plan's units and the collateral: one ``systemctl show``) for the verification.

    The plan's own dependency units (PartOf=/Requires=/...) are journaled already; the others (``via: observed``)
    are added with their previous state. Every collateral name goes into the layer's ``collateral`` list (atomic,
    fsynced journal write) before anything else happens. A protected or core unit among them (dbus, logind, ssh,
    ...) is started again at once and the apply fails: it must never go down through a dependency."""
    named = named_units(plan)
    planned = {u.unit: u for u in plan.units if u.via is not None}
    gone = sorted(active_before - runner.active_units() - named)
    units = list(result["units"])
    read = runner.states(units + [g for g in gone if g not in units])
    result["collateral"] = {}
    states = {n: read[n] for n in gone}
    states = {n: s for n, s in states.items() if s.exists and not s.running and s.id not in named}
    collateral: dict[str, dict[str, Any]] = {}
    for state in states.values():
        unit = planned.get(state.id)
        if unit is not None:
            collateral[state.id] = {"by": unit.companion_of, "via": unit.via, "state": state.active_state}
        else:
            collateral[state.id] = {"by": None, "via": OBSERVED_VIA, "state": state.active_state}
    result["collateral"] = dict(sorted(collateral.items()))
    if not collateral:
        return read
    records = {s.id: observed_record(s) for s in states.values() if s.id not in planned}

    def add(old: dict[str, Any] | None) -> dict[str, Any]:
        new = dict(old or {})
        journaled = dict(new.get("units") or {})
        for name, rec in records.items():
            journaled.setdefault(name, rec)
        new["units"] = journaled
        new["collateral"] = sorted(set(new.get("collateral") or []) | set(collateral))
        new["updated"] = utc_now()
        return new

    try:
        update_layer(journal_path, layer, add, replace=runner.module.atomic_move)
    except JournalError as exc:
        raise runner.failure(
            f"{', '.join(collateral)} went down with the batch but could not be journaled: {exc}",
            units=result["units"],
            collateral=result["collateral"],
        ) from exc
    for name, state in sorted(states.items()):
        if state.id in planned:
            continue
        result["stopped_with"][state.id] = {"by": None, "via": OBSERVED_VIA}
        result["units"][state.id] = {
            "unit": state.id,
            "requested": [],
            "want": "stop",
            "actions": [],
            "before": {**state.record(), "active_state": "active"},
            "after": state.record(),
            "notes": [f"{name}: stopped by systemd as a dependency of the batch (no command named it)"],
            "companion_of": None,
            "block": None,
            "via": OBSERVED_VIA,
        }
    described = ", ".join(
        f"{name} ({c['via']}{' ' + c['by'] if c['by'] else ''}, now {c['state']})"
        for name, c in result["collateral"].items()
    )
    msg = (
        f"collateral: {described} went down with the batch although the run did not name them; journaled in "
        f"{journal_path} (layer {layer}): rollback starts them again after the named units"
    )
    result["collateral_warning"] = msg
    runner.module.warn(msg)
    guarded = {s.id: protected_by(set(s.names) | {s.id}, plan.protected) for s in states.values() if s.id in collateral}
    guarded = {unit: hit for unit, hit in guarded.items() if hit}
    if guarded:
        raise_protected_collateral(runner, result, guarded)
    return read


def raise_protected_collateral(runner: Runner, result: dict[str, Any], guarded: dict[str, list[str]]) -> None:
    """Start the protected/core units that went down as collateral again at once, then fail (the caller restores
    the rest from the journal)."""
    units = sorted(guarded)
    argv = [runner.systemctl, "start", "--", *units]
    runner.ran.append(argv)
    rc, _out, err = runner.run(argv, check=False)
    back = runner.states(units)
    down = sorted(n for n, s in back.items() if not s.running)
    how = "; ".join(f"{u} (protected by {', '.join(guarded[u])})" for u in units)
    if down:
        outcome = f"starting them again failed for {', '.join(down)}: {(err or f'rc={rc}').strip()}"
    else:
        outcome = "started them again at once"
    raise runner.failure(
        f"protected unit went down as collateral of the batch: {how}; {outcome}. A protected or core unit must "
        "never go down through a dependency: failing the host (the rest of the change is restored from the "
        "journal by the engine, or by edgeslim.jetson.units state=restore)",
        units=result["units"],
        collateral=result["collateral"],
        collateral_protected=units,
        collateral_restarted=[u for u in units if u not in down],
    )


def _was_stopped(entry: dict[str, Any]) -> bool:
    return entry["before"]["active_state"] != entry["after"]["active_state"]


def _safe_states(runner: Runner, units: list[str]) -> dict[str, Any]:
    try:
        return {k: v.record() for k, v in runner.states(units).items()}
    except (RunError, UnitsError) as exc:
        return {"error": str(exc)}


def restore_units(module: Any, runner: Runner, journal_path: str, layer_name: str, check_mode: bool) -> dict[str, Any]:
    """Bring every journaled unit and the default target back, verify, clear the layer (``restored``: whether a
    layer existed). A caller that journaled more than units restores that first: the layer is gone afterwards."""
    # A damaged journal is not the end of a rollback: its copy (<journal>.prev) holds the same generation.
    try:
        doc, warning = load_journal_fallback(journal_path)
    except JournalError as exc:
        raise UnitsFailure(f"cannot read the journal: {exc}") from exc
    layer = doc["layers"].get(layer_name)
    if warning:
        module.warn(warning)
    base: dict[str, Any] = {
        "journal_path": journal_path,
        "absent": [],
        "kept": [],
        "stopped": [],
        "stopped_with": {},
        "collateral": [],
        "collateral_failed": [],
    }
    if warning:
        base["journal_warning"] = warning
    if not layer:
        return {**base, "changed": False, "restored": False, "units": {}, "commands": [], "default_target": {}}
    names = sorted((layer.get("units") or {}).keys())
    try:
        states = runner.states(names)
    except UnitsError as exc:
        raise UnitsFailure(f"cannot read unit states: {exc}") from exc
    rplan = compute_restore(layer, states, runner.default_target())
    entries = rplan.as_dict()["units"]
    before_text, after_text = diff_text(entries, rplan.default_target_before, rplan.default_target_after)
    result = {
        **base,
        "changed": True,  # at least the journal layer is cleared
        "restored": True,
        "units": {e["unit"]: e for e in entries},
        "default_target": {"before": rplan.default_target_before, "after": rplan.default_target_after},
        "commands": rplan.commands(runner.systemctl),
        "diff": diff_dict(before_text, after_text),
        # started again after the units they depend on: they had gone down only as dependencies
        "restarted_dependencies": [e["unit"] for e in entries if e.get("dependency") and "start" in e["actions"]],
        # every unit the run stopped without naming it (PartOf= parts too) that was down: started after the others
        "collateral": rplan.collateral_starts,
        "collateral_failed": [],
    }
    if check_mode:
        result["systemctl_calls"] = runner.calls
        return result
    try:
        for argv in rplan.named_commands(runner.systemctl):
            runner.ran.append(argv)
            runner.run(argv)
    except RunError as exc:
        raise runner.failure(f"restore failed: {exc}; the journal layer is kept", units=result["units"]) from exc
    # The collateral after the named units, each checked on its own: one that does not start is reported, the
    # others still start and the restore goes on.
    errors: list[str] = []
    for argv in rplan.collateral_commands(runner.systemctl):
        runner.ran.append(argv)
        rc, out, err = runner.run(argv, check=False)
        if rc != 0:
            errors.append((err or out).strip() or f"{' '.join(argv)}: rc={rc}")
    after = runner.states(names)
    failed = {u: after[u].active_state for u in rplan.collateral_starts if not after[u].running}
    result["collateral_failed"] = [
        {"unit": u, "active_state": state, "error": "; ".join(e for e in errors if u in e) or "; ".join(errors)}
        for u, state in sorted(failed.items())
    ]
    problems = verify_restored(layer, after, runner.default_target(), not_running_ok=failed)
    if problems:
        raise runner.failure("restore incomplete, journal layer kept: " + "; ".join(problems), units=result["units"])
    if failed:
        msg = (
            f"collateral not started again: {', '.join(f'{u} ({s})' for u, s in sorted(failed.items()))}; the "
            "units the run named are restored; check `systemctl status` / `journalctl -u` for these"
        )
        result["collateral_warning"] = msg
        module.warn(msg)
    try:
        notes: list[str] = []
        update_layer(
            journal_path,
            layer_name,
            lambda _old: None,
            replace=module.atomic_move,
            fallback=warning is not None,
            warnings=notes,
        )
        for note in notes:
            module.warn(note)
    except JournalError as exc:
        raise runner.failure(f"units restored but the journal layer could not be cleared: {exc}") from exc
    result["systemctl_calls"] = runner.calls
    return result


JOURNALD_UNIT = "systemd-journald.service"


def rollback_services(module: Any, runner: Runner, journal_path: str, layer_name: str = "services") -> dict[str, Any]:
    """The engine's services layer back (its apply's failure path, and the deadline restore of a run whose controller
    vanished): the journald drop-in, then every unit and the default target (restore_units clears the journal layer
    last), then journald restarted when its drop-in changed. Never raises: says what was restored or why not."""
    dropin_restored = False
    try:
        doc, _warning = load_journal_fallback(journal_path)
        saved = (doc["layers"].get(layer_name) or {}).get("journald_dropin")
        if saved:
            dropin_restored = dropin.restore(saved["path"], saved.get("previous"), replace=module.atomic_move)
        restored = restore_units(module, runner, journal_path, layer_name, False)
    except UnitsFailure as exc:
        return {"restored": False, "restore_error": exc.msg}
    except (JournalError, RunError, UnitsError, dropin.DropinError, OSError) as exc:
        return {"restored": False, "restore_error": str(exc)}
    out: dict[str, Any] = {
        "restored": True,
        "restore_error": "",
        "layer_restored": restored["restored"],  # whether the journal had the layer
        "journald_restored": dropin_restored,
        "units": restored.get("units", {}),
        "default_target": restored.get("default_target", {}),
        "restarted_dependencies": restored.get("restarted_dependencies", []),
        "collateral": restored.get("collateral", []),
        "collateral_failed": restored.get("collateral_failed", []),
    }
    for key in ("collateral_warning", "journal_warning", "diff"):
        if restored.get(key):
            out[key] = restored[key]
    if dropin_restored:
        rc, _out, err = runner.run([runner.systemctl, "restart", JOURNALD_UNIT], check=False)
        if rc != 0:
            out["restore_warning"] = f"the journald drop-in is back, but restarting journald failed: {err.strip()}"
    return out
