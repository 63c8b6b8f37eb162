# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Canary batches of a rollout: normalising C(serial) / C(max_fail_percentage) values and planning the batches
exactly as Ansible's playbook executor does, so the guard and the report agree with what the play really ran.

Pure Python, no Ansible imports (controller side only, unit-tested on plain values).
"""

from __future__ import annotations

from typing import Any


def _item(value: Any) -> Any:
    """One serial entry: 1, "1" and 1.0 are the same batch size; percentages keep their text ("10%")."""
    if isinstance(value, bool):
        raise ValueError(f"not a batch size: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.endswith("%"):
        number = float(text[:-1])
        return f"{int(number) if number == int(number) else number}%"
    return int(float(text))


def normalize_serial(value: Any) -> list[Any]:
    """A serial value as the play keyword takes it: a scalar or a list; None and [] mean no batching."""
    if value is None or value == "":
        return []
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [_item(v) for v in value]


def normalize_percent(value: Any) -> float | None:
    """max_fail_percentage: a number or "N%"; None means no failure budget (Ansible's default)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a percentage: {value!r}")
    text = str(value).strip()
    return float(text[:-1] if text.endswith("%") else text)


def _pct_to_int(value: Any, num_items: int) -> int:
    # Same rule as ansible.utils.helpers.pct_to_int (min_value 1).
    if isinstance(value, str) and value.endswith("%"):
        return int((float(value[:-1]) / 100.0) * num_items) or 1
    return int(value)


def plan_batches(serial: Any, num_hosts: int) -> list[int]:
    """Batch sizes for ``num_hosts`` hosts, as PlaybookExecutor._get_serialized_batches splits them."""
    sizes: list[int] = []
    items = normalize_serial(serial) or [-1]
    left, cur = num_hosts, 0
    while left > 0:
        size = _pct_to_int(items[cur], num_hosts)
        size = left if size <= 0 else min(size, left)
        sizes.append(size)
        left -= size
        cur = min(cur + 1, len(items) - 1)
    return sizes
