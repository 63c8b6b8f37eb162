"""The HTML fleet report as a browser shows it: the callback writes it from set_stats, headless Chromium renders it,
and the screenshot (decoded here with zlib) must show the layer colours as bars and the status colours as chips.

Regenerate the documentation's picture from the same fleet:
    .venv/bin/python tests/unit/plugins/callback/test_report_html_chromium.py docs/images/report-example.png
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

if __name__ == "__main__":  # run as a script: make the collection importable as the test conftest does
    sys.path.insert(0, str(Path(__file__).resolve().parents[4] / ".collections"))

from ansible.executor.stats import AggregateStats
from ansible_collections.edgeslim.jetson.plugins.callback.slim_report import CallbackModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import report
from fake_display import FakeDisplay

WINDOW = (1000, 1180)  # the whole example page
ORIN_NANO_KB = 7802880
ORIN_NX_16GB_KB = 15655780


def _layer(status, mb, measured_by, **extra):
    return {"status": status, "reclaimed_mb": mb, "measured_by": measured_by, "attributed_mb": None, **extra}


def _memory(avail_before, avail_after, total_gain_kb=0, rebooted=False, total_kb=ORIN_NANO_KB):
    return {
        "before": {"MemTotal_kb": total_kb, "MemAvailable_kb": avail_before, "boot_id": "boot-1"},
        "after": {
            "MemTotal_kb": total_kb + total_gain_kb,
            "MemAvailable_kb": avail_after,
            "boot_id": "boot-2" if rebooted else "boot-1",
        },
    }


def example_fleet() -> tuple[AggregateStats, list[str]]:
    """A realistic run of slim.yml: three warehouse robots slimmed on all three layers, two smart cameras whose
    profile had nothing to change, a robot whose SWIOTLB health check failed (layer scope: its services stay
    slimmed), and a robot a canary abort never reached. Published the way the roles do (set_stats per host,
    aggregate) and with Ansible's own per-host counters."""
    stats = AggregateStats()
    robots = {"robot-01": (861.2, 60.0, 98.0), "robot-02": (858.4, 60.0, 98.0), "robot-03": (842.9, 60.0, 96.0)}
    for host, (services, swiotlb, carveouts) in robots.items():
        stats.increment("ok", host)
        gain = int((swiotlb + carveouts) * 1024)
        data = {
            "model": "NVIDIA Jetson Orin Nano Developer Kit",
            "profile": "warehouse_robot",
            "memory": _memory(5820000, 5820000 + int(services * 1024) + gain, gain, rebooted=True),
            "layers": {
                "services": _layer("applied", services, "MemAvailable", attributed_mb=services - 3.0),
                "swiotlb": _layer("applied", swiotlb, "MemTotal"),
                "carveouts": _layer("applied", carveouts, "MemTotal"),
            },
            "status": "ok",
        }
        stats.update_custom_stats("edgeslim", data, host)
    for host in ("camera-01", "camera-02"):
        stats.increment("ok", host)
        data = {
            "model": "NVIDIA Jetson Orin NX 16GB",
            "profile": "smart_camera",
            "memory": _memory(13100000, 13100400, total_kb=ORIN_NX_16GB_KB),
            "layers": {"services": _layer("unchanged", 0.0, "MemAvailable")},
            "status": "ok",
        }
        stats.update_custom_stats("edgeslim", data, host)
    stats.increment("ok", "robot-04")
    stats.increment("failures", "robot-04")
    failed = {
        "model": "NVIDIA Jetson Orin Nano Developer Kit",
        "profile": "warehouse_robot",
        "memory": _memory(5810000, 6690000, rebooted=True),
        "layers": {
            "services": _layer("applied", 859.0, "MemAvailable"),
            "swiotlb": _layer("failed", None, "MemTotal", details={"reason": "health check failed after the reboot"}),
        },
    }
    stats.update_custom_stats("edgeslim", failed, "robot-04")
    return stats, ["robot-05"]


