#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: engine
short_description: The slimming engine on the device - probe (read-only), then apply in one run
version_added: 0.1.0
description:
  - Runs on the device, called twice by its action plugin of the same name (C(edgeslim.jetson.engine) in a task runs
    the action plugin, which resolves the profile on the controller and calls this module).
  - V(probe) reads everything the plan needs and changes nothing - the management link (the interface carrying
    the play's SSH connection, found from C(SSH_CONNECTION) of the nearest ancestor process, so it works under
    become), the local graphical sessions in use (when O(services.check_display)), the exact unit plan of
    M(edgeslim.jetson.units) in check mode (protected units refused here, the carriers of the management link
    among them), the journald drop-in change and the memory each unit that would stop holds.
  - V(apply) plans again, measures the "before" snapshot (meminfo and the memory of every unit about to stop),
    journals the previous states, applies the unit batch and verifies it, writes the journald drop-in and restarts
    journald, then waits for MemAvailable to settle (adaptive, see O(measure)) and measures the "after" snapshot.
    It returns the services layer's report record.
  - On any error after the first change, V(apply) restores the units, the default target and the drop-in from the
    journal before failing, and says what it restored (or that the restore failed and the journal is kept).
  - Only the services layer for now; a later C(boot) option will carry the boot layers in the same two runs.
author: edgeslim maintainers (@edgeslim)
options:
  phase:
    description:
      - V(probe) (read-only) or V(apply). Set by the action plugin, which runs one or both; a task does not set it.
    type: str
    required: true
    choices: [probe, apply]
  profile:
    description:
      - Controller side only. The resolved C(edgeslim_profile); the action plugin selects its blocks from
        C(ansible_run_tags)/C(ansible_skip_tags), turns it into O(services) and never sends it to the device.
    type: dict
  services:
    description: The services layer's request. Omit to leave the services layer alone.
    type: dict
    suboptions:
      disable:
        description: Units to stop and disable (see M(edgeslim.jetson.units)).
        type: list
        elements: str
        default: []
      mask:
        description: Units to stop and mask.
        type: list
        elements: str
        default: []
      keep:
        description: Units never touched.
        type: list
        elements: str
        default: []
      protected:
        description: Units (or patterns) refused before any change; adds to the module's core set.
        type: list
        elements: str
        default: []
      default_target:
        description: V(multi-user.target) or V(graphical.target); omit to leave it alone.
        type: str
      companions:
        description: Also act on the sockets, paths and timers that trigger a listed unit.
        type: bool
        default: true
      blocks:
        description: Unit name to the profile block that asked for it (journaled and reported).
        type: dict
        default: {}
      selected_blocks:
        description: Names of the profile blocks of this run, reported in the record's C(details.blocks).
        type: list
        elements: str
        default: []
      journald:
        description: C([Journal]) settings for the edgeslim drop-in; V({}) writes none.
        type: dict
        default: {}
      journald_dropin:
        description: The drop-in file owned by edgeslim.
        type: path
        default: /etc/systemd/journald.conf.d/60-edgeslim.conf
      check_display:
        description: Probe the local graphical sessions in use (C(loginctl)); the action plugin refuses to go
          headless while one is active.
        type: bool
        default: true
      verify_delay:
        description: Seconds to wait after the unit changes before verifying them.
        type: float
        default: 1.0
  journal_path:
    description: On-device journal file.
    type: path
    default: /var/lib/edgeslim/journal.json
  management_interface:
    description:
      - Interface the controller reaches the device on; overrides the one found from the SSH connection. Its
        carrier units are protected for the run.
    type: str
  measure:
    description: How V(apply) measures.
    type: dict
    default: {}
    suboptions:
      samples:
        description: meminfo readings per snapshot (median); also the stable window of the settle.
        type: int
        default: 3
      interval:
        description: Seconds between readings.
        type: float
        default: 1.0
      settle_timeout:
        description: Longest wait, in seconds, for MemAvailable to settle after the changes.
        type: float
        default: 30
      stable_kb:
        description: Settled when O(measure.samples) consecutive readings of MemAvailable lie within this many kB.
        type: int
        default: 2048
      drop_caches:
        description: Drop the page cache before each snapshot (real hosts only, not containers).
        type: bool
        default: false
      boot_id_command:
        description: argv printing the boot identity; default the kernel's boot_id.
        type: list
        elements: str
      meminfo_path:
        description: meminfo file (tests point it at a fixture).
        type: path
        default: /proc/meminfo
