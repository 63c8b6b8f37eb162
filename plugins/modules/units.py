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
  - Every unit systemd would stop together with a unit of the plan (its reverse C(PartOf=), C(Requires=),
    C(Requisite=) and C(BindsTo=) dependencies, transitively, read with C(systemctl show -p
    ConsistsOf,RequiredBy,RequisiteOf,BoundBy)) is part of the plan. When one is protected or kept the task fails
    before any change; otherwise it is journaled (so restore starts it again) and reported in RV(stopped_with),
    not in RV(stopped).
  - Protected units (under any of their alias names) are refused before any change, and so are running units
    that refuse a manual stop. A built-in core set is always protected, whatever O(protected) says (it only adds
    to it) - ssh/sshd (service and socket), dbus (service and socket), systemd-journald and its sockets,
    systemd-logind, nv-l4t-bootloader-config, l4t-rootfs-validation-config, console gettys (nvgetty,
    serial-getty@*, getty@*) and the units carrying O(management_interface).
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
      - Adds to the built-in core set, which cannot be lifted (see the description).
    type: list
    elements: str
    default: []
  management_interface:
    description:
      - Network interface the controller reaches the device on (for example V(eth0), V(wlan0), V(wwp0s20f0u6i12)).
      - The units that carry it join the protected core set for this run, by interface name
        (C(ww*)/C(ppp*)/C(cdc-wdm*) WWAN -> ModemManager, NetworkManager; C(wl*) -> wpa_supplicant, NetworkManager,
        iwd; C(l4tbr*)/C(usb*)/C(rndis*) -> nv-l4t-usb-device-mode; C(eth*)/C(en*)/C(mgbe*)/C(eqos*)/C(br*)/
        C(bond*)/C(vlan*) -> NetworkManager, systemd-networkd, networking).
    type: str
  default_target:
    description:
      - Default target to set, V(multi-user.target) (headless) or V(graphical.target). Omit to leave it alone.
      - Any other target (rescue, emergency, poweroff, reboot, ...) is refused.
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
  stop_timeout:
    description:
      - Upper bound, in seconds, of the wait for the batch's stop jobs (queued with C(--no-block); the units stop
        in parallel, so this bounds every unit). A unit's own C(TimeoutStopSec=) still applies first - systemd
        kills a unit that ignores C(SIGTERM) and marks it C(failed), which is reported as a warning.
      - A stop job still running at the deadline fails the task (previous states are in the journal).
    type: float
    default: 120.0
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
  description:
    - Canonical names of the units that were running and are stopped by this plan - the listed units, their
      trigger companions and their C(PartOf=) parts; the memory they held is attributed to the plan.
  returned: always
  type: list
  elements: str
stopped_with:
  description:
    - Running units that go down only because a unit of the plan stops (C(Requires=), C(Requisite=), C(BindsTo=)
      it), with the unit that takes each down and the directive. Journaled and restarted by restore; their memory is
      not attributed to the plan.
    - A unit active before the batch and inactive after it that no command named is added with C(via=observed)
      (and C(by=null)) after comparing C(systemctl list-units --state=active) before and after.
  returned: always
  type: dict
  sample: {avahi-daemon.service: {by: avahi-daemon.socket, via: Requires=}}
stop_warnings:
  description:
    - Units that ended C(failed) after their stop (killed after C(TimeoutStopSec=)), one message each; the unit
      entry in RV(units) has C(stop_result=failed).
  returned: when something changed
  type: list
  elements: str
collateral:
  description:
    - With O(state=present), every unit active before the batch and not active once it settled (stop jobs done,
      then O(verify_delay)) that the request did not name - the C(PartOf=)/C(Requires=)/... units of the plan and
      the units seen going down with it (C(via=observed)) - with C(by), C(via) and its C(state) now. Their names are
      journaled in the layer's C(collateral) list before the module returns; a warning names them. A protected or
      core unit among them is started again at once and the module fails.
    - With O(state=restore), the collateral units that were down and were started again, after the named units.
  returned: when something changed, and with O(state=restore)
  type: raw
  sample: {gnome-session-desktop.service: {by: gdm.service, via: "PartOf=", state: inactive}}
collateral_failed:
  description:
    - With O(state=restore), the collateral units that did not start again (C(unit), C(active_state), C(error)),
      reported with a warning, not fatal - the named units are restored and the journal layer is cleared.
  returned: when state is restore
  type: list
  elements: dict
collateral_warning:
  description: The warning naming the collateral units (apply), or those that did not start again (restore).
  returned: when there were any
  type: str
restarted_dependencies:
  description: With O(state=restore), units started again that had gone down only as dependencies (started last).
  returned: when state is restore and a layer existed
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
journal_warning:
  description: With O(state=restore), set when the journal was unreadable and its copy C(<journal>.prev) was used.
  returned: when the copy was used
  type: str
restored:
  description: With O(state=restore), whether a journal layer existed and was restored and cleared.
  returned: when state is restore
  type: bool
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError
from ansible_collections.edgeslim.jetson.plugins.module_utils.units_apply import (
    DEFAULT_STOP_TIMEOUT,
    REQUEST_OPTIONS,
    RunError,
    Runner,
    UnitsFailure,
    UnitsRequest,
    journal_plan,
    plan_units,
    restore_units,
    run_plan,
)


def apply(module: AnsibleModule, runner: Runner) -> dict[str, Any]:
    p = module.params
    try:
        req = UnitsRequest.from_params(p, p["management_interface"])
    except UnitsError as exc:
        module.fail_json(msg=str(exc))
    plan, result = plan_units(runner, req)
    result["journal_path"] = p["journal_path"]
    if module.check_mode or not plan.changes:
        return result
    journal_plan(module, runner, plan, p["journal_path"], p["layer"])
    run_plan(runner, plan, result, p["journal_path"], p["layer"], p["verify_delay"], p["stop_timeout"])
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "restore"], "default": "present"},
            **REQUEST_OPTIONS,
            "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
            "layer": {"type": "str", "default": "services"},
            "management_interface": {"type": "str"},
            "verify_delay": {"type": "float", "default": 1.0},
            "stop_timeout": {"type": "float", "default": DEFAULT_STOP_TIMEOUT},
        },
        supports_check_mode=True,
    )
    p = module.params
    runner = Runner(module, module.get_bin_path("systemctl", required=True))
    try:
        if p["state"] == "restore":
            result = restore_units(module, runner, p["journal_path"], p["layer"], module.check_mode)
        else:
            result = apply(module, runner)
    except UnitsFailure as exc:
        module.fail_json(msg=exc.msg, **exc.extra)
    except RunError as exc:
        module.fail_json(msg=str(exc), systemctl_calls=runner.calls, commands=runner.ran)
    except UnitsError as exc:
        module.fail_json(msg=f"cannot read unit states: {exc}", systemctl_calls=runner.calls, commands=runner.ran)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
