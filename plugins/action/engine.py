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

The boot layers (``layers`` names swiotlb and/or carveouts, ``boot`` carries their settings) ride in the same two
runs: their input refusals (plugins/filter/layer_refusals.py) run here before the probe, and again with the probe's
device identity and SWIOTLB pool use before apply. A UEFI Secure Boot device is refused unless ``boot.sign_command``
(list of str, default empty: ``edgeslim_secure_boot_sign_command``, an argv with ``{file}``) names a signing hook,
which is passed to the module: its apply runs the hook on the device for every boot file it writes (the overlay, the
merged DTB, extlinux.conf after its one write) and for the files it restores on an error (module_utils/boot_sign.py,
docs/secure-boot.md); with Secure Boot off the hook is not run. The overlay the probe planned is compiled here with
the controller's dtc (and merged with fdtoverlay for the merged method), cached by the hash of its inputs under
``boot.cache_dir``. After apply a boot layer is ``staged`` (written and armed; the caller reboots once, then runs
``verify``) or ``pending_reboot`` (no reboot allowed: the next boot, whenever it comes, checks and commits it).

Returns ``report: {<layer>: <record>}`` (each layer's record, docs/report.md), ``reboot`` (whether the caller
should reboot now) and the raw ``probe``/``apply``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
from typing import Any

import yaml
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.module_utils import boot_apply as ba
from ansible_collections.edgeslim.jetson.plugins.module_utils.boot_sign import SECURE_BOOT_REFUSAL, check_command
from ansible_collections.edgeslim.jetson.plugins.module_utils.engine_run import REBOOT_OPTIONS
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import layer_refusals, reboot_policy
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import layer_status
from ansible_collections.edgeslim.jetson.plugins.plugin_utils.actions import reboot_args, run_action

MODULE = "edgeslim.jetson.engine"
REFUSED_DISPLAY = "Refuse to go headless while a graphical session is in use"
REFUSED_PLAN = "Plan the unit changes (read-only; refuses protected units before any change)"
FAILED_APPLY = "Apply the services plan (journal written before any change)"
SKIP_REASON = "no unit, default target or journald setting in the selected profile blocks"
REFUSED_BOOT = "Refuse the boot layers' inputs (before any change)"
FAILED_BOOT = "Apply the boot layers (journal, boot files, commit-or-revert, one extlinux.conf write)"
VERIFY_BOOT = "Verify the boot layers after the reboot (verdict, running kernel, device tree, MemTotal)"
PREFLIGHT = "Pre-flight checks (a Jetson, a supported L4T release, free space under /boot)"
LOCK = "Take the device lock (refused, naming the holder, while another edgeslim run holds it)"
BOOT_LAYERS = ("swiotlb", "carveouts")
# The reboot the action makes itself (``reboot``, the module's option spec); after a revert verify is retried every
# VERIFY_RETRY_DELAY seconds.
REBOOT_DEFAULTS = {k: v["default"] for k, v in REBOOT_OPTIONS.items()}
VERIFY_RETRY_DELAY = 20
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKER_FILES = os.path.join(COLLECTION, "roles", "boot_commit", "files")


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
    """The services layer's record without figures."""
    return layer_status("services", status, **details)


def truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


PASSED_THROUGH = ("extlinux_path", "root", "boot_root", "managed_label", "managed_menu_label", "backup", "backup_keep",
                  "devicetree_path", "release_path", "efivars_path", "cmdline_path", "sign_command",
                  "measure_in_container")  # fmt: skip
LAYER_KEYS = {
    "swiotlb": ("debugfs_path", "max_boots"),
    "carveouts": ("overlay_path", "merged_fdt_path", "fdt", "max_boots"),
}


def read_checker(name: str) -> str:
    with open(os.path.join(CHECKER_FILES, name), encoding="utf-8") as handle:
        return handle.read()


def module_boot(boot: dict[str, Any], layers: list[str], accepted: dict[str, Any]) -> dict[str, Any]:
    """The device module's ``boot`` option: the accepted values of layer_refusals, the paths, the checker."""
    out = {k: boot[k] for k in PASSED_THROUGH if boot.get(k) is not None}
    out["checks"] = {}
    common = boot.get("checks") or {}
    if not isinstance(common, dict):
        out["checks"] = common  # the module refuses it with its message
        common = {}
    # a layer the module does not know is passed on for the module to refuse
    out["checks"].update({k: v for k, v in common.items() if k not in BOOT_LAYERS})
    for layer in layers:
        given = boot.get(layer) or {}
        out[layer] = {k: given[k] for k in LAYER_KEYS[layer] if given.get(k) is not None}
        # boot.checks.<layer> (the module's own form), then boot.<layer>.checks on top
        parts = [c for c in (common.get(layer), given.get("checks")) if c]
        bad = [c for c in parts if not isinstance(c, dict)]
        if bad or parts:
            out["checks"][layer] = bad[0] if bad else {k: v for c in parts for k, v in c.items()}
    if "swiotlb" in layers:
        out["swiotlb"]["slots"] = accepted["swiotlb_slots"]
    if "carveouts" in layers:
        out["carveouts"]["recipes"] = accepted["carveouts_recipes"]
        out["carveouts"]["fdt_method"] = (boot.get("settings") or {}).get("carveouts_fdt_method") or "auto"
    checker = dict(boot.get("checker") or {})
    checker.setdefault("program", read_checker("edgeslim-boot-commit.py"))
    checker.setdefault("unit", read_checker("edgeslim-boot-commit.service"))
    if not checker.get("boot_id_command"):
        checker.pop("boot_id_command", None)
    out["checker"] = checker
    return out


