# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of ``edgeslim.jetson.capsule``: the carveouts layer's firmware path (UEFI capsule delivery,
docs/carveouts.md) as one protocol in code. The device work goes through the collection's modules
(uefi_capsule, carveouts_info, memory_snapshot, device_lock) and ansible.builtin's (slurp, copy, file, stat,
dpkg_selections, reboot).

- ``validate`` (before the layer's first change): the BUP spec of the module (by module id, else board id), build
  commands naming another module's spec, the build interface, one output for several specs in the play (every play
  host's module, from its registered ``__carveouts_info``), the placeholders filled, then on the device the boot-chain
  and rootfs slots (``uefi_capsule state=checked``) and the ESP mount. Returns ``capsule`` (the build, paths,
  recipes and the boot-chain slot before), which ``deliver`` takes back as ``validated``.
- ``deliver``: the hold of the bootloader package (optional), the build -- once per BUP spec and build commands across
  the play's hosts (forks): a lock per build directory and a result cache keyed by the run, the task and the commands,
  so one host builds and the others reuse; check mode builds nothing --, the capsule's FMP headers for this chip, its
  sha256, the device's record. A capsule not applied yet is staged, requested, recorded (pending), MemTotal taken;
  with a reboot allowed the device reboots, the device lock is taken again, and the other boot chain, the ESRT and the
  capsule update status are checked before the applied record is written. Any failure from the staging on cancels
  the request, removes the staged capsule and puts the previous record back. An applied capsule is not delivered
  again: the device is read for drift instead (returned as ``drift``, the caller's fact ``carveouts_drift``).
- ``unhold``: the package edgeslim held (marker file) is marked for install again; a hold the operator set stays.

Returns ``report``: the carveouts layer's part of the run report (``details.capsule``, ``details.bootloader_package``,
``reclaimed_mb``, ``drift``), published by the caller's one set_stats task, and ``capsule_failed`` (the caller
registers the result with failed_when: false and fails the host after publishing).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible_collections.edgeslim.jetson.plugins.module_utils import capsule as c
from ansible_collections.edgeslim.jetson.plugins.module_utils.layer_inputs import layer_refusals
from ansible_collections.edgeslim.jetson.plugins.plugin_utils.actions import reboot_args, run_action

RECORD = "/var/lib/edgeslim/capsule.json"
HOLD_MARKER = "/var/lib/edgeslim/bootloader-hold"
SPEC = re.compile(r"^t2[0-9]x_[A-Za-z0-9_]*_spec$")
OTHER = {"A": "B", "B": "A", "0": "1", "1": "0"}
BUILD_HELP = (
    "carveouts_capsule needs carveouts_capsule_build_commands (a list of argv lists: NVIDIA's l4t_generate_soc_bup.sh "
    "then generate_capsule/l4t_generate_soc_capsule.sh), carveouts_capsule_build_chdir (the patched Linux_for_Tegra) "
    "and carveouts_capsule_build_output (the capsule file they leave); see docs/carveouts.md"
)
HELD_NOTE = "held (apt-mark hold): its boot-firmware updates wait for a deliberate unhold"
NOT_HELD_NOTE = "not installed: nothing to hold"


class Refused(Exception):
    """The capsule cannot be built or delivered for this device; nothing was changed."""


# ---- pure parts ---------------------------------------------------------------------------------------------------
def flag(value: Any, default: bool) -> bool:
    """A boolean option as Ansible reads one (yes/no, "false", 0 ...); unset is ``default``."""
    return default if value is None or value == "" else boolean(value, strict=False)


def bup_spec_for(module: str, specs: dict[str, str]) -> str:
    """NVIDIA's BUP spec of a module: by module id (p3767-0005), else by board id (p3767); '' when unknown."""
    module = module or ""
    if module in specs:
        return str(specs[module] or "")
    return str(specs.get(module.split("-")[0]) or "")


def fill(text: str, spec: str, chip: str) -> str:
    """The placeholders {bup_spec}, {chip} (t234) and {chip_family} (t23x) filled."""
    return text.replace("{bup_spec}", spec).replace("{chip}", chip).replace("{chip_family}", chip[:3] + "x")