attributes:
  check_mode:
    description: V(probe) is read-only; V(apply) in check mode returns the plan without changing anything.
    support: full
  diff_mode:
    description: One line per unit (state before and after), the default target and the journald drop-in.
    support: full
  platform:
    description: Linux with systemd.
    support: full
    platforms: posix
seealso:
  - module: edgeslim.jetson.units
  - module: edgeslim.jetson.memory_snapshot
"""

EXAMPLES = r"""
- name: Services layer of the resolved profile (the action plugin probes, then applies once)
  edgeslim.jetson.engine:
    profile: "{{ edgeslim_profile }}"
    services:
      companions: true
      check_display: true
    measure:
      settle_timeout: 30
  register: engine

- name: The record
  ansible.builtin.debug:
    var: engine.report.services
"""

RETURN = r"""
phase:
  description: The phase that ran.
  returned: always
  type: str
management:
  description: The management link, C(null) when the play does not arrive over SSH.
  returned: always
  type: dict
  sample: {address: 10.0.0.5, interface: eth0, source: "SSH_CONNECTION of process 812 (sudo)"}
display:
  description: Local graphical user sessions in use (C(checked) false when not probed).
  returned: always
  type: dict
  sample: {checked: true, sessions_in_use: ["Id=c2 Name=nvidia Type=x11 Class=user Remote=no Active=yes Seat=seat0"]}
services:
  description:
    - The services plan (probe) or outcome (apply) - C(units), C(absent), C(kept), C(stopped), C(stopped_with),
      C(default_target), C(commands), C(journald), C(changes), C(unit_memory) and C(systemctl_calls).
    - With V(apply) also C(record), the layer's report record, and C(snapshots) (before, after).
  returned: when O(services) is given
  type: dict
stage:
  description: On failure, what failed (C(plan), C(apply), C(input)).
  returned: on failure
  type: str
restored:
  description: On a failed V(apply) after the first change, whether everything was restored from the journal.
  returned: on failure after a change
  type: bool
restore_error:
  description: Why the restore failed (the journal is kept).
  returned: when the restore failed
  type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import journald_dropin as dropin