def rollback_boot(boot: dict[str, Any], layers: list[str]) -> dict[str, Any]:
    """The device module's ``boot`` option for a rollback: the paths, the signing hook and the checker's files; a
    rollback applies nothing, so no layer carries values to apply (the carveouts recipes are not needed)."""
    out = {k: boot[k] for k in PASSED_THROUGH if boot.get(k) is not None}
    given = boot.get("carveouts") or {}
    if "carveouts" in layers:
        out["carveouts"] = {"recipes": [], **{k: given[k] for k in ("overlay_path", "merged_fdt_path") if given.get(k)}}
    checker = dict(boot.get("checker") or {})
    checker.setdefault("program", "")  # removed, not installed, by a rollback
    checker.setdefault("unit", "")
    if not checker.get("boot_id_command"):
        checker.pop("boot_id_command", None)
    out["checker"] = checker
    return out


def reboot_options(given: Any) -> dict[str, Any] | str | None:
    """The ``reboot`` option: None (the caller reboots), the options with their defaults, or why they are refused."""
    if given is None:
        return None
    if not isinstance(given, dict) or set(given) - set(REBOOT_DEFAULTS):
        return f"reboot takes {', '.join(REBOOT_DEFAULTS)}, got {given!r}; nothing was changed"
    out = {**REBOOT_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    try:
        out["timeout"], out["wait_timeout"] = int(out["timeout"]), int(out["wait_timeout"])
    except (TypeError, ValueError):
        return f"reboot.timeout and reboot.wait_timeout must be seconds, got {given!r}; nothing was changed"
    if out["timeout"] < 1 or out["wait_timeout"] < 1:
        return f"reboot.timeout and reboot.wait_timeout must be at least 1 s, got {given!r}; nothing was changed"
    out["boot_time_command"] = str(out["boot_time_command"] or "")
    return out


def sign_command_refusal(command: Any) -> str | None:
    """boot.sign_command must be an argv list naming the file with {file} (a string would be split on commas by the
    module's argument spec): refused here, before the device is read."""
    if not isinstance(command, list):
        return f"boot.sign_command must be a list (argv), got {type(command).__name__}: {command!r}"
    return check_command(command)


def tool(argv: list[str], inputs: dict[str, bytes], args: list[str], hint: str) -> bytes:
    """Run a controller tool (dtc, fdtoverlay) in a private directory; ``inputs`` name the files written for the
    arguments, ``OUT`` the output."""
    with tempfile.TemporaryDirectory(prefix="edgeslim-engine.") as work:
        names = {"OUT": os.path.join(work, "out")}
        for name, data in inputs.items():
            names[name] = os.path.join(work, name)
            with open(names[name], "wb") as handle:
                handle.write(data)
        cmd = [*argv, *[names.get(x, x) for x in args]]
        try:
            proc = subprocess.run(cmd, capture_output=True, check=False)
        except OSError as exc:
            raise RuntimeError(f"{argv[0]} on the controller: {exc.strerror} -- {hint}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[:400]
            raise RuntimeError(f"{argv[0]} failed on the controller (rc {proc.returncode}): {err} -- {hint}")
        with open(names["OUT"], "rb") as handle:
            return handle.read()


def cached(cache_dir: str, key: str, make: Any) -> bytes:
    """``make()``'s bytes, kept under ``cache_dir`` by ``key`` (a hash of the inputs and the tool's argv)."""
    path = os.path.join(cache_dir, key)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        pass
    data = make()
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs a compile next time
    return data


def digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


HINT = "install device-tree-compiler on the controller (or set boot.carveouts.dtc / fdtoverlay)"


def controller_files(boot: dict[str, Any], planned: dict[str, Any]) -> dict[str, str]:
    """The overlay (and the merged DTB) the probe's plan asks for, compiled here: base64 for the module."""
    given = boot.get("carveouts") or {}
    dtc = list(given.get("dtc") or ["dtc"])
    fdtoverlay = list(given.get("fdtoverlay") or ["fdtoverlay"])
    cache_dir = os.path.expanduser(boot.get("cache_dir") or "~/.cache/edgeslim/overlays")
    dts = planned["dts"].encode("utf-8")
    compile_args = ["-q", "-I", "dts", "-O", "dtb", "-o", "OUT", "IN"]
    dtbo = cached(cache_dir, digest("dtbo", dts, dtc) + ".dtbo", lambda: tool(dtc, {"IN": dts}, compile_args, HINT))
    out = {"dtbo_b64": base64.b64encode(dtbo).decode()}
    merge = planned.get("merge_inputs_b64")
    if planned["method"] == "merged" and merge:
        base = base64.b64decode(merge["base"])
        kept = [base64.b64decode(o) for o in merge["overlays"]]
        names = {f"K{i}": data for i, data in enumerate(kept)}
        overlaid = base
        if kept:
            overlaid = cached(cache_dir, digest("overlaid", base, *kept, fdtoverlay) + ".dtb",
                              lambda: tool(fdtoverlay, {"BASE": base, **names}, ["-i", "BASE", "-o", "OUT", *names],
                                           HINT))  # fmt: skip
            out["overlaid_b64"] = base64.b64encode(overlaid).decode()
        merged = cached(cache_dir, digest("merged", overlaid, dtbo, fdtoverlay) + ".dtb",
                        lambda: tool(fdtoverlay, {"BASE": overlaid, "IN": dtbo}, ["-i", "BASE", "-o", "OUT", "IN"],
                                     HINT))  # fmt: skip
        out["merged_b64"] = base64.b64encode(merged).decode()
    return out


def stop_failed(result: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    """Units that ended ``failed`` after their stop (killed after their TimeoutStopSec=): named in the record's
    ``stop_failed`` and warned about -- they are down, but not cleanly."""
    units = (rec.get("details") or {}).get("units") or {}
    failed = [name for name, unit in units.items() if isinstance(unit, dict) and unit.get("stop_result") == "failed"]
    if not failed:
        return rec
    result.setdefault("warnings", []).append(
        f"{', '.join(failed)} ended failed after the stop (did not exit on SIGTERM within TimeoutStopSec=, killed by "
        "systemd); they are down; see the layer record's units"
    )
    return {**rec, "details": {**rec["details"], "stop_failed": failed}}


def verify_message(layer: str, rec: dict[str, Any]) -> str:
    """Why a boot layer is not in effect after the reboot: the device reverted it (its failed checks), or it committed
    but the running kernel does not show it."""
    details = rec["details"]
    why = "; ".join(list(details["verdict"].get("failures") or []) + list(details["verification"])) or "no reason given"
    if rec["status"] == "reverted":
        return f"the device did not commit the {layer} change ({details['verdict'].get('status')}): {why}"
    return f"the {layer} change is not in effect after the reboot: {why}"


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


def collection_version() -> str:
    """The version the metrics file names: the installed collection's MANIFEST.json, else galaxy.yml (a checkout)."""
    try:
        with open(os.path.join(COLLECTION, "MANIFEST.json"), encoding="utf-8") as handle:
            return str(json.load(handle)["collection_info"]["version"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(os.path.join(COLLECTION, "galaxy.yml"), encoding="utf-8") as handle:
            return str(yaml.safe_load(handle)["version"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return "unknown"


def run_options(args: dict[str, Any], host: str) -> dict[str, Any]:
    """The run around the layers (docs/development.md, "The engine"): ``lock`` (run_id, path, ttl, holder), pre-flight,
    the report's snapshots, the metrics file -- passed to each device run as the module takes them."""
    out: dict[str, Any] = {}
    if args.get("lock"):
        out["lock"] = {k: v for k, v in dict(args["lock"]).items() if v is not None}
    if args.get("preflight") is not None:
        pf = {k: v for k, v in dict(args["preflight"] or {}).items() if v is not None}
        pf.setdefault("host", host)
        out["preflight"] = pf
    if args.get("report"):
        out["report"] = True
    metrics = args.get("metrics")
    if metrics is not None and truthy(dict(metrics).get("enabled", True)):
        m = {k: v for k, v in dict(metrics).items() if v is not None and k != "enabled"}
        m.setdefault("version", collection_version())
        out["metrics"] = m
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(
        ("profile", "services", "journal_path", "management_interface", "measure", "layers", "boot", "before",
         "lock", "preflight", "report", "metrics", "records", "wait", "deadline", "deadline_program_path", "rollback",
         "running_label", "reboot")
    )  # fmt: skip

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self._run(tmp, task_vars or {})
        # Callers register the result with failed_when: false (every layer's record is published before the host
        # fails), which resets "failed": this key keeps the outcome.
        result["engine_failed"] = bool(result.get("failed"))
        result.setdefault("lock_held", False)
        return result

    def _device(self, module_args: dict[str, Any], task_vars: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """One device run: the layers' options, the run's options and this phase's."""
        return self._execute_module(MODULE, module_args={**module_args, **self._run_args, **extra},
                                    task_vars=task_vars)  # fmt: skip

    def _end(self, result: dict[str, Any], module_args: dict[str, Any], task_vars: dict[str, Any]) -> dict:
        """A refusal on the controller after the probe: one more device run writes the metrics file (failed) and gives
        the lock back. Nothing was changed. A probe that found nothing to change has already ended the run (metrics
        "ok", lock given back): the metrics file is rewritten, without the lock."""
        held = bool(self._run_args.get("lock") and result.get("lock_held"))
        ended = bool((result.get("probe") or {}).get("finished")) and self._run_args.get("metrics")
        if held or ended:
            keys = ("lock", "metrics") if held else ("metrics",)
            args = {k: v for k, v in self._run_args.items() if k in keys}
            # the measure options; where the run's deadline record is (the finish run disarms the deadline)
            for key in ("measure", "journal_path", "deadline_program_path"):
                if key in module_args:
                    args[key] = module_args[key]
            run = self._execute_module(MODULE, module_args={**args, "phase": "finish"}, task_vars=task_vars)
            result["finish"] = run
            result["lock_held"] = held and (bool(run.get("failed")) or bool((run.get("lock") or {}).get("held")))
        return result

    def _track(self, result: dict[str, Any], run: dict[str, Any]) -> None:
        """Whether this run still holds the device lock after ``run``, and the report's snapshots it took."""
        if self._run_args.get("lock"):
            if run.get("finished"):
                result["lock_held"] = bool((run.get("lock") or {}).get("held"))
            elif (run.get("lock") or {}).get("held"):
                result["lock_held"] = True
        memory = run.get("report") or {}
        for key in ("before", "after"):
            if memory.get(key):
                result.setdefault("memory", {})[key] = memory[key]

    def _run(self, tmp: Any, task_vars: dict[str, Any]) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        self._reboot_opts = reboot_options(args.pop("reboot", None))
        if isinstance(self._reboot_opts, str):
            return {**result, "failed": True, "msg": self._reboot_opts}
        if args.get("rollback") is not None:
            return self._rollback(result, args, task_vars)
        profile = args.pop("profile", None)
        before = args.pop("before", None)
        layers = args.pop("layers", None)
        layers = ["services"] if layers is None else list(layers)  # [] = no layer: only the run around them
        boot = args.pop("boot", None) or {}
        records = args.pop("records", None) or {}
        wait = args.pop("wait", None)
        run_args = {k: args.pop(k, None) for k in ("lock", "preflight", "report", "metrics")}
        if not isinstance(profile, dict) or not isinstance(profile.get("services"), dict):
            return {**result, "failed": True, "msg": "profile must be a resolved edgeslim_profile (a mapping)"}
        unknown = [x for x in layers if x not in ("services", *BOOT_LAYERS)]
        if unknown or not isinstance(boot, dict):
            msg = f"layers {unknown} unknown (services, swiotlb, carveouts), or boot is not a mapping"
            return {**result, "failed": True, "msg": msg}
        self._boot_layers = [x for x in BOOT_LAYERS if x in layers]
        # A layer's reboot policy defaults to the common one (layer_inputs.reboot_policy), as in the roles' defaults.
        self._settings = dict(boot.get("settings") or {})
        result.update(changed=False, probe=None, apply=None, reboot=False)
        self._run_args = run_options(run_args, str(task_vars.get("inventory_hostname") or "this host"))
        if self._run_args.get("lock") and not isinstance(self._run_args["lock"].get("run_id"), str):
            return {**result, "failed": True, "msg": "lock must name the run (lock.run_id)"}
        report: dict[str, Any] = {}
        result["report"] = report
        module_args = {k: v for k, v in args.items() if v is not None}
        module_args.pop("services", None)
        blocks: list[str] = []
        if "services" in layers:
            selection = select_services(profile, list(task_vars.get("ansible_run_tags") or ["all"]),
                                        list(task_vars.get("ansible_skip_tags") or []))  # fmt: skip
            blocks = selection["selected_blocks"]
            if selection.pop("requested"):
                module_args["services"] = {**(args.get("services") or {}), **selection}
            else:
                report["services"] = record("skipped", blocks=blocks, reason=SKIP_REASON)
        if self._boot_layers:
            # Inputs first (size, recipes, reboot policy): refused before anything reads the device.
            refusals = layer_refusals(self._boot_layers, self._settings, profile=profile,
                                      check_mode=self._task.check_mode)  # fmt: skip
            if refusals["refused"]:
                return self._refused_all(result, module_args, REFUSED_BOOT, "; ".join(refusals["refused"]))
            if refusals["warnings"]:
                # Check mode without a reboot decision: plan only.
                result.setdefault("warnings", []).extend(refusals["warnings"])
            sign_command = boot.get("sign_command") or []
            bad = sign_command_refusal(sign_command)
            if bad:
                return self._refused_all(result, module_args, REFUSED_BOOT, bad)
            if boot.get("trial") not in (None, "auto", "none"):
                return self._refused_all(result, module_args, REFUSED_BOOT,
                                         f"boot.trial must be auto or none, got {boot.get('trial')!r}")  # fmt: skip
            try:
                module_args["boot"] = module_boot(boot, self._boot_layers, refusals)
            except OSError as exc:
                return self._refused_all(result, module_args, REFUSED_BOOT, f"the boot-commit checker: {exc}")
            if before:
                return self._verify(result, module_args, before, task_vars, records, wait)
            # A trial boot by kexec (module_utils/trial_boot.py) only when the caller reboots right after apply: the
            # probe plans it when a layer's policy allows a reboot, apply when one follows its changes.
            self._trial = "none" if boot.get("trial") == "none" else "auto"
            allowed = any(self._reboot_allowed(layer) for layer in self._boot_layers)
            module_args["boot"]["trial"] = self._trial if allowed else "none"
        if "services" not in module_args and "boot" not in module_args and not self._run_args:
            return result
        # The probe takes the lock first, runs pre-flight, takes the baseline, plans; with nothing to change (or in
        # check mode, which stops after it) it also ends the run: the metrics file, the lock given back.
        probe = self._device(module_args, task_vars, phase="probe", take_lock="lock" in self._run_args,
                             finish="yes" if self._task.check_mode else "if_unchanged")  # fmt: skip
        result["probe"] = probe
        self._track(result, probe)
        if probe.get("preflight"):
            result["preflight"] = probe["preflight"]
        if probe.get("failed"):
            stage = {"preflight": PREFLIGHT, "lock": LOCK}.get(probe.get("stage"))
            stage = stage or (REFUSED_BOOT if probe.get("boot_failed") else REFUSED_PLAN)
            return self._refused_all(result, module_args, stage, probe.get("msg", "probe failed"))
        skipped = (probe.get("preflight") or {}).get("boot_layers_refused")
        if skipped and "boot" in module_args:
            # UEFI Secure Boot without a signing hook: the boot layers are skipped with pre-flight's reason.
            for layer in self._boot_layers:
                report[layer] = layer_status(layer, "skipped", reason=skipped)
            result.setdefault("warnings", []).append(f"boot layers refused: {skipped}")
            self._boot_layers = []
            module_args.pop("boot")
        if "services" in module_args:
            refusal = display_refusal(probe) if module_args["services"].get("check_display", True) else None
            if refusal:
                return self._end(self._refused_all(result, module_args, REFUSED_DISPLAY, refusal), module_args,
                                 task_vars)  # fmt: skip
        if "boot" in module_args:
            refusal = self._boot_refusal(profile, probe["boot"])
            if refusal:
                return self._end(self._refused_all(result, module_args, REFUSED_BOOT, refusal), module_args, task_vars)
            planned = probe["boot"].get("carveouts")
            needs = [f for f in probe["boot"]["files"] if f.get("pending") and f["changed"]]
            if planned and needs:
                try:
                    module_args["boot"]["carveouts"].update(controller_files(boot, planned))
                except RuntimeError as exc:
                    return self._end(self._refused_all(result, module_args, REFUSED_BOOT, str(exc)), module_args,
                                     task_vars)  # fmt: skip
        plan = probe.get("services")
        services_changes = bool(plan and plan["changes"])
        boot_changes = bool(probe.get("boot", {}).get("changes"))
        if plan and not services_changes:
            report["services"] = record("unchanged", blocks=blocks, absent=plan["absent"], kept=plan["kept"],
                                        default_target=plan["default_target"])  # fmt: skip
            module_args.pop("services")
        if "boot" in module_args and not boot_changes:
            for layer in self._boot_layers:
                report[layer] = self._boot_details("unchanged", probe["boot"], layer)
            module_args.pop("boot")
        if not services_changes and not boot_changes:
            return result
        if self._task.check_mode:
            result["changed"] = True
            result["diff"] = probe.get("diff", [])
            if services_changes:
                report["services"] = record("planned", check_mode=True, blocks=blocks, units=plan["units"],
                                            stopped=plan["stopped"], stopped_with=plan["stopped_with"],
                                            absent=plan["absent"], kept=plan["kept"],
                                            default_target=plan["default_target"], unit_memory=plan["unit_memory"],
                                            commands=plan["commands"])  # fmt: skip
            if boot_changes:
                for layer in self._boot_layers:
                    status = "planned" if layer in probe["boot"]["changed_layers"] else "unchanged"
                    report[layer] = self._boot_details(status, probe["boot"], layer)
            return result
        changed_layers = probe["boot"]["changed_layers"] if boot_changes else []
        reboot_follows = any(self._reboot_allowed(layer) for layer in changed_layers)
        if "boot" in module_args:
            module_args["boot"]["trial"] = self._trial if reboot_follows else "none"
        # Apply ends the run (after snapshot, metrics, lock given back) unless a reboot follows: then verify does.
        applied = self._device(module_args, task_vars, phase="apply", preflight=None,
                               finish="no" if reboot_follows else "yes")  # fmt: skip
        result["apply"] = applied
        self._track(result, applied)
        result["diff"] = applied.get("diff", [])
        if applied.get("failed"):
            return self._apply_failed(result, module_args, applied)
        result["changed"] = bool(applied.get("changed"))
        if "services" in module_args:
            report["services"] = stop_failed(result, applied["services"]["record"])
        if "boot" in module_args:
            self._boot_outcome(result, applied["boot"]["records"])
            # How the caller reboots: `systemctl kexec` into the loaded trial kernel, or through the firmware.
            trial = applied["boot"].get("trial") or {"mode": "none", "reason": ""}
            result["trial"] = {"mode": trial["mode"], "reason": trial.get("reason", ""),
                               **((applied["boot"].get("done") or {}).get("trial") or {})}  # fmt: skip
            if result["reboot"] and self._reboot_opts is not None:
                return self._reboot_and_verify(result, module_args, applied, task_vars)
        return result

    def _reboot_and_verify(self, result: dict[str, Any], module_args: dict[str, Any], applied: dict[str, Any],
                           task_vars: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """With ``reboot``: one reboot into the staged boot layers (``systemctl kexec`` for a trial boot), then one
        verify run, which takes the lock again and waits for the device's verdict. A device that reverted reboots once
        more: the action waits until it answers again and verifies again until that reboot is through (a connection
        can still reach the boot that reverted, in the seconds before the checker's reboot)."""
        opts = self._reboot_opts
        staged = [x for x, rec in result["report"].items() if x in BOOT_LAYERS and rec["status"] == "staged"]
        kexec = (result.get("trial") or {}).get("mode") == "kexec"
        error = self._reboot(opts, " and ".join(self._boot_layers), task_vars, kexec=kexec)
        result["rebooted"] = not error
        if error:
            result["verify_failed"] = True
            return {**result, "failed": True, "msg": f"the reboot into {', '.join(staged)} failed: {error}"}
        boot = {k: v for k, v in module_args["boot"].items() if k != "trial"}
        for layer in BOOT_LAYERS:
            if isinstance(boot.get(layer), dict):
                boot[layer] = {k: v for k, v in boot[layer].items() if not k.endswith("_b64")}  # apply's payload
        verify_args = {**module_args, "boot": boot}
        records = dict(result["report"])
        wait = {"layer": (staged or self._boot_layers)[0], "timeout": opts["wait_timeout"]}
        before = applied["boot"]["snapshot"]
        self._verify(result, dict(verify_args), before, task_vars, records, wait)
        if result.get("revert_reboot"):
            self._wait_for_connection(opts["wait_timeout"], task_vars)
            for _try in range(max(1, math.ceil(opts["wait_timeout"] / VERIFY_RETRY_DELAY))):
                result.pop("revert_reboot", None)
                self._verify(result, dict(verify_args), before, task_vars, records, wait)
                if not result.get("revert_reboot"):
                    break
                time.sleep(VERIFY_RETRY_DELAY)
            else:
                result.update(failed=True, msg=f"the device reverted the change and did not answer again within "
                                               f"{opts['wait_timeout']} s")  # fmt: skip
        result["verify_failed"] = bool(result.get("failed"))
        return result

    def _reboot(self, opts: dict[str, Any], reason: str, task_vars: dict[str, Any], kexec: bool = False) -> str:
        """One ansible.builtin.reboot (``systemctl kexec`` into a loaded trial kernel); the error, or empty."""
        args = reboot_args(f"edgeslim: rebooting for {reason}", opts["timeout"], 3, opts["boot_time_command"],
                           "systemctl kexec" if kexec else "")  # fmt: skip
        res = run_action(self, "ansible.legacy.reboot", args, task_vars)
        return "" if not (res.get("failed") or res.get("unreachable")) else str(res.get("msg") or "reboot failed")

    def _wait_for_connection(self, timeout: int, task_vars: dict[str, Any]) -> None:
        with contextlib.suppress(AnsibleError):
            self._connection.reset()
        run_action(self, "ansible.legacy.wait_for_connection", {"delay": 5, "timeout": timeout}, task_vars)

    def _verify(self, result: dict[str, Any], module_args: dict[str, Any], before: dict, task_vars: dict,
                records: dict[str, Any], wait: dict[str, Any] | None) -> dict:  # fmt: skip
        """After the caller's reboot: the device's verify run (the lock taken again, the checker's verdict waited for
        in the same run) gives each boot layer's record; a layer the device reverted, or whose change the running
        kernel does not show, fails the task (the caller restores). A device that reverted and reboots (or drops the
        connection doing so) returns ``revert_reboot``: the caller waits for it and runs verify again."""
        module_args.pop("services", None)
        if "metrics" in self._run_args:
            self._run_args["metrics"]["records"] = {k: v for k, v in records.items() if isinstance(v, dict)}
        extra: dict[str, Any] = {"wait": wait} if wait else {}
        try:
            verified = self._device(module_args, task_vars, phase="verify", before=before, preflight=None,
                                    take_lock="lock" in self._run_args, finish="yes", **extra)  # fmt: skip
        except AnsibleConnectionFailure as exc:
            result.update(revert_reboot=True, verify={"unreachable": True, "msg": str(exc)})
            return result
        except AnsibleError as exc:
            if not wait:
                raise
            # The device went away between the connection and the module's start: a container connection that finds
            # the device stopped for its revert reboot fails the remote file setup ("Failed to set permissions on
            # remote files ... cannot exec in a stopped container") instead of dropping the connection. The caller
            # waits for the device and verifies again; a device that is really broken fails that second run.
            result.update(revert_reboot=True, verify={"lost": True, "msg": str(exc)})
            return result
        result["verify"] = verified
        if isinstance(verified.get("verdict"), dict):
            result["verdict"] = verified["verdict"]  # the checker's, for the caller's rescue (reverted_to)
        self._track(result, verified)
        if wait and verified.get("failed") and "phase" not in verified:
            # The module did not answer (killed by the revert reboot; a container connection returns the killed
            # command instead of raising): the same as a dropped connection.
            result.update(revert_reboot=True, verify={"lost": True, "msg": verified.get("msg", "")})
            return result
        if verified.get("revert_reboot"):
            result.update(revert_reboot=True, verdict=verified.get("verdict"))
            return result
        if verified.get("failed"):
            return self._refused_all(result, module_args, VERIFY_BOOT, verified.get("msg", "verify failed"))
        records = verified["boot"]["records"]
        result["report"].update(records)
        bad = {layer: rec for layer, rec in records.items() if rec["status"] in ("reverted", "failed")}
        if bad:
            result.update(failed=True, msg="; ".join(verify_message(layer, rec) for layer, rec in bad.items()))
        return result

    def _rollback(self, result: dict[str, Any], args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        """``rollback: [layers]``: one device run restores them from the journal (boot layers first, module phase
        ``rollback``). ``reboot`` tells the caller to reboot now: a restored boot layer changed the boot entry, the
        reboot policy of one of those layers allows it (the one it was applied with, layer_inputs.reboot_policy) and
        the device does not already run what the restored file boots (``running_label``: the entry a device that
        reverted by itself came back on). ``report`` holds each layer's record; a failed layer fails the task."""
        layers = args["rollback"]
        boot = args.get("boot") or {}
        if not isinstance(layers, list) or [x for x in layers if x not in ("services", *BOOT_LAYERS)]:
            return {**result, "failed": True, "msg": f"rollback must list layers of services, swiotlb, carveouts, "
                                                     f"got {layers!r}; nothing was changed"}  # fmt: skip
        if not isinstance(boot, dict):
            return {**result, "failed": True, "msg": "boot must be a mapping; nothing was changed"}
        boot_layers = [x for x in BOOT_LAYERS if x in layers]
        ordered = [x for x in ("services", *BOOT_LAYERS) if x in layers]
        module_args: dict[str, Any] = {"phase": "rollback", "layers": ordered}
        if args.get("journal_path"):
            module_args["journal_path"] = args["journal_path"]
        if boot_layers:
            module_args["boot"] = rollback_boot(boot, boot_layers)
        run = self._execute_module(MODULE, module_args=module_args, task_vars=task_vars)
        result.update(rollback=run, changed=bool(run.get("changed")), reboot=False, report=run.get("records") or {},
                      diff=run.get("diff") or [])  # fmt: skip
        if run.get("failed"):
            return {**result, "failed": True, "msg": run.get("msg", "rollback failed")}
        report = result["report"]
        changed_entry = [x for x in boot_layers if report[x]["details"].get("extlinux_changed")]
        settings = boot.get("settings") or {}
        allowed = any(reboot_policy(settings, x) is True for x in changed_entry)
        running = args.get("running_label") or ""
        managed = {boot.get("managed_label") or "edgeslim"}
        already = bool(running) and running not in managed and run.get("boot_label") == running
        result["reboot"] = bool(changed_entry) and allowed and not already and not self._task.check_mode
        result["reboot_pending"] = bool(changed_entry) and not result["reboot"] and not already
        failed = {x: rec["details"].get("error", "") for x, rec in report.items() if rec["status"] == "failed"}
        if failed:
            result.update(failed=True, reboot=False, msg="rollback failed: " + "; ".join(
                f"{x}: {error}" for x, error in failed.items()))  # fmt: skip
        elif result["reboot"] and self._reboot_opts is not None:
            error = self._reboot(self._reboot_opts, "the restored boot entry", task_vars)
            result["rebooted"] = not error
            lock = args.get("lock")
            if not error and isinstance(lock, dict):
                # the reboot emptied /run: the run's device lock is taken again (edgeslim.jetson.device_lock)
                relock = self._execute_module(
                    "edgeslim.jetson.device_lock",
                    task_vars=task_vars,
                    module_args={
                        "state": "acquired",
                        **{k: lock[k] for k in ("run_id", "path", "ttl", "holder") if k in lock},
                    },
                )
                error = relock.get("msg", "taking the device lock again failed") if relock.get("failed") else ""
            if error:
                result.update(failed=True, msg=f"the reboot into the restored boot entry: {error}")
        return result

    def _boot_refusal(self, profile: dict[str, Any], planned: dict[str, Any]) -> str | None:
        """The refusals that need the device: chip, module and L4T release for the recipes and the FDT method, the
        pool's high-water mark for the SWIOTLB size, UEFI Secure Boot."""
        info = planned["device"]
        use = (planned.get("swiotlb") or {}).get("use")
        refusals = layer_refusals(self._boot_layers, self._settings, profile=profile, info=info, swiotlb_use=use,
                                  check_mode=self._task.check_mode)  # fmt: skip
        if refusals["refused"]:
            return "; ".join(refusals["refused"])
        if info.get("secure_boot") and planned["changes"] and not planned["signing"]["hook"]:
            return SECURE_BOOT_REFUSAL
        return None

    def _reboot_allowed(self, layer: str) -> bool:
        """The layer's effective reboot policy allows a reboot now; layer_refusals has refused anything but a
        boolean, and an undecided policy outside check mode, already."""
        return reboot_policy(self._settings, layer) is True

    def _boot_details(self, status: str, planned: dict[str, Any], layer: str) -> dict[str, Any]:
        """The layer's record from the probe's plan (the one the module builds for its own records)."""
        return ba.plan_record(status, planned, layer)

    def _boot_outcome(self, result: dict[str, Any], records: dict[str, Any]) -> None:
        """staged = written and armed: the caller reboots now when the policy allows it, else the next boot (a
        maintenance window) commits it: pending_reboot."""
        for layer, rec in records.items():
            if rec["status"] == "staged":
                if self._reboot_allowed(layer):
                    result["reboot"] = True
                else:
                    rec = {**rec, "status": "pending_reboot"}
            result["report"][layer] = rec

    def _apply_failed(self, result: dict[str, Any], module_args: dict[str, Any], applied: dict[str, Any]) -> dict:
        msg = applied.get("msg", "apply failed")
        report = result["report"]
        boot_failed = bool(applied.get("boot_failed"))
        if not applied.get("changed"):
            stage = REFUSED_BOOT if boot_failed else (REFUSED_PLAN if applied.get("stage") == "plan" else FAILED_APPLY)
            return self._refused_all(result, module_args, stage, msg)
        restored = bool(applied.get("restored"))
        result.update(failed=True, changed=True, msg=msg)
        status = "rolled_back" if restored else "failed"
        failed = {"error": msg, "restore_error": "" if restored else applied.get("restore_error", "?")}
        if applied.get("sign_warnings"):
            # Restored, but under Secure Boot a restored file could not be signed again (its previous .sig is back).
            failed["sign_warnings"] = applied["sign_warnings"]
            result.setdefault("warnings", []).extend(applied["sign_warnings"])
        if boot_failed:
            # The services layer ran and kept its change (a failing layer restores itself only).
            if "services" in module_args and applied.get("services"):
                report["services"] = applied["services"]["record"]
            if "restored" not in applied:  # refused before the boot layers' first change
                status, failed = "failed", {"error": msg, "changed": False}
            for layer in self._boot_layers:
                report[layer] = layer_status(layer, status, failed_task=FAILED_BOOT, **failed)
        else:
            report["services"] = record(status, failed_task=FAILED_APPLY, **failed)
            for layer in self._boot_layers if "boot" in module_args else []:
                report[layer] = layer_status(layer, "skipped", reason="not run: the services layer failed before it")
        return result

    def _refused_all(self, result: dict[str, Any], module_args: dict[str, Any], stage: str, msg: str) -> dict:
        """A refusal before any change: every layer of this call that was to run is failed, unchanged."""
        result.update(failed=True, changed=False, msg=msg)
        if "services" in module_args:
            result["report"]["services"] = record("failed", changed=False, failed_task=stage, error=msg)
        for layer in self._boot_layers:
            result["report"][layer] = layer_status(layer, "failed", changed=False, failed_task=stage, error=msg)
        return result