def plan_build(args: dict[str, Any], chip: str, module: str, peer_specs: list[str]) -> dict[str, Any]:
    """The refusals of the build interface (before any change) and this device's build, capsule path and ESP path.
    ``peer_specs``: the BUP specs of the play's other capsule hosts."""
    specs = dict(args.get("bup_specs") or {})
    spec = bup_spec_for(module, specs)
    if not spec:
        raise Refused(
            f"no BUP spec for module {module} ({chip}): a capsule built for another module's boot chain must not reach "
            f"this device; add it to carveouts_capsule_bup_specs (known: {', '.join(specs)})"
        )
    commands = args.get("build_commands") or []
    named: list[str] = []
    for command in commands if isinstance(commands, list) else []:
        for word in command if isinstance(command, list) else []:
            if isinstance(word, str) and SPEC.match(word) and word != spec and word not in named:
                named.append(word)
    if named:
        raise Refused(
            f"carveouts_capsule_build_commands name BUP spec {', '.join(named)}, but this device is module {module} "
            f"({spec}); write {{bup_spec}} and edgeslim fills in each device's own"
        )
    chdir, output = str(args.get("build_chdir") or ""), str(args.get("build_output") or "")
    if not (isinstance(commands, list) and commands and all(isinstance(x, list) for x in commands) and chdir
            and output):  # fmt: skip
        raise Refused(BUILD_HELP)
    play_specs = list(dict.fromkeys([spec, *peer_specs]))
    if len(play_specs) > 1 and "{bup_spec}" not in output:
        raise Refused(
            f"this play has modules with BUP specs {', '.join(play_specs)} and one capsule output ({output}): put "
            "{bup_spec} in carveouts_capsule_build_output"
        )
    out = fill(output, spec, chip)
    return {
        "chip": chip,
        "module": module,
        "bup_spec": spec,
        "chdir": chdir,
        "commands": [[fill(str(w), spec, chip) for w in command] for command in commands],
        "src": out if os.path.isabs(out) else f"{chdir}/{out}",
        "dest": f"{args.get('esp_path') or '/opt/nvidia/esp'}/EFI/UpdateCapsule/{args.get('name') or 'TEGRA_BL.Cap'}",
    }


def todo(record: dict[str, Any], sha256: str | None, check_mode: bool) -> bool:
    """Whether the capsule still has to be delivered: not in check mode, and the device's record does not say this
    capsule (by sha256) was applied."""
    if check_mode:
        return False
    return not (record.get("status") == "applied" and record.get("sha256", "") == sha256)


def verify_failure(slot_before: Any, after: dict[str, Any]) -> str | None:
    """Why the capsule boot did not apply the capsule (None when it did): the device must run the other boot chain,
    no ESRT entry may report a failed attempt, and nvbootctrl's capsule update status must not say it failed."""
    want = OTHER.get(str(slot_before), "?")
    current = (after.get("bootloader") or {}).get("current")
    esrt = list(after.get("esrt") or [])
    failed = [e["last_attempt_status"] for e in esrt if e.get("last_attempt_status") not in (None, 0)]
    failure = after.get("capsule_update_failure")
    if str(current if current is not None else "") == want and not failed and failure is None:
        return None
    return (
        f"the capsule was not applied: boot chain {current if current is not None else '?'} (expected {want} after "
        f"the update), ESRT {[e.get('last_attempt_status') for e in esrt]}, {failure or 'no capsule update status'}; "
        "UEFI kept or fell back to the previous chain, which still has the stock BCT"
    )


def run_key(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def run_commands(commands: list[list[str]], chdir: str) -> None:
    """NVIDIA's tools, in order, in the BSP directory; the first that fails stops the build."""
    for argv in commands:
        try:
            proc = subprocess.run(argv, cwd=chdir, capture_output=True, check=False)
        except OSError as exc:
            raise Refused(f"capsule build: {' '.join(argv)} in {chdir}: {exc.strerror}") from exc
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-400:]
            raise Refused(f"capsule build failed: {' '.join(argv)} (rc {proc.returncode} in {chdir}): {err}")


