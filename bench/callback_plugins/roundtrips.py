"""Benchmark helper (not shipped): per host, the module runs that reached the device and the controller-side tasks.

A task result counts as a device module run when its action executed on the managed host: a module, `command`,
`copy`, `reboot` (one run: what it does on the device is one reboot), one per loop item that was not skipped.
Controller-side results are counted apart with their time: actions that never reach the host (set_fact, assert,
set_stats, validate_argument_spec, debug, ...) and any task delegated to the controller (delegate_to: localhost,
connection local). Skipped tasks and items count nowhere.

Writes $BENCH_ROUNDTRIPS_FILE at the end of the run:
  {"hosts": {host: {"device": n, "controller": n, "device_s": s, "controller_s": s, "by_action": {...}}},
   "tasks": {"device"|"controller": {task name: {"runs": n, "seconds": s, "category": ...}}}}
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: roundtrips
type: aggregate
short_description: count device module runs and controller-side tasks per host (edgeslim benchmark helper)
description:
  - Classifies each task result as a module run on the device or a controller-side task, times both per task name,
    and writes JSON to the file named by BENCH_ROUNDTRIPS_FILE at the end of the run.
requirements: [enable in callbacks_enabled]
"""

# Actions that run entirely in the controller's worker process: they never open a connection to the host.
CONTROLLER_ACTIONS = frozenset(
    {
        "add_host",
        "assert",
        "debug",
        "fail",
        "group_by",
        "include_role",
        "include_tasks",
        "include_vars",
        "import_role",
        "import_tasks",
        "meta",
        "pause",
        "rollout_guard",  # edgeslim's action plugin that compares canary settings (_requires_connection = False)
        "set_fact",
        "set_stats",
        "validate_argument_spec",
    }
)
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SYSTEMD_ACTIONS = frozenset({"units", "systemd", "systemd_service", "service"})


def short_action(action: str) -> str:
    """`ansible.builtin.set_fact` -> `set_fact`, `edgeslim.jetson.units` -> `units`."""
    return action.rsplit(".", 1)[-1]


def is_controller_side(action: str, delegated: dict | None) -> bool:
    """True when a result never reached the managed host: a controller-only action or a delegation to the controller.

    `delegated` is the result's `_ansible_delegated_vars` (absent unless the task was delegated). A delegation to
    another inventory host is still a run on a device; a simulated device reached over 127.0.0.1 by SSH is a device,
    so the address alone does not decide: the connection (local) or the implicit localhost name does.
    """
    if short_action(action) in CONTROLLER_ACTIONS:
        return True
    if not delegated:
        return False
    if delegated.get("ansible_connection") == "local":
        return True
    return delegated.get("ansible_delegated_host") in LOCAL_NAMES and delegated.get("ansible_connection") in (None, "")


# edgeslim.jetson.engine is an action plugin that runs its device module once per phase it needs in one task.
ENGINE_PHASES = ("probe", "apply", "verify", "finish", "rollback")


def device_runs(result: dict, action: str = "") -> int:
    """Device executions in one (non-skipped) result: one, or one per loop item that was not skipped; for the engine
    the module runs its result names (probe, apply, verify, finish, rollback) and the reboot it made (rebooted)."""
    if short_action(action) == "engine" and not result.get("skipped"):
        runs = sum(1 for phase in ENGINE_PHASES if isinstance(result.get(phase), dict))
        return runs + (1 if result.get("rebooted") is True else 0)
    items = result.get("results")
    if isinstance(items, list) and items:
        return sum(1 for item in items if not (isinstance(item, dict) and item.get("skipped")))
    return 0 if result.get("skipped") else 1


def category(action: str, args: dict, controller: bool) -> str:
    """Where a task's time goes: controller, settle (a snapshot that waits for memory to settle), systemd, device."""
    if controller:
        return "controller"
    name = short_action(action)
    try:
        settle = float(args.get("settle") or 0)
    except (TypeError, ValueError):
        settle = 0.0
    if settle > 0:
        return "settle"
    if name in SYSTEMD_ACTIONS:
        return "systemd"
    argv = args.get("argv") or str(args.get("_raw_params") or args.get("cmd") or "").split()
    if name in ("command", "shell") and argv and str(argv[0]).rsplit("/", 1)[-1] == "systemctl":
        return "systemd"
    return "device"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "roundtrips"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.hosts: dict[str, dict] = defaultdict(
            lambda: {"device": 0, "controller": 0, "device_s": 0.0, "controller_s": 0.0, "by_action": Counter()}
        )
        self.tasks: dict[str, dict[str, dict]] = {"device": {}, "controller": {}}
        self.started: dict[tuple[str, str], float] = {}

    def v2_runner_on_start(self, host, task) -> None:
        self.started[(host.get_name(), task._uuid)] = time.monotonic()

    def _record(self, result, skipped: bool = False) -> None:
        task, host = result._task, result._host.get_name()
        began = self.started.pop((host, task._uuid), None)
        if skipped:
            return
        seconds = time.monotonic() - began if began is not None else 0.0
        res = result._result
        controller = is_controller_side(task.action, res.get("_ansible_delegated_vars"))
        kind = "controller" if controller else "device"
        runs = 1 if controller else device_runs(res, task.action)
        stats = self.hosts[host]
        stats[kind] += runs
        stats[kind + "_s"] += seconds
        if not controller:
            stats["by_action"][short_action(task.action)] += runs
        # the module's own arguments as it ran them (templated); the task's as written when the module reports none
        args = (res.get("invocation") or {}).get("module_args") or task.args or {}
        row = self.tasks[kind].setdefault(
            task.get_name(), {"runs": 0, "seconds": 0.0, "category": category(task.action, args, controller)}
        )
        row["runs"] += runs
        row["seconds"] += seconds

    def v2_runner_on_ok(self, result, **_kwargs) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result, **_kwargs) -> None:
        self._record(result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result)

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats) -> None:
        path = os.environ.get("BENCH_ROUNDTRIPS_FILE")
        if not path:
            return
        hosts = {h: dict(v, by_action=dict(v["by_action"])) for h, v in self.hosts.items()}
        with open(path, "w") as handle:
            json.dump({"hosts": hosts, "tasks": self.tasks}, handle, indent=1, sort_keys=True)
