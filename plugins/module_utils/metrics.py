# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_exporter textfile-collector file for edgeslim (docs/metrics.md).

Pure formatting and parsing of the Prometheus text exposition format, plus the atomic write node_exporter's
textfile collector requires (a temp file in the same directory, then a rename: the collector never reads a
half-written file). The file's one write (``write_textfile``) is shared by edgeslim.jetson.metrics_textfile and
the engine's last device run; they pass ``module.atomic_move`` as ``replace``.

Each run rewrites the whole file. What a run does not know (an audit knows no reclaim, a slim run that left a layer
unchanged knows no new figure) is carried over from the previous file, so the file always holds the last known
value of every series.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any, Callable

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.edgeslim.jetson.plugins.module_utils import drift as dr
from ansible_collections.edgeslim.jetson.plugins.module_utils import journal
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import reboot_policy
from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError, parse_show, show_argv

LAYERS = ("services", "swiotlb", "carveouts")
DRIFT_KINDS = ("services", "boot_entry", "carveouts")
PLAYBOOKS = ("slim", "rollback", "audit")
RESULTS = ("ok", "failed", "rolled_back")
DEFAULT_PATH = "/var/lib/node_exporter/textfile_collector/edgeslim.prom"

# name -> (type, help). Order is the file's order.
METRICS = (
    ("edgeslim_info", "gauge", "edgeslim collection version that last wrote this file (value always 1)."),
    ("edgeslim_last_run_timestamp_seconds", "gauge", "Unix time of the last edgeslim run on this device."),
    (
        "edgeslim_last_run_result",
        "gauge",
        "Result of the last edgeslim run: 1 for the result it had (ok, failed, rolled_back), 0 for the others.",
    ),
    ("edgeslim_reclaimed_bytes", "gauge", "Memory reclaimed per layer by the last run that measured it."),
    ("edgeslim_reboot_pending", "gauge", "1 when a layer's change waits for a reboot to take effect."),
    ("edgeslim_drift", "gauge", "1 when the device no longer matches what edgeslim applied (per kind)."),
)

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_PAIR_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class MetricsError(ValueError):
    """Bad input for the metrics file; nothing is written."""


