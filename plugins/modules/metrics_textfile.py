#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: metrics_textfile
short_description: Write edgeslim's node_exporter textfile-collector file, with the device's drift from the journal
version_added: 0.1.0
description:
  - Writes one Prometheus text-format file for node_exporter's textfile collector (C(--collector.textfile.directory))
    atomically - a temporary file in the same directory, then a rename, so the collector never reads half a file.
    The directory is created when missing.
  - Series (docs/metrics.md) - C(edgeslim_info{version}), C(edgeslim_last_run_timestamp_seconds{playbook}),
    C(edgeslim_last_run_result{playbook,result}), C(edgeslim_reclaimed_bytes{layer}),
    C(edgeslim_reboot_pending{layer}), C(edgeslim_drift{kind}).
  - A per-layer or drift figure given as null is carried over from the previous file, so an audit keeps the last
    slim run's reclaim.
  - With O(drift_check), compares the on-device journal with the device in the same run (one C(systemctl show) for
    the journaled units, the journaled boot configuration files) - services drift (a masked or disabled unit enabled
    or running again) and boot entry drift (the managed entry gone, DEFAULT moved, C(swiotlb=) back to its stock
    value). Carveouts drift comes from M(edgeslim.jetson.carveouts_info) through O(carveouts_drift).
author: edgeslim maintainers (@edgeslim)
options:
  path:
    description: The file to write. Its name must end in C(.prom) (the collector reads nothing else).
    type: path
    default: /var/lib/node_exporter/textfile_collector/edgeslim.prom
  playbook:
    description: The playbook this run is.
    type: str
    required: true
    choices: [slim, rollback, audit]
  result:
    description: The run's result on this host.
    type: str
    default: ok
    choices: [ok, failed, rolled_back]
  version:
    description: The edgeslim collection version.
    type: str
    required: true
  layers:
    description:
      - Per layer (C(services), C(swiotlb), C(carveouts)) - C(reclaimed_bytes) (number) and C(pending_reboot)
        (bool). A missing or null figure is carried over from the previous file.
      - C(pending_reboot=flip) is for a boot entry restored without a reboot - the opposite of the previous file's
        value (a change staged and never booted leaves nothing pending; one the device booted into waits for a
        reboot back); true when the previous file has no value.
    type: dict
    default: {}
  carveouts_drift:
    description: Carveouts drift found by M(edgeslim.jetson.carveouts_info). Null carries the previous value over.
    type: bool
  drift_check:
    description: Check services and boot entry drift against the journal (see the description).
    type: bool
    default: true
  journal_path:
    description: On-device journal.
    type: path
    default: /var/lib/edgeslim/journal.json
  timestamp:
    description: Unix time of the run. Default is now on the device.
    type: int
notes:
  - The file is mode 0644 (node_exporter runs unprivileged); the directory is created 0755.
seealso:
  - module: edgeslim.jetson.carveouts_info
attributes:
  check_mode:
    description: Computes the file and the drift and returns them; writes nothing.
    support: full
  diff_mode:
    description: The previous and the new file.
    support: full
  platform:
    description: Linux with systemd.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Record the run for Prometheus
  edgeslim.jetson.metrics_textfile:
    playbook: slim
    version: 0.1.0
    result: ok
    layers:
      services: {reclaimed_bytes: 367001600, pending_reboot: false}
      swiotlb: {reclaimed_bytes: null, pending_reboot: true}

- name: Audit - drift into the file and into the report
  edgeslim.jetson.metrics_textfile:
    playbook: audit
    version: 0.1.0
    carveouts_drift: false
  register: audit_metrics
"""

RETURN = r"""
path:
  description: The file.
  returned: always
  type: str
content:
  description: The file's content (written, or in check mode what would be written).
  returned: always
  type: str
drift:
  description: Per kind (C(services), C(boot_entry), C(carveouts)), true/false, or null when unknown.
  returned: always
  type: dict
  sample: {services: true, boot_entry: false, carveouts: null}
drift_details:
  description: The findings behind RV(drift).
  returned: always
  type: dict
  sample:
    services:
      - {unit: nvargus-daemon.service, action: mask, now: {unit_file_state: enabled, active_state: active},
         reason: "no longer masked (unit file state enabled); running again (active)"}
    boot_entry:
      - {layer: swiotlb, path: /boot/extlinux/extlinux.conf,
         reason: "DEFAULT is 'primary', not the managed entry 'edgeslim'"}
warnings_list:
  description: What could not be read (drift of that kind left unknown), also emitted as warnings.
  returned: always
  type: list
  elements: str
