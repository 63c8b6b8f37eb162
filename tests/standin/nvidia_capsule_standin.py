"""Stand-in for NVIDIA's capsule tools (they cannot run here): records each call, writes capsule-shaped files.

Install it under the names the role's build commands use, inside a fake Linux_for_Tegra:

    Linux_for_Tegra/l4t_generate_soc_bup.sh                        -> writes bootloader/payloads_<t23x>/bl_only_payload
    Linux_for_Tegra/generate_capsule/l4t_generate_soc_capsule.sh   -> -i <payload> -o <capsule> <t234|t264>

Every call appends {"tool", "argv", "cwd"} as one JSON line to $EDGESLIM_STANDIN_LOG (default
<cwd>/edgeslim-standin-calls.jsonl). The capsule is an EFI_CAPSULE_HEADER (FMP capsule GUID) + FMP capsule header +
one FMP image header with the chip's general-config image type GUID + the payload: the shape UEFI checks, not a
signed NVIDIA capsule. Stdlib only.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import uuid

FMP_CAPSULE_GUID = uuid.UUID("6dcbd5ed-e82d-4c44-bda1-7194199ad92a")
IMAGE_TYPE = {"t234": "bf0d4599-20d4-414e-b2c5-3595b1cda402", "t264": "3c834404-d2d7-4912-8c1c-6e850b5f2824"}
CAPSULE_FLAGS = 0x00010000 | 0x00020000  # PERSIST_ACROSS_RESET | INITIATE_RESET, as capsule tools set them


def capsule_bytes(chip: str, payload: bytes) -> bytes:
    header_size = 32  # EFI_CAPSULE_HEADER (28) padded to 8
    fmp = struct.pack("<IHHQ", 1, 0, 1, 16)  # version 1, 0 drivers, 1 payload, item at +16 from the FMP header
    image = struct.pack("<I16sB3xIIQ", 2, uuid.UUID(IMAGE_TYPE[chip]).bytes_le, 1, len(payload) + 40, 0, 0)
    body = fmp + image + payload
    total = header_size + len(body)
    head = FMP_CAPSULE_GUID.bytes_le + struct.pack("<III", header_size, CAPSULE_FLAGS, total) + b"\0" * 4
    return head + body


def opt(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def main(argv: list[str]) -> int:
    tool = os.path.basename(argv[0])
    log = os.environ.get("EDGESLIM_STANDIN_LOG") or os.path.join(os.getcwd(), "edgeslim-standin-calls.jsonl")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"tool": tool, "argv": argv[1:], "cwd": os.getcwd()}) + "\n")
    args = argv[1:]
    if "l4t_generate_soc_bup" in tool:
        family = args[-1] if args else ""
        if family not in ("t23x", "t26x"):
            print(f"{tool}: unknown chip family {family!r}", file=sys.stderr)
            return 2
        out = os.path.join("bootloader", f"payloads_{family}", "bl_only_payload")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as handle:
            handle.write(b"EDGESLIM-STANDIN-BUP " + " ".join(args).encode() + b"\n")
        return 0
    if "l4t_generate_soc_capsule" in tool:
        src, dst, chip = opt(args, "-i"), opt(args, "-o"), args[-1] if args else ""
        if not src or not dst or chip not in IMAGE_TYPE:
            print(f"{tool}: usage: -i <payload> -o <capsule> <t234|t264>", file=sys.stderr)
            return 2
        with open(src, "rb") as handle:
            payload = handle.read()
        with open(dst, "wb") as handle:
            handle.write(capsule_bytes(chip, payload))
        return 0
    print(f"{tool}: not a tool this stand-in knows", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