def escape_label_value(value: str) -> str:
    """Label value escaping of the text format: backslash, double quote and line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def unescape_label_value(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def escape_help(text: str) -> str:
    """HELP text escaping: backslash and line feed (double quotes stay as they are)."""
    return str(text).replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    raise MetricsError(f"sample value must be a number, got {type(value).__name__}")


def format_sample(name: str, labels: dict[str, str], value: Any) -> str:
    if not _NAME_RE.match(name):
        raise MetricsError(f"invalid metric name {name!r}")
    for key in labels:
        if not _LABEL_RE.match(key) or key.startswith("__"):
            raise MetricsError(f"invalid label name {key!r}")
    body = ",".join(f'{key}="{escape_label_value(labels[key])}"' for key in sorted(labels))
    return f"{name}{{{body}}} {format_value(value)}" if body else f"{name} {format_value(value)}"


def render(state: dict[str, Any]) -> str:
    """The whole file for ``state``::

    {"version": "0.1.0", "playbook": "slim", "timestamp": 1764456000, "result": "ok",
     "layers": {"services": {"reclaimed_bytes": 123, "pending_reboot": False}, ...},
     "drift": {"services": False, "boot_entry": True, "carveouts": None}}

    A ``None`` figure has no sample (unknown is not 0). Labels are escaped; HELP/TYPE precede each family.
    """
    validate_state(state)
    samples: dict[str, list[str]] = {family[0]: [] for family in METRICS}
    samples["edgeslim_info"].append(format_sample("edgeslim_info", {"version": state["version"]}, 1))
    run_labels = {"playbook": state["playbook"]}
    samples["edgeslim_last_run_timestamp_seconds"].append(
        format_sample("edgeslim_last_run_timestamp_seconds", run_labels, state["timestamp"])
    )
    for result in RESULTS:
        samples["edgeslim_last_run_result"].append(
            format_sample("edgeslim_last_run_result", dict(run_labels, result=result), result == state["result"])
        )
    for layer in LAYERS:
        record = state.get("layers", {}).get(layer) or {}
        if record.get("reclaimed_bytes") is not None:
            samples["edgeslim_reclaimed_bytes"].append(
                format_sample("edgeslim_reclaimed_bytes", {"layer": layer}, record["reclaimed_bytes"])
            )
        if record.get("pending_reboot") is not None:
            samples["edgeslim_reboot_pending"].append(
                format_sample("edgeslim_reboot_pending", {"layer": layer}, bool(record["pending_reboot"]))
            )
    for kind in DRIFT_KINDS:
        value = state.get("drift", {}).get(kind)
        if value is not None:
            samples["edgeslim_drift"].append(format_sample("edgeslim_drift", {"kind": kind}, bool(value)))
    lines: list[str] = []
    for name, kind, help_text in METRICS:
        if not samples[name]:
            continue
        lines.append(f"# HELP {name} {escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples[name])
    return "\n".join(lines) + "\n"


def validate_state(state: dict[str, Any]) -> None:
    if state.get("playbook") not in PLAYBOOKS:
        raise MetricsError(f"playbook must be one of {', '.join(PLAYBOOKS)}, got {state.get('playbook')!r}")
    if state.get("result") not in RESULTS:
        raise MetricsError(f"result must be one of {', '.join(RESULTS)}, got {state.get('result')!r}")
    if not isinstance(state.get("version"), str) or not state["version"]:
        raise MetricsError("version must be a non-empty string")
    for layer, record in (state.get("layers") or {}).items():
        if layer not in LAYERS:
            raise MetricsError(f"unknown layer {layer!r} (known: {', '.join(LAYERS)})")
        value = (record or {}).get("reclaimed_bytes")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MetricsError(f"layers.{layer}.reclaimed_bytes must be a number, got {value!r}")
        pending = (record or {}).get("pending_reboot")
        if pending is not None and not isinstance(pending, bool):
            raise MetricsError(f"layers.{layer}.pending_reboot must be a boolean, got {pending!r}")
    for kind in state.get("drift") or {}:
        if kind not in DRIFT_KINDS:
            raise MetricsError(f"unknown drift kind {kind!r} (known: {', '.join(DRIFT_KINDS)})")


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a text-format file (comments skipped). Raises ``MetricsError`` on a line it cannot read."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            raise MetricsError(f"line {number}: not a sample: {line[:80]!r}")
        name, body, raw_value = match.groups()
        labels: dict[str, str] = {}
        pos = 0
        body = body or ""
        while pos < len(body.strip()):
            pair = _PAIR_RE.match(body, pos)
            if not pair:
                raise MetricsError(f"line {number}: bad labels {body[:80]!r}")
            labels[pair.group(1)] = unescape_label_value(pair.group(2))
            pos = pair.end()
        try:
            value = float(raw_value)
        except ValueError as exc:
            raise MetricsError(f"line {number}: bad value {raw_value!r}") from exc
        out.append((name, labels, value))
    return out


def previous_state(text: str) -> dict[str, Any]:
    """The per-layer and drift figures of a file this module wrote (for carrying them over)."""
    layers: dict[str, dict[str, Any]] = {}
    drift: dict[str, Any] = {}
    for name, labels, value in parse_samples(text):
        if name == "edgeslim_reclaimed_bytes" and labels.get("layer") in LAYERS:
            layers.setdefault(labels["layer"], {})["reclaimed_bytes"] = int(value) if value.is_integer() else value
        elif name == "edgeslim_reboot_pending" and labels.get("layer") in LAYERS:
            layers.setdefault(labels["layer"], {})["pending_reboot"] = value != 0
        elif name == "edgeslim_drift" and labels.get("kind") in DRIFT_KINDS:
            drift[labels["kind"]] = value != 0
    return {"layers": layers, "drift": drift}


def merge(previous: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` with every ``None`` per-layer or drift figure taken from ``previous``."""
    merged = dict(update)
    layers: dict[str, dict[str, Any]] = {}
    for layer in LAYERS:
        old = (previous.get("layers") or {}).get(layer) or {}
        new = (update.get("layers") or {}).get(layer) or {}
        record = {}
        for key in ("reclaimed_bytes", "pending_reboot"):
            value = new.get(key)
            record[key] = old.get(key) if value is None else value
        if new.get("pending_reboot") == FLIP:
            # A boot entry restored without a reboot: a change that was staged and never booted is simply gone (the
            # device runs the restored entry already); a change the device booted into now waits for a reboot back.
            record["pending_reboot"] = not old.get("pending_reboot", False) if "pending_reboot" in old else True
        if any(v is not None for v in record.values()):
            layers[layer] = record
    merged["layers"] = layers
    drift = {}
    for kind in DRIFT_KINDS:
        value = (update.get("drift") or {}).get(kind)
        value = (previous.get("drift") or {}).get(kind) if value is None else value
        if value is not None:
            drift[kind] = bool(value)
    merged["drift"] = drift
    return merged