from ansible_collections.edgeslim.jetson.plugins.module_utils import units_apply as ua
from ansible_collections.edgeslim.jetson.plugins.module_utils.hostguards import graphical_sessions, management_link
from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import JournalError, load_journal_fallback
from ansible_collections.edgeslim.jetson.plugins.module_utils.memsnap import (
    SnapshotError,
    boot_identity,
    build_snapshot,
    drop_caches,
    read_meminfo,
    sample_meminfo,
    sampling_options,
    settle,
    units_memory,
    utc_now,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import layer_record
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError
from ansible_collections.edgeslim.jetson.plugins.module_utils.units_apply import RunError, Runner, UnitsFailure

LAYER = "services"
JOURNALD_UNIT = "systemd-journald.service"

SERVICES_SPEC = {
    **ua.REQUEST_OPTIONS,
    "selected_blocks": {"type": "list", "elements": "str", "default": []},
    "journald": {"type": "dict", "default": {}},
    "journald_dropin": {"type": "path", "default": "/etc/systemd/journald.conf.d/60-edgeslim.conf"},
    "check_display": {"type": "bool", "default": True},
    "verify_delay": {"type": "float", "default": 1.0},
}
MEASURE_SPEC = {
    **sampling_options(samples=3),
    "settle_timeout": {"type": "float", "default": 30.0},
    "stable_kb": {"type": "int", "default": 2048},
}
ARGUMENT_SPEC = {
    "phase": {"type": "str", "required": True, "choices": ["probe", "apply"]},
    "profile": {"type": "dict"},
    "services": {"type": "dict", "options": SERVICES_SPEC},
    "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
    "management_interface": {"type": "str"},
    "measure": {"type": "dict", "options": MEASURE_SPEC, "default": {}},
}


class EngineFailure(Exception):
    def __init__(self, msg: str, stage: str, **extra: Any) -> None:
        super().__init__(msg)
        self.msg, self.stage, self.extra = msg, stage, extra


def check_input(p: dict[str, Any]) -> None:
    """Bad input is refused before anything is read or changed."""
    if p["profile"] is not None:
        raise EngineFailure("profile is resolved on the controller: run edgeslim.jetson.engine as a task", "input")
    m = p["measure"]
    if m["samples"] < 1:
        raise EngineFailure(f"measure.samples must be >= 1, got {m['samples']}", "input")
    for key in ("interval", "settle_timeout", "stable_kb"):
        if m[key] < 0:
            raise EngineFailure(f"measure.{key} must be >= 0, got {m[key]}", "input")
    s = p["services"]
    if s is not None:
        if s["verify_delay"] < 0:
            raise EngineFailure(f"services.verify_delay must be >= 0, got {s['verify_delay']}", "input")
        try:
            dropin.render(s["journald"])
        except dropin.DropinError as exc:
            raise EngineFailure(f"services.journald: {exc}", "input") from exc


def units_request(s: dict[str, Any], interface: str | None) -> ua.UnitsRequest:
    try:
        return ua.UnitsRequest.from_params(s, interface)
    except UnitsError as exc:
        raise EngineFailure(str(exc), "input") from exc


def journald_plan(s: dict[str, Any]) -> dict[str, Any]:
    path = s["journald_dropin"]
    if not s["journald"]:
        return {"path": path, "requested": False, "changed": False, "before": None, "after": None}
    try:
        before = dropin.current(path)
    except dropin.DropinError as exc:
        raise EngineFailure(str(exc), "plan") from exc
    after = dropin.render(s["journald"])
    return {"path": path, "requested": True, "changed": before != after, "before": before, "after": after}


def plan_services(
    module: AnsibleModule, runner: Runner, s: dict[str, Any], interface: str | None
) -> tuple[Any, dict[str, Any]]:
    """The unit plan (refusals raise, stage ``plan``) plus the journald drop-in change."""
    req = units_request(s, interface)
    try:
        plan, result = ua.plan_units(runner, req)
    except UnitsFailure as exc:
        raise EngineFailure(exc.msg, "plan", **exc.extra) from exc
    except (RunError, UnitsError) as exc:
        raise EngineFailure(f"cannot read unit states: {exc}", "plan") from exc
    result["journald"] = journald_plan(s)
    result["changes"] = plan.changes or result["journald"]["changed"]
    return plan, result


def attributed(units: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {n: units[n] for n in names if n in units and units[n]["memory_kb"] > 0}


def mb(kb: float) -> float:
    return round(kb / 1024.0, 1)


def probe(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    link = management_link(module, p["management_interface"])
    s = p["services"]
    out: dict[str, Any] = {"phase": "probe", "changed": False, "management": link}
    out["display"] = {"checked": False, "sessions_in_use": []}
    if s is None:
        return out
    if s["check_display"]:
        out["display"] = {"checked": True, "sessions_in_use": graphical_sessions(module)}
    _plan, result = plan_services(module, runner, s, (link or {}).get("interface"))
    try:
        memory, _missing = units_memory(module, result["stopped"] + list(result["stopped_with"]))
    except SnapshotError as exc:
        raise EngineFailure(str(exc), "plan") from exc
    result["unit_memory"] = memory
    result["systemctl_calls"] = runner.calls
    out["services"] = result
    out["diff"] = services_diff(result)
    return out


def services_diff(result: dict[str, Any]) -> list[dict[str, str]]:
    diffs = [result.pop("diff")]
    j = result["journald"]
    if j["changed"]:
        diffs.append(
            {"before": j["before"] or "", "after": j["after"], "before_header": j["path"], "after_header": j["path"]}
        )
    return diffs


def unchanged_record(s: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    details = {
        "blocks": s["selected_blocks"],
        "absent": result["absent"],
        "kept": result["kept"],
        "default_target": result["default_target"],
    }
    return layer_record("unchanged", "MemAvailable", details)


def snapshot(module: AnsibleModule, m: dict[str, Any], readings: list, units: list[str], settled: float) -> dict:
    memory, missing = units_memory(module, units)
    now = utc_now()
    return build_snapshot(readings, now, boot_identity(module, m["boot_id_command"]), memory, missing, settled, False)


def apply(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    s, m = p["services"], p["measure"]
    out: dict[str, Any] = {"phase": "apply", "changed": False, "management": None}
    out["display"] = {"checked": False, "sessions_in_use": []}
    if s is None:
        return out
    link = management_link(module, p["management_interface"])
    out["management"] = link
    plan, result = plan_services(module, runner, s, (link or {}).get("interface"))
    out["services"] = result
    out["diff"] = services_diff(result)
    if not result["changes"]:
        result["record"] = unchanged_record(s, result)
        return out
    if module.check_mode:
        return out
    j = result["journald"]
    try:
        if m["drop_caches"]:
            drop_caches(module)
        about_to_stop = result["stopped"] + list(result["stopped_with"])
        before = snapshot(module, m, sample_meminfo(m["meminfo_path"], m["samples"], m["interval"]), about_to_stop, 0)
    except SnapshotError as exc:
        raise EngineFailure(f"before snapshot: {exc}; nothing changed", "apply") from exc
    extra = {"journald_dropin": {"path": j["path"], "previous": j["before"]}} if j["changed"] else None
    try:
        ua.journal_plan(module, runner, plan, p["journal_path"], LAYER, extra)
    except UnitsFailure as exc:
        raise EngineFailure(exc.msg, "apply", **exc.extra) from exc
    # From here on the host changes: any error restores the journal before failing.
    try:
        if plan.changes:
            ua.run_plan(runner, plan, result, p["journal_path"], LAYER, s["verify_delay"])
        if j["changed"]:
            dropin.write(j["path"], j["after"], replace=module.atomic_move)
            runner.run([runner.systemctl, "restart", JOURNALD_UNIT])
        if m["drop_caches"]:
            drop_caches(module)
        readings, settled = settle(
            lambda: read_meminfo(m["meminfo_path"]), m["settle_timeout"], m["interval"], m["stable_kb"], m["samples"]
        )
        after = snapshot(module, m, readings, [], settled["seconds"])
    except (UnitsFailure, RunError, UnitsError, SnapshotError, dropin.DropinError, OSError) as exc:
        failed = exc.extra if isinstance(exc, UnitsFailure) else {}
        msg = exc.msg if isinstance(exc, UnitsFailure) else str(exc)
        undo = rollback(module, runner, p["journal_path"])
        raise EngineFailure(msg, "apply", **{**failed, **undo, "changed": True}) from exc
    result["systemctl_calls"] = runner.calls
    result["snapshots"] = {"before": before, "after": after}
    result["record"] = applied_record(s, result, before, after, settled)
    out["changed"] = True
    return out


def applied_record(
    s: dict[str, Any], result: dict[str, Any], before: dict, after: dict, settled: dict[str, Any]
) -> dict[str, Any]:
    """The layer's report record (docs/report.md, layer ``services``)."""
    taken = attributed(before["units"], result["stopped"])
    with_it = attributed(before["units"], list(result["stopped_with"]))
    delta = after["meminfo_kb"]["MemAvailable"] - before["meminfo_kb"]["MemAvailable"]
    return layer_record(
        "applied",
        "MemAvailable",
        reclaimed_mb=mb(delta),
        attributed_mb=mb(sum(u["memory_kb"] for u in taken.values())),
        details={
            "check_mode": False,
            "blocks": s["selected_blocks"],
            "units": result["units"],
            "stopped": result["stopped"],
            # went down through Requires=/Requisite=/BindsTo= of a planned unit: measured apart, not attributed
            "stopped_with": result["stopped_with"],
            "stopped_with_mb": mb(sum(u["memory_kb"] for u in with_it.values())),
            "absent": result["absent"],
            "kept": result["kept"],
            "default_target": result["default_target"],
            "attribution_mb": {n: mb(u["memory_kb"]) for n, u in taken.items()},
            "unit_memory": taken,
            "boot_id": after["boot_id"],
            "systemctl_calls": result["systemctl_calls"],
            "settle": settled,
        },
    )


def rollback(module: AnsibleModule, runner: Runner, journal_path: str) -> dict[str, Any]:
    """Put the drop-in back, then every unit and the default target (the unit restore clears the journal layer
    last), then restart journald when its drop-in changed. Never raises: says what was restored or why not."""
    dropin_restored = False
    try:
        doc, _warning = load_journal_fallback(journal_path)
        saved = (doc["layers"].get(LAYER) or {}).get("journald_dropin")
        if saved:
            dropin_restored = dropin.restore(saved["path"], saved.get("previous"), replace=module.atomic_move)
        ua.restore_units(module, runner, journal_path, LAYER, False)
    except UnitsFailure as exc:
        return {"restored": False, "restore_error": exc.msg}
    except (JournalError, RunError, UnitsError, dropin.DropinError, OSError) as exc:
        return {"restored": False, "restore_error": str(exc)}
    out: dict[str, Any] = {"restored": True, "restore_error": "", "journald_restored": dropin_restored}
    if dropin_restored:
        rc, _out, err = runner.run([runner.systemctl, "restart", JOURNALD_UNIT], check=False)
        if rc != 0:
            out["restore_warning"] = f"the journald drop-in is back, but restarting journald failed: {err.strip()}"
    return out


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    runner = Runner(module, module.get_bin_path("systemctl", required=True))
    try:
        check_input(p)
        result = apply(module, runner) if p["phase"] == "apply" else probe(module, runner)
    except EngineFailure as exc:
        extra = dict(exc.extra)
        extra.setdefault("changed", False)
        extra.setdefault("systemctl_calls", runner.calls)
        extra.setdefault("commands", runner.ran)
        module.fail_json(msg=exc.msg, phase=p["phase"], stage=exc.stage, **extra)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