"""

import os
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.edgeslim.jetson.plugins.module_utils import drift as dr
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics as mt
from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import JournalError, load_journal
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import (
    UnitsError,
    parse_show,
    show_argv,
)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _live_units(module: AnsibleModule, units: list[str]) -> dict[str, dict[str, str]]:
    systemctl = module.get_bin_path("systemctl", required=True)
    rc, out, err = module.run_command(show_argv(systemctl, units), environ_update={"SYSTEMD_PAGER": "", "LC_ALL": "C"})
    if rc != 0:
        raise UnitsError(f"systemctl show failed (rc {rc}): {err.strip()[:200]}")
    blocks = parse_show(out)
    if len(blocks) != len(units):
        raise UnitsError(f"systemctl show returned {len(blocks)} blocks for {len(units)} units")
    return dict(zip(units, blocks))


def check_drift(module: AnsibleModule, journal_path: str, warnings: list[str]) -> tuple[dict[str, Any], dict]:
    drift: dict[str, Any] = {"services": None, "boot_entry": None}
    details: dict[str, Any] = {}
    try:
        doc = load_journal(journal_path)
    except JournalError as exc:
        warnings.append(f"drift not checked: {exc}")
        return drift, details
    layers = doc["layers"]
    units = dr.journaled_units(layers.get("services"))
    try:
        live = _live_units(module, units) if units else {}
        details["services"] = dr.services_drift(layers.get("services"), live)
        drift["services"] = bool(details["services"])
    except UnitsError as exc:
        warnings.append(f"services drift not checked: {exc}")
    boot = {layer: layers.get(layer) for layer in dr.BOOT_LAYERS}
    paths = {(r.get("path") or "/boot/extlinux/extlinux.conf") for r in boot.values() if r}
    details["boot_entry"] = dr.boot_drift(boot, {p: _read(p) for p in paths})
    drift["boot_entry"] = bool(details["boot_entry"])
    return drift, details


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": mt.DEFAULT_PATH},
            "playbook": {"type": "str", "required": True, "choices": list(mt.PLAYBOOKS)},
            "result": {"type": "str", "default": "ok", "choices": list(mt.RESULTS)},
            "version": {"type": "str", "required": True},
            "layers": {"type": "dict", "default": {}},
            "carveouts_drift": {"type": "bool"},
            "drift_check": {"type": "bool", "default": True},
            "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
            "timestamp": {"type": "int"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not p["path"].endswith(".prom"):
        module.fail_json(
            msg=f"path {p['path']} must end in .prom: node_exporter's textfile collector reads nothing else"
        )
    layers: dict[str, dict[str, Any]] = {}
    for layer, record in (p["layers"] or {}).items():
        if layer not in mt.LAYERS:
            module.fail_json(msg=f"layers: unknown layer {layer!r} (known: {', '.join(mt.LAYERS)})")
        if record is not None and not isinstance(record, dict):
            module.fail_json(msg=f"layers.{layer} must be a dict, got {type(record).__name__}")
        record = record or {}
        unknown = sorted(set(record) - {"reclaimed_bytes", "pending_reboot"})
        if unknown:
            module.fail_json(msg=f"layers.{layer}: unknown key(s) {', '.join(unknown)}")
        try:
            reclaimed = record.get("reclaimed_bytes")
            if reclaimed in ("", "None"):
                reclaimed = None
            reclaimed = None if reclaimed is None else int(float(reclaimed))
            pending = record.get("pending_reboot")
            if pending in (None, "", "None"):
                pending = None
            elif pending != mt.FLIP:
                pending = boolean(pending, strict=True)
        except (TypeError, ValueError) as exc:
            module.fail_json(msg=f"layers.{layer}: {exc}")
        layers[layer] = {"reclaimed_bytes": reclaimed, "pending_reboot": pending}

    warnings: list[str] = []
    drift: dict[str, Any] = {"services": None, "boot_entry": None}
    details: dict[str, Any] = {}
    if p["drift_check"]:
        drift, details = check_drift(module, p["journal_path"], warnings)
    drift["carveouts"] = p["carveouts_drift"]

    before = _read(p["path"]) if os.path.exists(p["path"]) else None
    previous: dict[str, Any] = {}
    if before is not None:
        try:
            previous = mt.previous_state(before)
        except mt.MetricsError as exc:
            warnings.append(f"{p['path']}: previous file not readable, nothing carried over: {exc}")
    state = mt.merge(
        previous,
        {
            "version": p["version"],
            "playbook": p["playbook"],
            "result": p["result"],
            "timestamp": p["timestamp"] if p["timestamp"] is not None else int(time.time()),
            "layers": layers,
            "drift": drift,
        },
    )
    try:
        content = mt.render(state)
    except mt.MetricsError as exc:
        module.fail_json(msg=str(exc))
    changed = content != before
    if changed and not module.check_mode:
        try:
            mt.write_atomic(p["path"], content, replace=module.atomic_move)
        except mt.MetricsError as exc:
            module.fail_json(msg=str(exc))
    for warning in warnings:
        module.warn(warning)
    result: dict[str, Any] = {
        "changed": changed,
        "path": p["path"],
        "content": content,
        "drift": {kind: state["drift"].get(kind) for kind in mt.DRIFT_KINDS},
        "drift_details": details,
        "warnings_list": warnings,
    }
    if module._diff:
        result["diff"] = {
            "before": before or "",
            "after": content,
            "before_header": p["path"],
            "after_header": p["path"],
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