def write_atomic(path: str, text: str, replace: Callable[[str, str], Any] | None = None, mode: int = 0o644) -> None:
    """Temp file in the target's directory (a ``.tmp`` name, which the collector skips), fsync, rename over
    ``path``, fsync of the directory: the journal's writer. The directory is created (0755) when missing; the file
    is world-readable, as node_exporter runs unprivileged."""
    try:
        journal.write_atomic(path, text, replace, mode=mode, dir_mode=0o755, what="metrics file")
    except journal.JournalError as exc:
        raise MetricsError(str(exc)) from exc


MIB = 1024 * 1024
# pending_reboot of a boot layer restored without a reboot: the opposite of what the previous file said (merge).
FLIP = "flip"
_APPLIED = ("applied", "unverified_container")
_UNDONE = ("rolled_back", "reverted")


def rebooted_after_restore(results: dict[str, Any], policies: dict[str, Any]) -> bool:
    """Whether the rollback's single reboot ran: a boot layer was restored and its effective reboot policy
    (``layer_inputs.reboot_policy``: ``<layer>_reboot_ok`` when set, else ``edgeslim_reboot_ok``; the playbooks
    checked the values strict) allows a reboot now, as the rollback's reboot step decides."""
    return any(
        (results.get(layer) or {}).get("status") == "rolled_back" and reboot_policy(policies, layer) is True
        for layer in dr.BOOT_LAYERS
    )


def layer_figures(
    playbook: str, results: dict[str, Any], restored: list[str] | None = None, rebooted: bool = False
) -> dict[str, dict[str, Any]]:
    """Per-layer ``reclaimed_bytes`` / ``pending_reboot`` for the metrics file from a run's layer records
    (``<layer>_result``: ``status``, ``reclaimed_mb``). ``None`` = this run does not know (carried over).

    - slim: an applied layer's measured reclaim, no reboot pending; ``pending_reboot`` -> pending; a layer the run
      or the device undid -> 0, and a restored boot layer waits for a reboot unless the run ``rebooted``.
    - rollback: every layer in ``restored`` (the layers asked for, the run having succeeded) reclaims 0; a boot
      layer whose entry was restored and not rebooted gets ``FLIP`` (see ``merge``).
    - audit: nothing (all carried over).
    """
    figures: dict[str, dict[str, Any]] = {}
    for layer in LAYERS:
        record = results.get(layer) or {}
        status = record.get("status") or ""
        boot = layer != "services"
        reclaimed: Any = None
        pending: bool | None = None
        if playbook == "slim":
            if status in _APPLIED:
                mb = record.get("reclaimed_mb")
                reclaimed = None if mb in (None, "", "None") else round(float(mb) * MIB)
                pending = False
            elif status == "pending_reboot":
                pending = True
            elif status in _UNDONE:
                reclaimed = 0
                # "reverted": the device rebooted into the stock entry by itself.
                pending = boot and status == "rolled_back" and not rebooted
        elif playbook == "rollback" and layer in (restored or []):
            reclaimed = 0
            if not boot or (status == "rolled_back" and rebooted):
                pending = False
            elif status == "rolled_back":
                pending = FLIP
        figures[layer] = {"reclaimed_bytes": reclaimed, "pending_reboot": pending}
    return figures