def build_once(cache_dir: str, run: str, build: dict[str, Any], runner: Callable[[list, str], None] = run_commands,
               ) -> dict[str, Any]:  # fmt: skip
    """Build once per (run, chdir, commands): the hosts of a play call this in parallel forks. A lock per build
    directory serialises the builds there (two specs never write one BSP tree at once); the outcome (built, or the
    error) is kept under a key of the run and the commands, so the other hosts with the same commands reuse it and a
    failed build is not retried by each host. Returns {"built": bool (this call ran the tools), "error": str|None}."""
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    key = run_key(run, build["chdir"], build["commands"])
    done = os.path.join(cache_dir, f"{key}.json")
    with open(os.path.join(cache_dir, f"{run_key(build['chdir'])}.lock"), "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(done, encoding="utf-8") as handle:
                return {"built": False, "error": json.load(handle).get("error")}
        except (OSError, ValueError):
            pass
        error = None
        try:
            runner(build["commands"], build["chdir"])
        except Refused as exc:
            error = str(exc)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"error": error, "commands": build["commands"]}, handle)
        os.replace(tmp, done)
        return {"built": True, "error": error}


def pending_record(status: str, sha256: str, slot_before: Any, recipes: list[str]) -> dict[str, Any]:
    return {"status": status, "sha256": sha256, "slot_before": slot_before, "recipes": recipes}


def applied_record(previous: dict[str, Any], sha256: str, slot_before: Any, after: dict[str, Any],
                   recipes: list[str], state: Any) -> dict[str, Any]:  # fmt: skip
    return {**previous, "status": "applied", "sha256": sha256, "slot_before": slot_before,
            "slot_after": (after.get("bootloader") or {}).get("current"), "recipes": recipes,
            "capsule_update_status": (after.get("bootloader") or {}).get("capsule_update_status"),
            "state_after": state}  # fmt: skip


def memtotal(snapshot: dict[str, Any]) -> int:
    return int(((snapshot.get("snapshot") or {}).get("meminfo_kb") or {}).get("MemTotal") or 0)


def delivered_report(request: bool, slot_before: Any, sha256: str, mem_before: dict, after: dict | None,
                     mem_after: dict | None) -> dict[str, Any]:  # fmt: skip
    """details.capsule (and reclaimed_mb) of a delivered capsule: applied when verified after the reboot, else
    pending_reboot (requested, no reboot allowed) or staged (not requested)."""
    before_kb = memtotal(mem_before)
    applied = after is not None
    after_kb = memtotal(mem_after or {}) if applied else None
    return {
        "reclaimed_mb": round((after_kb - before_kb) / 1024, 1) if after_kb is not None else None,
        "details": {"capsule": {
            "status": "applied" if applied else ("pending_reboot" if request else "staged"),
            "slot_before": slot_before,
            "slot_after": (after or {}).get("bootloader", {}).get("current") if applied else None,
            "memtotal_before_kb": before_kb,
            "memtotal_after_kb": after_kb,
            "sha256": sha256,
            "capsule_update_status": (after or {}).get("bootloader", {}).get("capsule_update_status") if applied
            else None,
        }},
    }  # fmt: skip


