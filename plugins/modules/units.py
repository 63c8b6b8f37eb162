#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: units
short_description: Stop, disable or mask a whole list of systemd units in one call, journaled for rollback
version_added: 0.1.0
description:
  - Applies a complete unit plan (for example the C(services) part of an C(edgeslim_profile)) with one
    C(systemctl show) for all units and a few batched C(systemctl mask --now), C(systemctl disable --now),
    C(systemctl stop) and C(systemctl set-default) calls, instead of one task per unit.
  - Before anything changes, the previous state of every unit it will touch (unit file state such as
    enabled/disabled/static/masked/indirect, active state) and the previous default target are written to the
    on-device journal (atomic JSON, one layer per collection role; see docs/journal.md).
  - Aliases are resolved through systemd (C(gdm3) acts on C(gdm.service)); units that trigger a unit (its
    sockets, paths and timers, systemd's C(TriggeredBy)) follow it so that it cannot re-spawn; units that are
    C(PartOf=) a listed unit (systemd's C(ConsistsOf)) are stopped with it and journaled, so restore starts them
    again and RV(stopped) lists them for memory attribution; units that do not exist on the host are reported in
    RV(absent) and are not an error.
  - Protected units (under any of their alias names) are refused before any change, and so are running units
    that refuse a manual stop.
  - After applying, the final states are read back and verified; a mismatch fails the task (the journal still
    holds the previous states, so O(state=restore) undoes everything).
  - O(state=restore) brings every journaled unit and the default target back to the recorded state, verifies it
    and then removes the layer from the journal. Running it again does nothing.
author: edgeslim maintainers (@edgeslim)
options:
  state:
    description:
      - V(present) applies the plan; V(restore) restores from the journal.
    type: str
    choices: [present, restore]
    default: present
  disable:
    description:
      - Units to stop and disable. Names without a suffix get C(.service).
      - Static units cannot be disabled; they are stopped and a note says to mask them.
    type: list
    elements: str
    default: []
  mask:
    description:
      - Units to stop and mask (C(systemctl mask --now)). Wins over O(disable) for the same unit.
      - A unit whose file lives in C(/etc/systemd/system) or C(/run/systemd/system) cannot be masked; it is
        disabled instead, with a note.
    type: list
    elements: str
    default: []
  keep:
    description:
      - Units never touched even when listed in O(disable) or O(mask) (matched under any alias name).
    type: list
    elements: str
    default: []
  protected:
    description:
      - Units that must never be stopped, disabled or masked. Naming one (or one of its aliases) in O(disable) or
        O(mask) fails the task before anything changes.
      - An entry may be a shell-style pattern (C(*), C(?), C([...])), e.g. C(serial-getty@*.service).
    type: list
    elements: str
    default: []
  default_target:
    description:
      - Default target to set (for example V(multi-user.target) for headless). Omit to leave it alone.
    type: str
  companions:
    description:
      - Also act on the units that trigger each listed unit (C(TriggeredBy)), with the same action.
    type: bool
    default: true
  blocks:
    description:
      - Optional map of unit name to the profile block that asked for it; stored in the journal and returned.
    type: dict
    default: {}
  journal_path:
    description:
      - On-device journal file.
    type: path
    default: /var/lib/edgeslim/journal.json
  layer:
    description:
      - Journal layer this module owns.
    type: str
    default: services
  verify_delay:
    description:
      - Seconds to wait after the changes before reading the final states back, so that a unit brought back by
        something outside the plan (a vendor watchdog, a dependency) is caught instead of reported as stopped.
      - Only spent when something changed.
    type: float
    default: 1.0
notes:
  - Check mode and C(--diff) show the exact plan (one line per unit, C(unit_file_state/active_state) before and
    after) and the argv lists that would run.
  - The full effect of a default target change needs a reboot; the units are stopped immediately.
seealso:
  - module: ansible.builtin.systemd_service
attributes:
  check_mode:
    description: Reads every state and returns the exact plan and the argv lists; changes nothing, writes no journal.
    support: full
  diff_mode:
    description: One line per unit, C(unit_file_state/active_state) before and after, plus the default target.
    support: full
  platform:
    description: Linux with systemd (C(systemctl) on the managed host).
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Go headless without the camera daemon
  edgeslim.jetson.units:
    mask: [gdm3, nvargus-daemon]
    disable: [avahi-daemon, ModemManager]
    protected: [ssh.service, sshd.service, nvgetty.service]
    default_target: multi-user.target

- name: Apply the resolved profile
  edgeslim.jetson.units:
    disable: "{{ edgeslim_profile.services.disable }}"
    mask: "{{ edgeslim_profile.services.mask }}"
    keep: "{{ edgeslim_profile.services.keep }}"
    protected: "{{ edgeslim_profile.protected }}"
    default_target: "{{ edgeslim_profile.services.default_target }}"

- name: Put every unit back as it was
  edgeslim.jetson.units:
    state: restore
"""

RETURN = r"""
units:
  description: Per-unit plan and outcome, keyed by canonical unit name.
  returned: always
  type: dict
  sample:
    gdm.service:
      requested: [gdm3.service]
      actions: [mask]
      before: {unit_file_state: static, active_state: active, load_state: loaded}
      after: {unit_file_state: masked, active_state: inactive, load_state: loaded}
      notes: [gdm3.service is an alias of gdm.service]
absent:
  description: Requested units that do not exist on this host (not an error).
  returned: always
  type: list
  elements: str
kept:
  description: Requested units left alone because of O(keep).
  returned: always
  type: list
  elements: str
stopped:
  description: Canonical names of the units that were running and are stopped by this plan.
  returned: always
  type: list
  elements: str
default_target:
  description: Default target before and after.
  returned: always
  type: dict
  sample: {before: graphical.target, after: multi-user.target}
commands:
  description: The systemctl argv lists run (or, in check mode, that would run).
  returned: always
  type: list
  elements: list
journal_path:
  description: Journal file used.
  returned: always
  type: str
restored:
  description: With O(state=restore), whether a journal layer existed and was restored and cleared.
  returned: when state is restore
  type: bool
"""

import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import (
    JournalError,
    load_journal,
    update_layer,
    utc_now,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import (
    UnitsError,
    compute_plan,
    compute_restore,
    diff_text,
    match_states,
    merge_layer,
    normalize_protected,
    normalize_unit,
    normalize_units,
    parse_show,
    show_argv,
    verify_applied,
    verify_restored,
)


class Runner:
    """Runs systemctl argv lists through the module; counts calls (returned as ``systemctl_calls``)."""

    def __init__(self, module: AnsibleModule, systemctl: str) -> None:
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

    def default_target(self) -> str | None:
        rc, out, _err = self.run([self.systemctl, "get-default"], check=False)
        return out.strip() or None if rc == 0 else None


class RunError(Exception):
    def __init__(self, argv: list[str], rc: int, out: str, err: str) -> None:
        super().__init__(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}")
        self.argv, self.rc, self.out, self.err = argv, rc, out, err


def _fail(module: AnsibleModule, runner: Runner, msg: str, **extra: Any) -> None:
    module.fail_json(msg=msg, systemctl_calls=runner.calls, commands=runner.ran, **extra)


def apply(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    try:
        disable = normalize_units(p["disable"], "disable")
        mask = normalize_units(p["mask"], "mask")
        keep = normalize_units(p["keep"], "keep")
        protected = normalize_protected(p["protected"])
        default_target = normalize_unit(p["default_target"]) if p["default_target"] else None
        blocks = {normalize_unit(k): str(v) for k, v in (p["blocks"] or {}).items()}
    except UnitsError as exc:
        module.fail_json(msg=str(exc))
    requested = mask + [u for u in disable if u not in mask]
    # 1. one `systemctl show` for every requested unit, plus one for the units they bring along that the caller did
    #    not list: trigger companions (TriggeredBy: sockets/paths/timers, same action) and PartOf= parts
    #    (ConsistsOf: they stop with the unit; stopped and journaled so that restore starts them again).
    states = runner.states(requested)
    companions: dict[str, str] = {}
    parts: list[str] = []
    for name in requested:
        state = states[name]
        if not state.exists or (set(state.names) | {name}) & set(keep):
            continue
        extra = [(t, False) for t in state.triggered_by] if p["companions"] else []
        extra += [(c, True) for c in state.consists_of]
        for unit, is_part in extra:
            if unit not in states and unit not in companions:
                companions[unit] = name
                if is_part:
                    parts.append(unit)
    if companions:
        states.update(runner.states(list(companions)))
        for unit, parent in companions.items():
            if unit not in parts:
                (mask if parent in mask else disable).append(unit)
    target_before = runner.default_target()
    plan = compute_plan(
        states,
        disable,
        mask,
        keep,
        protected,
        target_before,
        default_target,
        companions=companions,
        blocks=blocks,
        stop=parts,
    )
    if plan.errors:
        _fail(module, runner, "refusing to change anything: " + "; ".join(plan.errors), errors=plan.errors)
    entries = [u.as_dict() for u in plan.units]
    commands = plan.commands(runner.systemctl)
    before_text, after_text = diff_text(entries, plan.default_target_before, plan.default_target_after)
    result: dict[str, Any] = {
        "changed": plan.changes,
        "units": {e["unit"]: e for e in entries},
        "absent": plan.absent,
        "kept": plan.kept,
        "stopped": [e["unit"] for e in entries if e["actions"] and e["before"] != e["after"] and _was_stopped(e)],
        "default_target": {"before": plan.default_target_before, "after": plan.default_target_after},
        "commands": commands,
        "journal_path": p["journal_path"],
        "diff": _diff(before_text, after_text),
    }
    if module.check_mode or not plan.changes:
        result["systemctl_calls"] = runner.calls
        return result
    # 2. journal BEFORE any change (first record of a unit wins, see merge_layer).
    try:
        update_layer(
            p["journal_path"], p["layer"], lambda old: merge_layer(old, plan, utc_now()), replace=module.atomic_move
        )
    except JournalError as exc:
        _fail(module, runner, f"cannot journal the previous states, nothing changed: {exc}")
    # 3. batched changes
    try:
        for argv in commands:
            runner.ran.append(argv)
            runner.run(argv)
    except RunError as exc:
        after = _safe_states(runner, [e["unit"] for e in entries])
        _fail(
            module,
            runner,
            f"{exc}. Previous states are in {p['journal_path']} (layer {p['layer']}); "
            "run edgeslim.jetson.units with state=restore to undo the partial change",
            units=result["units"],
            current=after,
        )
    # 4. verify (after a short delay: catch units that something restarts behind our back)
    time.sleep(max(0.0, p["verify_delay"]))
    final = runner.states([e["unit"] for e in entries])
    target_now = runner.default_target()
    problems = verify_applied(plan, final, target_now)
    if problems:
        _fail(module, runner, "verification failed after apply: " + "; ".join(problems), units=result["units"])
    result["systemctl_calls"] = runner.calls
    return result


def _diff(before: str, after: str) -> dict[str, str]:
    return {"before": before, "after": after, "before_header": "systemd units", "after_header": "systemd units"}


def _was_stopped(entry: dict[str, Any]) -> bool:
    return entry["before"]["active_state"] != entry["after"]["active_state"]


def _safe_states(runner: Runner, units: list[str]) -> dict[str, Any]:
    try:
        return {k: v.record() for k, v in runner.states(units).items()}
    except (RunError, UnitsError) as exc:
        return {"error": str(exc)}


def restore(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    try:
        layer = load_journal(p["journal_path"])["layers"].get(p["layer"])
    except JournalError as exc:
        module.fail_json(msg=f"cannot read the journal: {exc}")
    base: dict[str, Any] = {"journal_path": p["journal_path"], "absent": [], "kept": [], "stopped": []}
    if not layer:
        return {**base, "changed": False, "restored": False, "units": {}, "commands": [], "default_target": {}}
    names = sorted((layer.get("units") or {}).keys())
    try:
        states = runner.states(names)
    except UnitsError as exc:
        module.fail_json(msg=f"cannot read unit states: {exc}")
    target_now = runner.default_target()
    rplan = compute_restore(layer, states, target_now)
    entries = rplan.as_dict()["units"]
    commands = rplan.commands(runner.systemctl)
    before_text, after_text = diff_text(entries, rplan.default_target_before, rplan.default_target_after)
    result = {
        **base,
        "changed": True,  # at least the journal layer is cleared
        "restored": True,
        "units": {e["unit"]: e for e in entries},
        "default_target": {"before": rplan.default_target_before, "after": rplan.default_target_after},
        "commands": commands,
        "diff": _diff(before_text, after_text),
    }
    if module.check_mode:
        result["systemctl_calls"] = runner.calls
        return result
    try:
        for argv in commands:
            runner.ran.append(argv)
            runner.run(argv)
    except RunError as exc:
        _fail(module, runner, f"restore failed: {exc}; the journal layer is kept", units=result["units"])
    final = runner.states(names)
    problems = verify_restored(layer, final, runner.default_target())
    if problems:
        _fail(module, runner, "restore incomplete, journal layer kept: " + "; ".join(problems), units=result["units"])
    try:
        update_layer(p["journal_path"], p["layer"], lambda _old: None, replace=module.atomic_move)
    except JournalError as exc:
        _fail(module, runner, f"units restored but the journal layer could not be cleared: {exc}")
    result["systemctl_calls"] = runner.calls
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "restore"], "default": "present"},
            "disable": {"type": "list", "elements": "str", "default": []},
            "mask": {"type": "list", "elements": "str", "default": []},
            "keep": {"type": "list", "elements": "str", "default": []},
            "protected": {"type": "list", "elements": "str", "default": []},
            "default_target": {"type": "str"},
            "companions": {"type": "bool", "default": True},
            "blocks": {"type": "dict", "default": {}},
            "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
            "layer": {"type": "str", "default": "services"},
            "verify_delay": {"type": "float", "default": 1.0},
        },
        supports_check_mode=True,
    )
    runner = Runner(module, module.get_bin_path("systemctl", required=True))
    try:
        result = restore(module, runner) if module.params["state"] == "restore" else apply(module, runner)
    except RunError as exc:
        _fail(module, runner, str(exc))
    except UnitsError as exc:
        _fail(module, runner, f"cannot read unit states: {exc}")
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
