"""Emulated-boot lane: the trial boot by kexec (docs/reliability.md, "Failures before userspace").

A managed entry that fails before userspace -- the kernel panics -- must come back to the stock entry by itself,
with nobody at the device: `slim.yml` leaves DEFAULT on the stock entry, boots the managed entry once with
`systemctl kexec` (its command line with `panic=` and the trial marker), the panic resets the board, U-Boot boots
DEFAULT, the checker finds no marker (`trial_failed`), the play fails the host and its rescue rolls the layer back.

The fault is injected by the test: before the play it writes the managed entry (label `edgeslim`, where the engine puts
its own) that the engine then edits in place -- as an earlier run or an operator could have left it -- with a root= that
names no partition (rootwait off, no initrd: the kernel's own "VFS: Unable to mount root fs" panic), or with a DTB whose
interrupt controller is deleted (the kernel panics at its first interrupt, "IRQ taken without a root IRQ handler", long
before any watchdog driver). The stock entry is untouched, so the device has a good entry to come back to. The rollback
removes the managed entry (edgeslim owns that label), so extlinux.conf ends byte-identical to the device's
stock file."""

from __future__ import annotations

import base64
import json
import re

from lane import DEFAULT_SLOTS, REPO, Device, record

EXTLINUX = "/boot/extlinux/extlinux.conf"
STOCK_DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
BAD_DTB = "/boot/dtb/edgeslim-test-no-gic.dtb"
NO_PARTITION = "root=PARTUUID=00000000-0000-0000-0000-00000000dead"
SLIM = {
    "profile_name": "warehouse_robot",
    "slim_layers": ["swiotlb"],
    "edgeslim_reboot_ok": True,
    "edgeslim_serial": ["100%"],
}


def default_label(extlinux: str) -> str:
    return re.search(r"^DEFAULT\s+(\S+)", extlinux, re.M).group(1)


def stock_entry(extlinux: str) -> dict[str, str]:
    """The keys of the stock entry (LABEL primary) of the image's L4T-style extlinux.conf."""
    block = re.search(r"^LABEL primary\n((?:[ \t]+\S.*\n)+)", extlinux, re.M).group(1)
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(MENU LABEL|LINUX|FDT|INITRD|APPEND)\s+(.*)$", block,
                                                        re.M)}  # fmt: skip


def with_managed_entry(extlinux: str, keys: dict[str, str | None]) -> str:
    """extlinux.conf with a managed entry (label edgeslim) where the engine puts its own -- a copy of the stock entry
    placed before it, then a blank line -- with ``keys`` changed (None drops the key); DEFAULT stays primary."""
    block = re.search(r"^LABEL primary\n(?:[ \t]+\S.*\n)+", extlinux, re.M)
    lines = ["LABEL edgeslim"]
    for line in block.group(0).splitlines()[1:]:
        key = re.match(r"\s+(MENU LABEL|\S+)\s", line).group(1)
        indent = line[: len(line) - len(line.lstrip())]
        value = {"MENU LABEL": "edgeslim: slimmed boot entry", **keys}.get(key, line.strip()[len(key) :].strip())
        if value is not None:
            lines.append(f"{indent}{key} {value}")
    return extlinux[: block.start()] + "\n".join(lines) + "\n\n" + extlinux[block.start() :]


def write_root_file(device: Device, path: str, text: str) -> None:
    data = base64.b64encode(text.encode()).decode()
    device.sudo(f"echo {data} | base64 -d > {path}.tmp && chmod 644 {path}.tmp && mv {path}.tmp {path} && sync")


def run_failing_trial(device: Device, name: str, keys: dict[str, str | None]) -> dict:
    """Write the faulty managed entry, run slim.yml (SWIOTLB layer, reboots allowed), return what the test checks."""
    base = device.snapshot()
    assert base["cmdline_swiotlb"] == [] and base["nslabs"] == DEFAULT_SLOTS, base
    assert device.sh("command -v kexec || ls /usr/sbin/kexec /sbin/kexec 2>/dev/null").strip(), "no kexec-tools"
    stock = device.extlinux()
    write_root_file(device, EXTLINUX, with_managed_entry(stock, keys))
    before = device.extlinux()
    assert default_label(before) == "primary"
    report_dir = device.run_dir / "report"
    res = device.play(REPO / "slim.yml", SLIM, name=name, report_dir=report_dir)
    after = device.snapshot()
    report_file = report_dir / "edgeslim-report.json"
    row = json.loads(report_file.read_text())["hosts"][0] if report_file.exists() else {}
    console = device.guest.console.read_text(errors="replace")
    stats = device.guest.stats()
    out = {
        "res": res,
        "base": base,
        "after": after,
        "stock_text": stock,
        "before_text": before,
        "after_text": device.extlinux(),
        "verdict": device.verdict("swiotlb") or {},
        "row": row,
        "console": console,
        "stats": stats,
        "pending": device.sudo("ls /var/lib/edgeslim/pending 2>/dev/null || true").split(),
        "trial_cmdlines": re.findall(r"Kernel command line: (.*edgeslim\.trial=\S+.*)", console),
    }
    record(name, memtotal_before_kb=base["MemTotal_kb"], memtotal_after_kb=after["MemTotal_kb"],
           verdict=out["verdict"].get("status"), failures=out["verdict"].get("failures"), play_rc=res.returncode,
           report_status=row.get("status"), report_layers=row.get("layer_status"),
           boots=stats["boots"], watchdog_resets=len(stats["watchdog_resets"]),
           extlinux_stock_identical=out["after_text"] == stock, trial_cmdlines=out["trial_cmdlines"])  # fmt: skip
    return out


