"""Stand-in for the UEFI capsule step, run early at boot (real UEFI runs before Linux; here no firmware exists).

If OsIndications has bit 0x04 and a capsule is staged: clear the bit, remove the capsule (UEFI deletes processed
capsules), then either switch the boot chain (bl_current A<->B, ESRT last_attempt_status 0, nvbootctrl capsule update
status 1) and drop the reserved-memory nodes named in capsule-removes from the device tree copy the role reads
(what MB1 no longer reserves), or, when /var/lib/edgeslim-standin/fail-next exists, keep the old chain and set
last_attempt_status 6163 (a rejected capsule, value from a field report) and capsule update status 3 (install failed).
"""

import os
import shutil
import struct

S = "/var/lib/edgeslim-standin"
VAR = os.path.join(S, "efivars", "OsIndications-8be4df61-93ca-11d2-aa0d-00e098032b8c")
CAPSULE = "/opt/nvidia/esp/EFI/UpdateCapsule/TEGRA_BL.Cap"
STATUS = os.path.join(S, "esrt", "entries", "entry0", "last_attempt_status")


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def main():
    try:
        with open(VAR, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return
    attrs, value = struct.unpack("<IQ", raw[:12])
    if not value & 4:
        return
    with open(VAR, "wb") as handle:
        handle.write(struct.pack("<IQ", attrs, value & ~4))
    if not os.path.exists(CAPSULE):
        return
    fail = os.path.join(S, "fail-next")
    if os.path.exists(fail):
        os.unlink(fail)
        write(STATUS, "6163\n")
        write(os.path.join(S, "capsule_status"), "3\n")
        outcome = "rejected, old chain kept"
    else:
        with open(os.path.join(S, "bl_current")) as handle:
            current = handle.read().strip()
        write(os.path.join(S, "bl_current"), {"A": "B", "B": "A"}[current] + "\n")
        write(STATUS, "0\n")
        write(os.path.join(S, "capsule_status"), "1\n")
        removes = os.path.join(S, "capsule-removes")
        freed_kb = 0
        if os.path.exists(removes):
            with open(removes) as handle:
                for name in handle.read().split():
                    node = os.path.join(S, "dt", "reserved-memory", name)
                    if os.path.isdir(node):
                        with open(os.path.join(node, "reg"), "rb") as reg:
                            freed_kb += int.from_bytes(reg.read()[8:16], "big") // 1024  # 2 address + 2 size cells
                        shutil.rmtree(node)
        # The kernel's boot line grows by what MB1 no longer reserves (the sim's MemTotal is lxcfs's, so not there).
        with open(os.path.join(S, "kernel.log")) as handle:
            log = handle.read()
        avail, total = (int(x) for x in log.split("Memory: ")[1].split(" ")[0].rstrip("K").split("K/"))
        write(
            os.path.join(S, "kernel.log"), log.replace(f"{avail}K/{total}K", f"{avail + freed_kb}K/{total + freed_kb}K")
        )
        outcome = "applied to the other chain"
    os.unlink(CAPSULE)
    with open(os.path.join(S, "uefi.log"), "a") as handle:
        handle.write(outcome + "\n")


main()
