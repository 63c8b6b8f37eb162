# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side helpers shared by the collection's action plugins."""

from __future__ import annotations

from typing import Any


def run_action(plugin: Any, name: str, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
    """Another action plugin (``ansible.legacy.reboot``, ``copy``, ``wait_for_connection``) run from ``plugin`` with
    its task's connection, become and check mode, and ``args``."""
    task = plugin._task.copy()
    task.args = args
    other = plugin._shared_loader_obj.action_loader.get(
        name, task=task, connection=plugin._connection, play_context=plugin._play_context, loader=plugin._loader,
        templar=plugin._templar, shared_loader_obj=plugin._shared_loader_obj)  # fmt: skip
    return other.run(task_vars=task_vars)


def reboot_args(msg: str, timeout: int, post_reboot_delay: int, boot_time_command: str = "",
                reboot_command: str = "") -> dict[str, Any]:  # fmt: skip
    """ansible.builtin.reboot's arguments for the collection's own reboots (the engine's, the capsule's): an empty
    boot_time_command or reboot_command leaves the module's default."""
    args: dict[str, Any] = {"msg": msg, "reboot_timeout": timeout, "post_reboot_delay": post_reboot_delay}
    if boot_time_command:
        args["boot_time_command"] = boot_time_command
    if reboot_command:
        args["reboot_command"] = reboot_command
    return args