def drift_report(check_mode: bool, record: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The carveouts layer's part for a capsule already applied (or check mode): what carveouts_info read."""
    drift = list(info.get("drift") or [])
    return {
        "drift": drift if info.get("checked") else None,
        "details": {"capsule": {
            "status": "check_mode" if check_mode else ("drift" if drift else "unchanged"),
            "sha256": record.get("sha256"),
            "slot_after": record.get("slot_after"),
            "drift_unchecked": info.get("unchecked"),
            "drift_notes": info.get("notes"),
        }},
    }  # fmt: skip


def hold_wanted(query_rc: int, query_out: str) -> tuple[bool, bool]:
    """(hold it, edgeslim holds it) from ``dpkg-query -W -f='${db:Status-Abbrev} ${Status}'``: an installed package
    is held; only one that was not held already is marked as edgeslim's (a hold the operator set stays theirs)."""
    out = query_out.strip()
    installed = query_rc == 0 and out.endswith(" installed")
    return installed, installed and out.endswith(" install ok installed")


# ---- the action ---------------------------------------------------------------------------------------------------
class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(
        ("phase", "info", "inputs", "profile", "validated", "bup_specs", "build_commands", "build_chdir",
         "build_output", "esp_path", "esp_must_be_mount", "name", "request", "rootfs_ab_synced", "nvbootctrl",
         "efivars_path", "esrt_path", "reboot_ok", "reboot_timeout", "boot_time_command", "boot_id_command",
         "devicetree_path", "kernel_log_command", "drift_tolerance_mb", "hold", "bootloader_package", "lock",
         "build_cache_dir")
    )  # fmt: skip

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        self._vars = task_vars or {}
        self._args = dict(self._task.args)
        self._check = bool(self._task.check_mode)
        phase = self._args.get("phase") or "deliver"
        result.update(changed=False, report={})
        try:
            if phase == "validate":
                self._validate(result)
            elif phase == "deliver":
                self._deliver(result)
            elif phase == "unhold":
                self._unhold(result)
            else:
                raise Refused(f"phase must be validate, deliver or unhold, got {phase!r}")
        except Refused as exc:
            result.update(failed=True, msg=str(exc))
        result["capsule_failed"] = bool(result.get("failed"))
        return result

    # ---- device calls
    def _module(self, name: str, args: dict[str, Any], what: str) -> dict[str, Any]:
        res = self._execute_module(module_name=name, module_args=args, task_vars=self._vars)
        if res.get("failed") or res.get("unreachable"):
            raise Refused(res.get("msg") or f"{what} failed")
        return res

    def _action(self, name: str, args: dict[str, Any], what: str) -> dict[str, Any]:
        """An action plugin (copy, reboot) with this task's connection and become, in this task's check mode."""
        res = run_action(self, name, args, self._vars)
        if res.get("failed") or res.get("unreachable"):
            raise Refused(res.get("msg") or f"{what} failed")
        return res

    def _capsule_args(self, state: str, path: str, **extra: Any) -> dict[str, Any]:
        a = self._args
        out = {
            "state": state,
            "capsule_path": path,
            "efivars_path": a.get("efivars_path") or "/sys/firmware/efi/efivars",
        }
        if state != "cancelled":
            out.update(rootfs_ab_synced=flag(a.get("rootfs_ab_synced"), False), nvbootctrl=list(a.get("nvbootctrl") or
                       ["nvbootctrl"]), esrt_path=a.get("esrt_path") or "/sys/firmware/efi/esrt")  # fmt: skip
        return {**out, **extra}

    def _write_record(self, doc: dict[str, Any]) -> None:
        content = json.dumps(doc, indent=4, sort_keys=True)
        self._action("ansible.legacy.copy", {"dest": RECORD, "mode": "0600", "content": content}, "record the capsule")

    def _boot_id(self) -> dict[str, Any]:
        cmd = self._args.get("boot_id_command") or []
        return {"boot_id_command": list(cmd)} if cmd else {}

    def _carveouts_info(self, recipes: list[str], **extra: Any) -> dict[str, Any]:
        a = self._args
        args = {"devicetree_path": a.get("devicetree_path") or "/sys/firmware/devicetree/base", "recipes": recipes,
                "nvbootctrl": list(a.get("nvbootctrl") or ["nvbootctrl"]),
                "kernel_log_command": list(a.get("kernel_log_command") or ["dmesg"]), **extra}  # fmt: skip
        return self._module("edgeslim.jetson.carveouts_info", args, "carveouts_info")

    # ---- validate
    def _peer_specs(self) -> list[str]:
        """The BUP specs of the play's other hosts that run the capsule path (their jetson_info result, registered as
        __carveouts_info by the role's pre-checks; their carveouts_capsule_bup_specs when set in the inventory)."""
        hostvars = self._vars.get("hostvars") or {}
        me = self._vars.get("inventory_hostname")
        out = []
        for host in self._vars.get("ansible_play_hosts") or []:
            if host == me or host not in hostvars:
                continue
            hv = hostvars[host]
            info = hv.get("__carveouts_info")
            if not isinstance(info, dict) or not info.get("soc") or info.get("skipped"):
                continue
            specs = hv.get("carveouts_capsule_bup_specs")
            module = ((info.get("module") or {}).get("module")) or ""
            spec = bup_spec_for(module, dict(specs if isinstance(specs, dict) else self._args.get("bup_specs") or {}))
            if spec:
                out.append(spec)
        return out

    def _validate(self, result: dict[str, Any]) -> None:
        info = self._args.get("info")
        if not isinstance(info, dict) or not info.get("soc"):
            raise Refused("info must be the jetson_info result of this device (its soc and module)")
        chip, module = str(info["soc"]), str((info.get("module") or {}).get("module") or "")
        build = plan_build(self._args, chip, module, self._peer_specs())
        before = self._module("edgeslim.jetson.uefi_capsule", self._capsule_args("checked", build["dest"]),
                              "reading the boot-chain slots")  # fmt: skip
        if before.get("unsafe"):
            raise Refused(f"capsule update refused: {'; '.join(before['unsafe'])}")
        esp = self._args.get("esp_path") or "/opt/nvidia/esp"
        if flag(self._args.get("esp_must_be_mount"), True):
            rc = self._low_level_execute_command(f"mountpoint -q {shlex.quote(esp)}")["rc"]
            if rc != 0:
                raise Refused(
                    f'{esp} is not a mount point: mount the partition labelled "esp" there first, as NVIDIA\'s '
                    f"capsule procedure does (mkdir -p {esp}; mount PARTLABEL=esp {esp}), or set "
                    "carveouts_capsule_esp_path to where it is mounted"
                )
        # The recipes as the layer accepts them (a refused value is the device-tree part's to refuse, next).
        accepted = layer_refusals(
            ["carveouts"],
            dict(self._args.get("inputs") or {}),
            profile=self._args.get("profile") or {},
            info=info,
            check_mode=self._check,
        )
        build["recipes"] = list(accepted.get("carveouts_recipes") or [])
        build["slot_before"] = (before.get("bootloader") or {}).get("current")
        result["capsule"] = build

    # ---- hold / unhold
    def _hold(self, result: dict[str, Any]) -> dict[str, Any]:
        package = str(self._args.get("bootloader_package") or "nvidia-l4t-bootloader")
        query = self._low_level_execute_command(
            f"dpkg-query -W {shlex.quote('-f=${db:Status-Abbrev} ${Status}')} {shlex.quote(package)}")  # fmt: skip
        hold, ours = hold_wanted(query["rc"], query.get("stdout") or "")
        if hold:
            sel = self._module(
                "ansible.legacy.dpkg_selections", {"name": package, "selection": "hold"}, "apt-mark hold"
            )
            result["changed"] = result["changed"] or bool(sel.get("changed"))
            if ours:
                self._action("ansible.legacy.copy", {"dest": HOLD_MARKER, "content": f"{package}\n", "mode": "0644"},
                             "remember the hold")  # fmt: skip
        return {"name": package, "held": hold, "note": HELD_NOTE if hold else NOT_HELD_NOTE}

    def _unhold(self, result: dict[str, Any]) -> None:
        marker = self._module("ansible.legacy.stat", {"path": HOLD_MARKER}, "stat the hold marker")
        if not marker["stat"]["exists"]:
            return
        raw = self._module("ansible.legacy.slurp", {"src": HOLD_MARKER}, "read the hold marker")
        package = base64.b64decode(raw["content"]).decode("utf-8", "replace").strip()
        sel = self._module("ansible.legacy.dpkg_selections", {"name": package, "selection": "install"},
                           "apt-mark unhold")  # fmt: skip
        gone = self._module("ansible.legacy.file", {"path": HOLD_MARKER, "state": "absent"}, "forget the hold")
        result.update(changed=bool(sel.get("changed") or gone.get("changed")), unheld=package)

    # ---- deliver
    def _read_record(self) -> dict[str, Any]:
        res = self._execute_module(module_name="ansible.legacy.slurp", module_args={"src": RECORD},
                                   task_vars=self._vars)  # fmt: skip
        if res.get("failed") or "content" not in res:
            return {}
        try:
            doc = json.loads(base64.b64decode(res["content"]))
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _build(self, build: dict[str, Any]) -> dict[str, Any]:
        cache = self._args.get("build_cache_dir")
        cache = cache or os.path.join(tempfile.gettempdir(), f"edgeslim-capsule-{os.getuid()}")
        # The run (the ansible-playbook process the forks share) and this task (one inclusion of the role): a later
        # run, or a later inclusion in the same run, builds again.
        out = build_once(os.path.expanduser(cache), f"{os.getppid()}:{self._task._uuid}", build)
        if out["error"]:
            raise Refused(out["error"])
        return out

    def _deliver(self, result: dict[str, Any]) -> None:
        a = self._args
        build = a.get("validated")
        if not isinstance(build, dict) or "dest" not in build:
            raise Refused("validated must be the __carveouts_capsule fact of phase validate")
        report: dict[str, Any] = {"details": {}}
        result["report"] = report
        if flag(a.get("hold"), False):
            report["details"]["bootloader_package"] = self._hold(result)
        sha256 = None
        if not self._check:
            result["build"] = self._build(build)
            try:
                with open(build["src"], "rb") as handle:
                    blob = handle.read()
                info = c.parse_capsule(blob)
                c.check_image_type(info, None, build["chip"])
            except OSError as exc:
                raise Refused(f"{build['src']}: {exc.strerror} (the build left no capsule there)") from exc
            except c.CapsuleError as exc:
                raise Refused(str(exc)) from exc
            sha256 = hashlib.sha256(blob).hexdigest()
            result["capsule_headers"] = info
        record = self._read_record()
        recipes = list(build.get("recipes") or [])
        if not todo(record, sha256, self._check):
            tolerance = a.get("drift_tolerance_mb")
            drift = self._carveouts_info(recipes, tolerance_mb=float(4 if tolerance in (None, "") else tolerance))
            part = drift_report(self._check, record, drift)
            report["drift"], report["details"]["capsule"] = part["drift"], part["details"]["capsule"]
            result["drift"] = drift.get("drift") or []
            if drift.get("drift"):
                result["warnings"] = [f"carveouts drift on {self._vars.get('inventory_hostname')}: "
                                      f"{'; '.join(drift['drift'])}"]  # fmt: skip
            return
        result["changed"] = True
        try:
            report.update(self._stage_and_verify(build, sha256 or "", record, recipes))
        except (Refused, AnsibleError) as exc:
            msg = str(exc)
            # the cancel's own failure does not change the outcome (the record is put back all the same)
            with contextlib.suppress(AnsibleError):
                self._execute_module(
                    module_name="edgeslim.jetson.uefi_capsule",
                    module_args=self._capsule_args("cancelled", build["dest"]),
                    task_vars=self._vars,
                )
            try:
                if record:
                    self._write_record(record)
                else:
                    self._module("ansible.legacy.file", {"path": RECORD, "state": "absent"}, "forget the record")
            except (Refused, AnsibleError) as restore:
                msg = f"{msg} (restoring the previous capsule record failed: {restore})"
            report["details"]["capsule"] = {"status": "failed", "error": str(exc)}
            raise Refused(
                f"capsule delivery failed: {msg} -- request cancelled, staged capsule removed (the device boots the "
                "firmware it had)"
            ) from exc

    def _stage_and_verify(self, build: dict[str, Any], sha256: str, record: dict[str, Any], recipes: list[str]
                          ) -> dict[str, Any]:  # fmt: skip
        a = self._args
        request, reboot = flag(a.get("request"), True), flag(a.get("reboot_ok"), False)
        slot_before = build.get("slot_before")
        self._module("ansible.legacy.file", {"path": os.path.dirname(build["dest"]), "state": "directory",
                                             "mode": "0755"}, "ESP directory for capsules")  # fmt: skip
        self._action("ansible.legacy.copy", {"src": build["src"], "dest": build["dest"], "mode": "0644"},
                     "stage the capsule in the ESP")  # fmt: skip
        if request:
            self._module("edgeslim.jetson.uefi_capsule", self._capsule_args("requested", build["dest"],
                                                                            chip=build["chip"]),
                         "request the capsule update")  # fmt: skip
        self._write_record(pending_record("pending" if request else "staged", sha256, slot_before, recipes))
        mem_before = self._module("edgeslim.jetson.memory_snapshot", self._boot_id(), "MemTotal before")
        if not (request and reboot):
            return delivered_report(request, slot_before, sha256, mem_before, None, None)
        args = reboot_args("edgeslim: rebooting for the bootloader capsule", int(a.get("reboot_timeout") or 1800), 5,
                           a.get("boot_time_command") or "")  # fmt: skip
        self._action("ansible.legacy.reboot", args, "reboot for the capsule")
        lock = a.get("lock")
        if isinstance(lock, dict) and lock.get("run_id"):
            # the reboot emptied /run
            again = {k: lock[k] for k in ("run_id", "path", "ttl", "holder") if lock.get(k) is not None}
            self._module("edgeslim.jetson.device_lock", {"state": "acquired", **again}, "take the device lock again")
        after = self._module("edgeslim.jetson.uefi_capsule", self._capsule_args("checked", build["dest"]),
                             "boot-chain slot after the capsule boot")  # fmt: skip
        mem_after = self._module("edgeslim.jetson.memory_snapshot", self._boot_id(), "MemTotal after")
        failure = verify_failure(slot_before, after)
        if failure:
            raise Refused(failure)
        state = self._carveouts_info(recipes, record_path="")
        self._write_record(applied_record(record, sha256, slot_before, after, recipes, state.get("state")))
        return delivered_report(request, slot_before, sha256, mem_before, after, mem_after)
