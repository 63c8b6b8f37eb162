"""dtb2fs writes the kernel's device-tree layout: dtc reads it back to the same tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[2] / "sim"
sys.path.insert(0, str(SIM))
import build_image
import dtb2fs

VARIANTS = sorted(p.name for p in (SIM / "variants").iterdir() if (p / "variant.yml").exists())


def dts_of(argv: list[str]) -> str:
    return subprocess.run(["dtc", "-q", *argv, "-O", "dts"], check=True, capture_output=True, text=True).stdout


def canonical(dts: str) -> list[str]:
    # dtc -I fs orders properties by directory listing; compare as sets of lines per file.
    return sorted(line.strip() for line in dts.splitlines() if line.strip())


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_through_dtc(tmp_path, variant):
    dtb = tmp_path / "board.dtb"
    build_image.compile_dts(SIM / "variants" / variant / "board.dts", dtb)
    out = tmp_path / "base"
    assert dtb2fs.unpack(dtb.read_bytes(), out) > 5
    assert canonical(dts_of(["-I", "fs", str(out)])) == canonical(dts_of(["-I", "dtb", str(dtb)]))
    assert (out / "name").read_bytes() == b"\0"
    assert (out / "reserved-memory" / "name").read_bytes() == b"reserved-memory\0"
    # Cells stay raw big-endian bytes, as the kernel exposes them.
    assert (out / "#address-cells").read_bytes() == b"\x00\x00\x00\x02"


def test_truncated_and_foreign_input_is_refused(tmp_path):
    dtb = tmp_path / "board.dtb"
    build_image.compile_dts(SIM / "variants" / VARIANTS[0] / "board.dts", dtb)
    data = dtb.read_bytes()
    with pytest.raises(dtb2fs.DtbError, match="truncated"):
        dtb2fs.unpack(data[: len(data) // 2], tmp_path / "a")
    with pytest.raises(dtb2fs.DtbError, match="magic"):
        dtb2fs.unpack(b"\0" * 64, tmp_path / "b")
    with pytest.raises(dtb2fs.DtbError, match="too short"):
        dtb2fs.unpack(b"\xd0\x0d", tmp_path / "c")


def test_every_simulated_unit_renders():
    import yaml

    units = yaml.safe_load((SIM / "image" / "services.yml").read_text())["units"]
    for unit in units:
        if unit["kind"] == "debian":
            continue
        text = build_image.render_unit(unit)
        assert "[Service]" in text
        assert ("[Install]" in text) is not bool(unit.get("static"))
