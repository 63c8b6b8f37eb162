# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift: the device no longer matches what edgeslim applied and journaled (docs/metrics.md, "Drift").

Pure comparisons of the on-device journal (docs/journal.md) with what the device shows now:

- services: a unit the profile masked or disabled that is unmasked, enabled or running again (an apt upgrade's
  postinst re-enabling it, a hand-made ``systemctl enable --now``); a unit only stopped that runs again.
- boot entry: the managed extlinux entry a boot layer journaled is gone, DEFAULT no longer names it, or the SWIOTLB
  layer's ``swiotlb=`` argument is back to what the layer found before its change.
- carveouts: ``edgeslim.jetson.carveouts_info`` compares the live device tree with its capsule record; its result is
  passed through.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux import (
    ExtlinuxError,
    get_cmdline_arg,
    parse_extlinux,
)

BOOT_LAYERS = ("swiotlb", "carveouts")
ENABLED_STATES = ("enabled", "enabled-runtime", "linked", "linked-runtime")
MASKED_STATES = ("masked", "masked-runtime")
RUNNING_STATES = ("active", "activating", "reloading")


def journaled_units(services_layer: dict[str, Any] | None) -> list[str]:
    """Canonical names of the units the services layer recorded (what to read with ``systemctl show``)."""
    return sorted(((services_layer or {}).get("units") or {}).keys())


def services_drift(services_layer: dict[str, Any] | None, live: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """One record per journaled unit that is back: ``{"unit", "action", "now", "reason"}``.

    ``live`` maps a canonical unit name to ``systemctl show`` properties (``LoadState``, ``UnitFileState``,
    ``ActiveState``). A unit that no longer exists (``not-found``) or that ``live`` lacks is not drift.
    """
    found = []
    for unit, record in sorted(((services_layer or {}).get("units") or {}).items()):
        state = live.get(unit)
        if not state or state.get("LoadState") == "not-found":
            continue
        action = record.get("action")
        file_state = state.get("UnitFileState", "")
        active = state.get("ActiveState", "")
        reasons = []
        if action == "mask" and file_state not in MASKED_STATES:
            reasons.append(f"no longer masked (unit file state {file_state or 'unknown'})")
        elif action == "disable" and file_state in ENABLED_STATES:
            reasons.append(f"enabled again ({file_state})")
        if active in RUNNING_STATES:
            reasons.append(f"running again ({active})")
        if reasons:
            found.append(
                {
                    "unit": unit,
                    "action": action,
                    "now": {"unit_file_state": file_state, "active_state": active},
                    "reason": "; ".join(reasons),
                }
            )
    return found


def boot_drift(boot_layers: dict[str, dict[str, Any] | None], files: dict[str, str | None]) -> list[dict[str, Any]]:
    """Drift of the boot layers' managed entry. ``boot_layers`` maps a layer to its journal record (or None);
    ``files`` maps each record's ``path`` to that file's current text (None: unreadable or missing).

    One record per finding: ``{"layer", "path", "reason"}``.
    """
    found = []
    for layer in BOOT_LAYERS:
        record = boot_layers.get(layer)
        if not record:
            continue
        path = record.get("path") or "/boot/extlinux/extlinux.conf"
        label = record.get("managed_label") or "edgeslim"

        def add(reason: str, layer: str = layer, path: str = path) -> None:
            found.append({"layer": layer, "path": path, "reason": reason})

        text = files.get(path)
        if text is None:
            add("the boot configuration is missing or unreadable")
            continue
        try:
            conf = parse_extlinux(text, path)
        except ExtlinuxError as exc:
            add(f"the boot configuration no longer parses: {exc}")
            continue
        entry = conf.entry(label)
        if entry is None:
            add(f"the managed entry {label!r} is gone")
            continue
        if conf.default_label != label:
            add(f"DEFAULT is {conf.default_label!r}, not the managed entry {label!r}")
        owned = record.get("owned") or {}
        # Only what a layer always changes is compared with its pre-change value: the SWIOTLB layer always sets
        # swiotlb=. FDT, OVERLAYS and other arguments are not: a layer may record a value it then leaves as it was
        # (the carveouts layer with a merged DTB records OVERLAYS and writes none; a removed argument may have been
        # absent already).
        kernel_args = owned.get("kernel_args") or {}
        if layer == "swiotlb" and "swiotlb" in kernel_args:
            before = kernel_args["swiotlb"]
            if get_cmdline_arg(conf.get(entry, "APPEND") or "", "swiotlb") == before:
                was = "absent" if before is False else f"swiotlb={before}"
                add(f"kernel argument swiotlb of {label!r} is back to its value before edgeslim ({was})")
    return found
