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
