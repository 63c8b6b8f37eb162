# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.module_utils.rollout import normalize_percent, normalize_serial


class ActionModule(ActionBase):
    """Compares the canary settings a host's variables ask for with the ones the running play was built with."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("serial", "max_fail_percentage"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        play = self._task.get_play()
        # The play's keywords were templated (post_validate) before its first batch: these are the values it runs.
        used = {
            "serial": normalize_serial(play.serial),
            "max_fail_percentage": normalize_percent(play.max_fail_percentage),
        }
        result.update(changed=False, play=used)
        refusals = []
        for key, normalize in (("serial", normalize_serial), ("max_fail_percentage", normalize_percent)):
            if key not in self._task.args:
                continue
            try:
                wanted = normalize(self._task.args[key])
            except (TypeError, ValueError) as exc:
                refusals.append(f"edgeslim_{key} {self._task.args[key]!r} is not valid: {exc}")
                continue
            if wanted != used[key]:
                refusals.append(f"edgeslim_{key} is {wanted!r} for this host but the play runs with {used[key]!r}")
        if refusals:
            result.update(
                failed=True,
                refusals=refusals,
                msg="; ".join(refusals)
                + ". Ansible templates serial and max_fail_percentage before it reads the inventory, so a value in"
                " group_vars or host_vars is never used: pass it as an extra variable (-e edgeslim_serial=...,"
                " -e edgeslim_max_fail_percentage=..., or the extra variables of an AWX/AAP job template) and remove"
                " it from the inventory. Nothing was changed.",
            )
        return result