def assert_back_on_stock(out: dict) -> None:
    """The host failed and was rolled back; the device came back on the stock entry by itself (no harness reset)."""
    res, base, after, verdict = out["res"], out["base"], out["after"], out["verdict"]
    assert res.returncode != 0, "the play must fail the host whose trial boot failed"
    assert re.search(r"failed=1", res.stdout), res.stdout[-3000:]
    assert "trial_failed" in res.stdout, res.stdout[-3000:]
    # The trial kernel was started by kexec with the marker and panic= on its command line.
    assert out["trial_cmdlines"] and all("panic=" in c for c in out["trial_cmdlines"]), out["trial_cmdlines"]
    assert "Kernel panic - not syncing" in out["console"]
    # Nobody at the device: the harness's stall watchdog never reset it; the panic did (panic=), then U-Boot booted
    # DEFAULT. Ready boots: the cold boot and the stock boot after the panic, both through the firmware.
    assert out["stats"]["watchdog_resets"] == [], out["stats"]
    assert [b["boot_id"] for b in out["stats"]["boots"]] == [base["boot_id"], after["boot_id"]], out["stats"]
    assert all(b["via"] == "firmware" for b in out["stats"]["boots"]), out["stats"]
    # The checker on the stock boot: no marker, so trial_failed; nothing rewritten by it, nothing left pending.
    assert verdict.get("status") == "trial_failed", verdict
    assert verdict.get("reverted_to") == "primary", verdict
    assert verdict.get("boot_identity") == after["boot_id"], verdict
    assert any("edgeslim.trial=" in f for f in verdict.get("failures") or []), verdict
    assert out["pending"] == [], out["pending"]
    # Rolled back: the stock kernel's pool, MemTotal as before, and extlinux.conf byte-identical to the device's
    # stock file -- the rollback removes the managed entry (edgeslim owns that label, the injected one included).
    assert after["cmdline_swiotlb"] == [] and after["nslabs"] == DEFAULT_SLOTS, after
    assert after["MemTotal_kb"] == base["MemTotal_kb"], (base, after)
    assert out["after_text"] == out["stock_text"]
    assert out["after_text"] != out["before_text"]
    row = out["row"]
    assert row.get("layer_status", {}).get("swiotlb") == "rolled_back", row
    assert row.get("status") in ("rolled_back", "failed"), row


def test_trial_boot_bad_root_comes_back_on_stock(device: Device):
    """A managed entry whose root= names no partition (rootwait off, no initrd): the trial kernel panics "VFS:
    Unable to mount root fs", panic= resets the board, U-Boot boots the stock DEFAULT; host failed, rolled back."""
    stock = stock_entry(device.extlinux())
    append = re.sub(r"\broot=\S+", NO_PARTITION, stock["APPEND"]).replace(" rootwait", "")
    out = run_failing_trial(device, "trial_bad_root", {"APPEND": append, "INITRD": None})
    assert "VFS: Unable to mount root fs" in out["console"]
    assert_back_on_stock(out)


def test_trial_boot_panicking_dtb_comes_back_on_stock(device: Device):
    """A managed entry whose DTB has no interrupt controller: the trial kernel panics at its first interrupt ("IRQ taken
    without a root IRQ handler" on arm64 6.1), before any watchdog driver could probe; panic= resets the board,
    U-Boot boots the stock DEFAULT; host failed, rolled back. (earlycon on the entry so the early panic reaches the
    serial console.)"""
    # The DTB the test controls: the stock one with the root node's interrupt controller deleted.
    controllers = (f"for n in $(fdtget -l {BAD_DTB} /); do "
                   f"fdtget {BAD_DTB} /$n interrupt-controller >/dev/null 2>&1 && echo $n; done; true")  # fmt: skip
    device.sudo(f"cp {STOCK_DTB} {BAD_DTB}")
    gic = device.sudo(controllers).split()
    assert gic, "the stock DTB has no interrupt controller under /"
    device.sudo(" && ".join(f"fdtput -r {BAD_DTB} /{n}" for n in gic))
    assert device.sudo(controllers).split() == []
    stock = stock_entry(device.extlinux())
    out = run_failing_trial(device, "trial_bad_dtb", {"FDT": BAD_DTB, "APPEND": stock["APPEND"] + " earlycon"})
    # arm64 6.1 leaves a default root IRQ handler that panics at the first interrupt (older kernels panic in init_IRQ
    # with "No interrupt controller found."); the arch timer finds no interrupt before that.
    assert re.search(r"Kernel panic - not syncing: (IRQ taken without a root IRQ handler|No interrupt controller "
                     r"found)", out["console"]), out["console"][-3000:]  # fmt: skip
    assert_back_on_stock(out)