def write_example_report(out_dir: Path) -> Path:
    """The callback's own path from stats to files (v2_playbook_on_stats), robot-05 targeted but never reached."""
    stats, not_reached = example_fleet()
    cb = CallbackModule()
    cb._display = FakeDisplay()
    cb._plugin_options = {"output_dir": str(out_dir), "formats": ["json", "markdown", "html"]}
    cb._not_reached = set(not_reached)
    cb.v2_playbook_on_stats(stats)
    return out_dir / "edgeslim-report.html"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, window: tuple[int, int] = WINDOW) -> None:
    with tempfile.TemporaryDirectory() as profile:
        argv = [
            chromium() or "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and png.is_file(), res.stdout + res.stderr


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and one bytes object of RGB triples per row (8-bit RGB or RGBA, non-interlaced PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _compression, _filter, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
        rgb = line if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows.append(bytes(rgb))
    return width, height, rows


def colour_counts(png: Path, colours: list[str]) -> dict[str, int]:
    """How many pixels of the screenshot have exactly each #rrggbb colour."""
    rows = decode_png(png.read_bytes())[2]
    wanted = {bytes.fromhex(c[1:]): c for c in colours}
    counts = dict.fromkeys(colours, 0)
    for row in rows:
        for key, name in wanted.items():
            start = row.find(key)
            while start != -1:
                if start % 3 == 0:
                    counts[name] += 1
                start = row.find(key, start + 1)
    return counts


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="chromium is not installed (Debian package chromium; `make host` installs it)"
)


def test_png_decoder_on_a_known_image():
    """The decoder itself, on a 3x2 RGB PNG with the Sub, Up and Paeth filters built by hand."""
    pixels = [b"\x10\x20\x30\x40\x50\x60\x70\x80\x90", b"\x11\x21\x31\x41\x51\x61\x71\x81\x91"]
    sub = bytes([1]) + bytes(pixels[0][:3]) + bytes((pixels[0][i] - pixels[0][i - 3]) & 0xFF for i in range(3, 9))
    paeth = bytes([4]) + bytes((pixels[1][i] - pixels[0][i]) & 0xFF if i < 3 else 0 for i in range(9))
    # Paeth for x >= 1 with a=left, b=up, c=up-left: predictor chosen by the spec; compute it the slow way.
    line = bytearray(paeth[1:])
    for i in range(3, 9):
        a, b, c = pixels[1][i - 3], pixels[0][i], pixels[0][i - 3]
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        line[i] = (pixels[1][i] - pred) & 0xFF
    raw = sub + bytes([4]) + bytes(line)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    assert decode_png(png) == (3, 2, pixels)


@needs_chromium
def test_chromium_renders_the_layers_and_statuses(tmp_path):
    page = write_example_report(tmp_path)
    html_text = page.read_text(encoding="utf-8")
    assert "<script" not in html_text and "http://" not in html_text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    png = tmp_path / "report.png"
    screenshot(page, png)
    assert decode_png(png.read_bytes())[:2] == WINDOW

    # The same page with nothing reclaimed: only the legend swatches carry the layer colours.
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    rows = report.build_rows({"robot-01": {"layers": {"services": {"status": "unchanged", "reclaimed_mb": 0}}}},
                             {"robot-01": "ok"})  # fmt: skip
    (empty_dir / "edgeslim-report.html").write_text(report.render_html(rows), encoding="utf-8")
    empty_png = tmp_path / "empty.png"
    screenshot(empty_dir / "edgeslim-report.html", empty_png)

    layers = [report.LAYER_COLOURS[n] for n in report.LAYERS]
    statuses = [report.STATUS_COLOURS[s] for s in ("ok", "failed", "not_reached")]
    full, bare = colour_counts(png, layers + statuses), colour_counts(empty_png, layers + statuses)
    for name in report.LAYERS:
        colour = report.LAYER_COLOURS[name]
        # Bars: the fleet bar (~500 px wide for services) and one bar per robot, far more than the swatches.
        assert full[colour] > bare[colour] + 1500, (name, full[colour], bare[colour])
    assert bare[report.LAYER_COLOURS["services"]] > 0  # the legend swatches render on the empty page too
    for status in ("ok", "failed", "not_reached"):
        colour = report.STATUS_COLOURS[status]
        assert full[colour] > bare[colour], (status, full[colour], bare[colour])


def test_example_report_files(tmp_path):
    """The example fleet's statuses as the callback decides them (the picture shows these)."""
    write_example_report(tmp_path)
    md = (tmp_path / "edgeslim-report.md").read_text(encoding="utf-8")
    html_text = (tmp_path / "edgeslim-report.html").read_text(encoding="utf-8")
    for host, status in (("robot-01", "ok"), ("camera-01", "ok"), ("robot-04", "failed"), ("robot-05", "not_reached")):
        assert host in md and host in html_text
        assert f"{host} | " in md and status in md
    assert '"robot-04 (failed)"' in md and '"robot-05 (not_reached)"' in md
    assert "```mermaid" in md and "xychart-beta" in md


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "report-example.png")
    with tempfile.TemporaryDirectory() as tmp:
        screenshot(write_example_report(Path(tmp)), target.resolve())
    print(f"wrote {target}")