# ---- the file's one write, as edgeslim.jetson.metrics_textfile (and the engine's last device run) makes it ---------
def drift_by_layer(details: dict[str, Any], carveouts_findings: list[str] | None = None) -> dict[str, Any]:
    """The audit's drift findings per layer, as the fleet report lists them (layer -> {drift: [finding, ...]}):
    services ``unit: reason``, each boot layer its boot entry's reasons; carveouts also ``carveouts_findings`` (the
    live BCT carve-outs against the capsule record) in the same list, since set_stats replaces a list."""
    out: dict[str, Any] = {}
    services = details.get("services") or []
    if services:
        out["services"] = {"drift": [f"{f['unit']}: {f['reason']}" for f in services]}
    boot = details.get("boot_entry") or []
    for layer in ("swiotlb", "carveouts"):
        found = [f["reason"] for f in boot if f.get("layer") == layer]
        if layer == "carveouts":
            found += list(carveouts_findings or [])
        if found:
            out[layer] = {"drift": found}
    return out


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def parse_layers(given: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The ``layers`` option (layer -> ``reclaimed_bytes``, ``pending_reboot``), checked; MetricsError names what is
    wrong."""
    layers: dict[str, dict[str, Any]] = {}
    for layer, record in (given or {}).items():
        if layer not in LAYERS:
            raise MetricsError(f"layers: unknown layer {layer!r} (known: {', '.join(LAYERS)})")
        if record is not None and not isinstance(record, dict):
            raise MetricsError(f"layers.{layer} must be a dict, got {type(record).__name__}")
        record = record or {}
        unknown = sorted(set(record) - {"reclaimed_bytes", "pending_reboot"})
        if unknown:
            raise MetricsError(f"layers.{layer}: unknown key(s) {', '.join(unknown)}")
        try:
            reclaimed = record.get("reclaimed_bytes")
            if reclaimed in ("", "None"):
                reclaimed = None
            reclaimed = None if reclaimed is None else int(float(reclaimed))
            pending = record.get("pending_reboot")
            if pending in (None, "", "None"):
                pending = None
            elif pending != FLIP:
                pending = boolean(pending, strict=True)
        except (TypeError, ValueError) as exc:
            raise MetricsError(f"layers.{layer}: {exc}") from exc
        layers[layer] = {"reclaimed_bytes": reclaimed, "pending_reboot": pending}
    return layers


def _live_units(module: Any, units: list[str]) -> dict[str, dict[str, str]]:
    systemctl = module.get_bin_path("systemctl", required=True)
    rc, out, err = module.run_command(show_argv(systemctl, units), environ_update={"SYSTEMD_PAGER": "", "LC_ALL": "C"})
    if rc != 0:
        raise UnitsError(f"systemctl show failed (rc {rc}): {err.strip()[:200]}")
    blocks = parse_show(out)
    if len(blocks) != len(units):
        raise UnitsError(f"systemctl show returned {len(blocks)} blocks for {len(units)} units")
    return dict(zip(units, blocks))


def check_drift(module: Any, journal_path: str, warnings: list[str]) -> tuple[dict[str, Any], dict]:
    """Services and boot entry drift against the on-device journal (docs/metrics.md, "Drift")."""
    drift: dict[str, Any] = {"services": None, "boot_entry": None}
    details: dict[str, Any] = {}
    try:
        doc = journal.load_journal(journal_path)
    except journal.JournalError as exc:
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


def write_textfile(module: Any, p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """The whole file from ``p`` (the options of edgeslim.jetson.metrics_textfile: path, playbook, result, version,
    layers, carveouts_drift, drift_check, journal_path, timestamp), figures this run does not know carried over, written
    atomically unless ``check_mode``. Returns the module result (``diff`` included); raises MetricsError."""
    path = p["path"]
    if not path.endswith(".prom"):
        raise MetricsError(f"path {path} must end in .prom: node_exporter's textfile collector reads nothing else")
    if p["playbook"] not in PLAYBOOKS or p.get("result", "ok") not in RESULTS:
        raise MetricsError(f"playbook must be one of {', '.join(PLAYBOOKS)} and result one of {', '.join(RESULTS)}")
    layers = parse_layers(p.get("layers"))
    warnings: list[str] = []
    drift: dict[str, Any] = {"services": None, "boot_entry": None}
    details: dict[str, Any] = {}
    if p.get("drift_check", True):
        drift, details = check_drift(module, p.get("journal_path") or "/var/lib/edgeslim/journal.json", warnings)
    drift["carveouts"] = p.get("carveouts_drift")

    before = _read(path) if os.path.exists(path) else None
    previous: dict[str, Any] = {}
    if before is not None:
        try:
            previous = previous_state(before)
        except MetricsError as exc:
            warnings.append(f"{path}: previous file not readable, nothing carried over: {exc}")
    timestamp = p.get("timestamp")
    state = merge(
        previous,
        {
            "version": p["version"],
            "playbook": p["playbook"],
            "result": p.get("result") or "ok",
            "timestamp": timestamp if timestamp is not None else int(time.time()),
            "layers": layers,
            "drift": drift,
        },
    )
    content = render(state)
    changed = content != before
    if changed and not check_mode:
        write_atomic(path, content, replace=getattr(module, "atomic_move", None))
    return {
        "changed": changed,
        "path": path,
        "content": content,
        "drift": {kind: state["drift"].get(kind) for kind in DRIFT_KINDS},
        "drift_details": details,
        "warnings_list": warnings,
        "diff": {"before": before or "", "after": content, "before_header": path, "after_header": path},
    }
