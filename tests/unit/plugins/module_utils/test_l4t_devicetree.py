"""L4T identity, compatible strings, kernel log, extlinux summary and the kernel DT layout on real formats."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import l4t
from conftest import FIXTURES

SIM = Path(__file__).resolve().parents[3] / "sim"
sys.path.insert(0, str(SIM))
import build_image
import dtb2fs

L4T = FIXTURES / "l4t"


@pytest.mark.parametrize(
    ("name", "version", "jetpack"),
    [("r35.6.0.txt", "35.6.0", "5.1.4"), ("r36.4.7.txt", "36.4.7", "6.2.1"), ("r38.4.0.txt", "38.4.0", "7.1"),
     ("r39.2.1.txt", "39.2.1", "7.2.1")],
)  # fmt: skip
def test_release_lines(name, version, jetpack):
    rel = l4t.parse_nv_tegra_release((L4T / name).read_text())
    assert rel["version"] == version and rel["jetpack"] == jetpack
    assert rel["major"] == int(version.split(".")[0])


def test_release_line_details_and_errors():
    rel = l4t.parse_nv_tegra_release((L4T / "r36.4.7.txt").read_text())
    assert (rel["gcid"], rel["board"], rel["kernel_variant"]) == ("41717519", "generic", "oot")
    assert l4t.jetpack_for("36.9.9") is None
    for bad in ((L4T / "truncated.txt").read_text(), "", "Linux version 6.1\n"):
        with pytest.raises(l4t.L4TError, match="not an L4T release line"):
            l4t.parse_nv_tegra_release(bad)


@pytest.mark.parametrize(
    ("compatible", "soc", "module", "carrier"),
    [
        (["nvidia,p3768-0000+p3767-0005-super", "nvidia,p3767-0005", "nvidia,tegra234"], "t234", "p3767-0005",
         "p3768-0000"),
        (["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"], "t234", "p3701-0005", "p3737-0000"),
        (["nvidia,p4071-0000+p3834-0008", "nvidia,p3834-0008", "nvidia,tegra264"], "t264", "p3834-0008", "p4071-0000"),
        (["raspberrypi,4-model-b", "brcm,bcm2711"], None, None, None),
    ],
)  # fmt: skip
def test_identify(compatible, soc, module, carrier):
    ident = l4t.identify(compatible)
    assert (ident["soc"], ident["module"], ident["carrier"]) == (soc, module, carrier)
    assert ident["super"] is compatible[0].endswith("-super")


def test_kernel_log():
    stock = l4t.swiotlb_from_log((L4T / "dmesg-stock.txt").read_text())
    assert stock == {"pool_mib": 64, "buffer_full": False}
    full = l4t.swiotlb_from_log((L4T / "dmesg-full.txt").read_text())
    assert full == {"pool_mib": 4, "buffer_full": True}
    assert l4t.swiotlb_from_log("") == {"pool_mib": None, "buffer_full": False}


def test_cmdline_swiotlb():
    expected = {"raw": "2048", "slots": 2048, "mib": 4.0}
    assert l4t.swiotlb_setting("root=/dev/x swiotlb=65536 quiet swiotlb=2048") == expected
    assert l4t.swiotlb_setting("swiotlb=4096,force")["mib"] == 8.0
    assert l4t.swiotlb_setting("swiotlb=noforce")["slots"] is None
    assert l4t.swiotlb_setting("quiet") is None


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    out = {}
    for variant in ("orin-nano-8gb", "agx-thor"):
        base = tmp_path_factory.mktemp(variant)
        dtb = base / "board.dtb"
        build_image.compile_dts(SIM / "variants" / variant / "board.dts", dtb)
        dtb2fs.unpack(dtb.read_bytes(), base / "dt")
        out[variant] = str(base / "dt")
    return out


def test_devicetree_identity_and_carveouts(trees):
    root = trees["orin-nano-8gb"]
    assert dt.model_of(root) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert dt.compatible_of(root)[-1] == "nvidia,tegra234"
    by_name = {c.name: c for c in dt.reserved_memory(root)}
    fsi = by_name["fsi-carveout@a6000000"]
    assert (fsi.base, fsi.size, fsi.no_map, fsi.reusable) == (0xA6000000, 32 << 20, True, False)  # from reg
    vpr = by_name["vpr-carveout"]
    assert (vpr.base, vpr.size, vpr.reusable) == (None, 0x2A000000, True)  # dynamic: from size
    assert dt.find_compatible(root, ["nvidia,tegra234-display"]) == ["/bus@0/display@13800000"]
    assert len(dt.find_compatible(root, ["nvidia,tegra234-vi", "nvidia,tegra234-isp", "nvidia,tegra234-nvcsi"])) == 3


def test_one_cell_sizes_and_bad_cells(tmp_path):
    rm = tmp_path / "reserved-memory"
    (rm / "a@1000").mkdir(parents=True)
    (rm / "#address-cells").write_bytes((1).to_bytes(4, "big"))
    (rm / "#size-cells").write_bytes((1).to_bytes(4, "big"))
    (rm / "a@1000" / "reg").write_bytes((0x1000).to_bytes(4, "big") + (0x2000).to_bytes(4, "big"))
    (rm / "a@1000" / "status").write_bytes(b"disabled\0")
    [c] = dt.reserved_memory(str(tmp_path))
    assert (c.base, c.size, c.status) == (0x1000, 0x2000, "disabled")
    (rm / "a@1000" / "reg").write_bytes(b"\0\0\x10")
    with pytest.raises(dt.DeviceTreeError, match="whole number of 32-bit cells"):
        dt.reserved_memory(str(tmp_path))
    (rm / "a@1000" / "reg").write_bytes((0x1000).to_bytes(4, "big"))
    with pytest.raises(dt.DeviceTreeError, match="expected 1 address"):
        dt.reserved_memory(str(tmp_path))


def test_jetson_verdict_says_why_a_device_is_not_a_jetson():
    orin = ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"]
    assert l4t.jetson_verdict(l4t.identify(orin), orin, "/dt") == (True, "")
    assert l4t.jetson_verdict(l4t.identify([]), [], "/dt") == (
        False,
        "no device tree at /dt (not an OF platform, or not exposed)",
    )
    rpi = ["raspberrypi,4-model-b", "brcm,bcm2711"]
    ok, why = l4t.jetson_verdict(l4t.identify(rpi), rpi, "/dt")
    assert not ok and why.startswith("device tree compatible ['raspberrypi,4-model-b'") and "tegra234/264" in why
