# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of ``edgeslim.jetson.engine``: everything that needs no device runs here, then the device
module runs at most twice - ``probe`` (read-only), and ``apply`` once when the probe shows something to do.

- Profile blocks are selected from ``ansible_run_tags``/``ansible_skip_tags``: ``--tags no_camera`` = only that
  block, ``--skip-tags headless`` = all but that one, ``all``/``services`` = every block of the profile; the unit
  lists, default target and journald settings of the selected blocks go to the module. Nothing selected: the layer
  is ``skipped`` without touching the device.
- Refusals before any change: the module's (protected units, bad input) and a local graphical session in use when
  the plan changes the default target (``services.check_display``).
- Check mode stops after the probe: status ``planned``, ``changed`` = whether apply would change something, the
  probe's diff.

Returns ``report: {services: <record>}`` (the layer's record, docs/report.md) and the raw ``probe``/``apply``.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import layer_record

MODULE = "edgeslim.jetson.engine"
REFUSED_DISPLAY = "Refuse to go headless while a graphical session is in use"
REFUSED_PLAN = "Plan the unit changes (read-only; refuses protected units before any change)"
FAILED_APPLY = "Apply the services plan (journal written before any change)"
SKIP_REASON = "no unit, default target or journald setting in the selected profile blocks"


def select_services(profile: dict[str, Any], run_tags: list[str], skip_tags: list[str]) -> dict[str, Any]:
    """The services request of the profile blocks this run selects (see the module docstring)."""
    services = profile.get("services") or {}
    blocks = list(profile.get("blocks") or [])
    if "all" not in run_tags and "services" not in run_tags:
        blocks = [b for b in blocks if b in run_tags]
    blocks = [b for b in blocks if b not in skip_tags]
    units: list[str] = []
    for block in blocks:
        for unit in (services.get("blocks") or {}).get(block) or []:
            if unit not in units:
                units.append(unit)
    target_block = services.get("default_target_block")
    journald = profile.get("journald") or {}
    journald = journald if "journal_volatile" in blocks else {}
    return {
        "selected_blocks": blocks,
        "disable": [u for u in services.get("disable") or [] if u in units],
        "mask": [u for u in services.get("mask") or [] if u in units],
        "keep": list(services.get("keep") or []),
        "protected": list(profile.get("protected") or []),
        "default_target": services.get("default_target") if target_block and target_block in blocks else None,
        "blocks": {name: info.get("block") for name, info in (services.get("units") or {}).items()},
        "journald": dict(journald),
        "requested": bool(units) or bool(target_block and target_block in blocks) or bool(journald),
    }


def record(status: str, **details: Any) -> dict[str, Any]:
    return layer_record(status, "MemAvailable", details)


def display_refusal(probe: dict[str, Any]) -> str | None:
    """The refusal message when the plan changes the default target while a local graphical session is in use."""
    target = probe["services"]["default_target"]
    sessions = probe.get("display", {}).get("sessions_in_use") or []
    if not sessions or target["before"] == target["after"]:
        return None
    return (
        f"refusing to switch the default target to {target['after']}: a local graphical session is active "
        f"({'; '.join(sessions)}). Log the user out, or set services_check_display=false to override. "
        "Nothing was changed."
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("profile", "services", "journal_path", "management_interface", "measure"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        profile = args.pop("profile", None)
        if not isinstance(profile, dict) or not isinstance(profile.get("services"), dict):
            return {**result, "failed": True, "msg": "profile must be a resolved edgeslim_profile (a mapping)"}
        selection = select_services(
            profile, list(task_vars.get("ansible_run_tags") or ["all"]), list(task_vars.get("ansible_skip_tags") or [])
        )
        blocks = selection["selected_blocks"]
        result.update(changed=False, probe=None, apply=None)
        if not selection.pop("requested"):
            result["report"] = {"services": record("skipped", blocks=blocks, reason=SKIP_REASON)}
            return result
        module_args = {k: v for k, v in args.items() if v is not None}
        module_args["services"] = {**(args.get("services") or {}), **selection}
        probe = self._execute_module(MODULE, module_args={**module_args, "phase": "probe"}, task_vars=task_vars)
        result["probe"] = probe
        if probe.get("failed"):
            return self._refused(result, REFUSED_PLAN, probe.get("msg", "probe failed"))
        refusal = display_refusal(probe) if module_args["services"].get("check_display", True) else None
        if refusal:
            return self._refused(result, REFUSED_DISPLAY, refusal)
        plan = probe["services"]
        if not plan["changes"]:
            result["report"] = {
                "services": record(
                    "unchanged",
                    blocks=blocks,
                    absent=plan["absent"],
                    kept=plan["kept"],
                    default_target=plan["default_target"],
                )
            }
            return result
        if self._task.check_mode:
            result["changed"] = True
            result["diff"] = probe.get("diff", [])
            result["report"] = {
                "services": record(
                    "planned",
                    check_mode=True,
                    blocks=blocks,
                    units=plan["units"],
                    stopped=plan["stopped"],
                    stopped_with=plan["stopped_with"],
                    absent=plan["absent"],
                    kept=plan["kept"],
                    default_target=plan["default_target"],
                    unit_memory=plan["unit_memory"],
                    commands=plan["commands"],
                )
            }
            return result
        applied = self._execute_module(MODULE, module_args={**module_args, "phase": "apply"}, task_vars=task_vars)
        result["apply"] = applied
        result["diff"] = applied.get("diff", [])
        if applied.get("failed"):
            if not applied.get("changed"):
                return self._refused(result, REFUSED_PLAN if applied.get("stage") == "plan" else FAILED_APPLY,
                                     applied.get("msg", "apply failed"))  # fmt: skip
            restored = bool(applied.get("restored"))
            result.update(failed=True, changed=True, msg=applied.get("msg", "apply failed"))
            result["report"] = {
                "services": record(
                    "rolled_back" if restored else "failed",
                    failed_task=FAILED_APPLY,
                    error=result["msg"],
                    restore_error="" if restored else applied.get("restore_error", "?"),
                )
            }
            return result
        result["changed"] = bool(applied.get("changed"))
        result["report"] = {"services": applied["services"]["record"]}
        return result

    def _refused(self, result: dict[str, Any], stage: str, msg: str) -> dict[str, Any]:
        result.update(failed=True, changed=False, msg=msg)
        result["report"] = {"services": record("failed", changed=False, failed_task=stage, error=msg)}
        return result
