"""extlinux.conf line model: L4TLauncher's grammar, lossless round trips, targeted edits, refusals."""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

EXT = FIXTURES / "extlinux"
FILES = [
    "r36-stock.conf",
    "r35-stock.conf",
    "r38-thor.conf",
    "user-edited.conf",
    "r36-jetson-io-camera.conf",
    "crlf.conf",
]


def read(name: str) -> str:
    if name == "crlf.conf":  # generated: the repository keeps LF line endings (ansible-test line-endings)
        return (EXT / "r35-stock.conf").read_text().replace("\n", "\r\n")
    return (EXT / name).read_bytes().decode()


@pytest.mark.parametrize("name", FILES)
def test_round_trip_is_byte_identical(name):
    text = read(name)
    assert x.parse_extlinux(text).render() == text


def test_reading_follows_l4tlauncher():
    user = x.parse_extlinux(read("user-edited.conf"))
    assert user.default_label == "nvme" and user.timeout == 50
    nvme = user.default_entry()
    assert user.get(nvme, "MENU LABEL") == "boot from NVMe"  # '#' cuts the line
    assert user.get(nvme, "APPEND").endswith("rw rootwait quiet")
    assert x.parse_extlinux(read("r36-stock.conf")).summary()["entries"][0]["fdt"].endswith("p3767-0005-nv.dtb")
    # DEFAULT naming a missing label: L4TLauncher boots the first entry; reported, not fatal.
    gone = x.parse_extlinux(read("r36-stock.conf").replace("DEFAULT primary", "DEFAULT gone"))
    assert gone.default_entry().label == "primary" and gone.summary()["default_found"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TIMEOUT 30\n", "no LABEL entry"),
        ("LINUX /boot/Image\nLABEL a\n LINUX /x\n", "LINUX before any LABEL"),
        ("LABEL a\n LINUX /x\nLABEL a\n LINUX /y\n", "duplicate LABEL"),
        ("LABEL a\n KERNEL /boot/Image\n", "KERNEL is not supported"),
        ("LABEL a\n FDTDIR /boot/dtb\n LINUX /x\n", "FDTDIR is not supported"),
        ("LABEL a\n APPEND quiet\n", "has no LINUX line"),
        ("LABEL\n LINUX /x\n", "LABEL without a name"),
        ("LABEL a\n LINUX /x\n BOGUS 1\n", "unknown directive"),
    ],
)
def test_malformed_files_are_refused(text, message):
    with pytest.raises(x.ExtlinuxError, match=message):
        x.parse_extlinux(text)


def test_managed_entry_clone_default_and_exact_restore():
    text = read("r36-stock.conf")
    conf = x.parse_extlinux(text)
    assert conf.clone_entry("primary", "edgeslim", "edgeslim: slimmed")
    e = conf.entry("edgeslim")
    conf.set_key("edgeslim", "APPEND", x.set_cmdline_arg(conf.get(e, "APPEND"), "swiotlb", "2048"))
    conf.set_global("DEFAULT", "edgeslim")
    out = x.parse_extlinux(conf.render())
    assert out.default_entry().label == "edgeslim"
    assert x.get_cmdline_arg(out.get(out.default_entry(), "APPEND"), "swiotlb") == "2048"
    stock = x.parse_extlinux(text)
    assert out.get(out.entry("primary"), "APPEND") == stock.get(stock.entries[0], "APPEND")
    assert out.remove_entry("edgeslim") and out.set_global("DEFAULT", "primary")
    assert out.render() == text


def test_crlf_is_kept_on_edited_and_inserted_lines():
    conf = x.parse_extlinux(read("crlf.conf"))
    conf.set_key("primary", "FDT", "/boot/dtb/kernel_x.dtb")
    assert "FDT /boot/dtb/kernel_x.dtb\r\n" in conf.render()
    assert "\n" not in conf.render().replace("\r\n", "")


def test_comment_after_a_value_survives_an_edit():
    conf = x.parse_extlinux(read("user-edited.conf"))
    conf.set_key("nvme", "APPEND", "${cbootargs} root=/dev/nvme0n1p1 rw")
    assert "APPEND ${cbootargs} root=/dev/nvme0n1p1 rw # keep quiet" in conf.render()


def test_refusals_on_edit():
    conf = x.parse_extlinux(read("r36-stock.conf"))
    with pytest.raises(x.ExtlinuxError, match="cuts a line at '#'"):
        conf.set_key("primary", "APPEND", "quiet # oops")
    with pytest.raises(x.ExtlinuxError, match="no entry labelled"):
        conf.set_key("nope", "FDT", "/x")
    many = "".join(f"LABEL e{i}\n LINUX /boot/Image\n" for i in range(10))
    with pytest.raises(x.ExtlinuxError, match="reads only 10"):
        x.parse_extlinux(many).clone_entry("e0", "edgeslim")


def test_cmdline_helpers():
    line = "${cbootargs} root=/dev/a quiet swiotlb=65536 swiotlb=1"
    assert x.get_cmdline_arg(line, "swiotlb") == "1"  # last wins, as the kernel parses early params
    assert x.set_cmdline_arg(line, "swiotlb", "2048") == "${cbootargs} root=/dev/a quiet swiotlb=2048"
    assert x.set_cmdline_arg("a", "quiet", None) == "a quiet"
    assert x.remove_cmdline_arg(line, "swiotlb") == "${cbootargs} root=/dev/a quiet"
    assert x.get_cmdline_arg("quiet", "quiet") is None and x.get_cmdline_arg("quiet", "x") is False


# ---- properties ----------------------------------------------------------------------------------------------
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-./,:", min_size=1, max_size=12)
_space = st.sampled_from([" ", "  ", "\t", "      "])
_eol = st.sampled_from(["\n", "\r\n"])


@st.composite
def extlinux_files(draw):
    eol = draw(_eol)
    lines = []
    if draw(st.booleans()):
        lines.append(f"TIMEOUT {draw(st.integers(0, 99))}")
    labels = draw(st.lists(_word, min_size=1, max_size=5, unique=True))
    lines.append(f"DEFAULT {draw(st.sampled_from(labels))}")
    for label in labels:
        if draw(st.booleans()):
            lines.append("# " + draw(_word))
        lines.append(f"LABEL {label}")
        ind = draw(_space)
        lines.append(f"{ind}LINUX /boot/{draw(_word)}")
        for key in draw(st.lists(st.sampled_from(["INITRD", "FDT", "APPEND", "MENU LABEL"]), unique=True)):
            args = " ".join(draw(st.lists(_word, min_size=1, max_size=4)))
            trail = draw(st.sampled_from(["", "  ", " # note"]))
            lines.append(f"{ind}{key} {args}{trail}")
        if draw(st.booleans()):
            lines.append("")
    return eol.join(lines) + (eol if draw(st.booleans()) else "")


@settings(max_examples=300, deadline=None)
@given(extlinux_files())
def test_property_unchanged_files_round_trip(text):
    assert x.parse_extlinux(text).render() == text


@settings(max_examples=300, deadline=None)
@given(extlinux_files(), _word, _word)
def test_property_set_then_remove_restores_append_and_set_is_idempotent(text, key, value):
    conf = x.parse_extlinux(text)
    entry = conf.default_entry()
    append = conf.get(entry, "APPEND") or ""
    key = "k" + "".join(c for c in key if c.isalnum() or c in "_-.")  # a kernel parameter name
    once = x.set_cmdline_arg(append, key, value)
    assert x.set_cmdline_arg(once, key, value) == once
    assert x.get_cmdline_arg(once, key) == value
    if x.get_cmdline_arg(append, key) is False:
        assert x.remove_cmdline_arg(once, key) == " ".join(append.split())


@settings(max_examples=200, deadline=None)
@given(extlinux_files())
def test_property_managed_entry_is_removable_without_trace(text):
    conf = x.parse_extlinux(text)
    if len(conf.entries) >= x.MAX_ENTRIES or conf.entry("edgeslim"):
        return
    default = conf.default_label
    conf.clone_entry(conf.default_entry().label, "edgeslim")
    conf.set_global("DEFAULT", "edgeslim")
    again = x.parse_extlinux(conf.render())
    again.remove_entry("edgeslim")
    again.set_global("DEFAULT", default)
    assert again.render() == text


def test_only_ten_entries_are_read():
    many = "".join(f"LABEL e{i}\n LINUX /boot/Image\n" for i in range(12))
    summary = x.parse_extlinux(many).summary()
    assert summary["labels"] == [f"e{i}" for i in range(10)] and summary["ignored_entries"] == ["e10", "e11"]
    assert summary["boot_entry"]["label"] == "e0"  # no DEFAULT: the first entry boots


CAMERA = "/boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo"
OURS = "/boot/edgeslim/carveouts.dtbo"


def test_jetson_io_entry_boots_with_its_camera_overlay():
    conf = x.parse_extlinux(read("r36-jetson-io-camera.conf"))
    summary = conf.summary()
    assert summary["boot_label"] == "JetsonIO" and summary["labels"] == ["primary", "JetsonIO"]
    assert summary["boot_entry"]["overlays"] == [CAMERA] and summary["boot_entry"]["fdt"]


@pytest.mark.parametrize(
    ("existing", "ours", "merged"),
    [
        ([], [OURS], [OURS]),
        ([CAMERA], [OURS], [CAMERA, OURS]),  # the user's overlay stays, ours last
        ([CAMERA, OURS], [OURS], [CAMERA, OURS]),  # already ends with ours: unchanged (idempotent)
        ([OURS, CAMERA], [OURS], [CAMERA, OURS]),  # ours moved last, not duplicated
        (["/boot/a.dtbo", CAMERA, "/boot/a.dtbo"], [OURS], ["/boot/a.dtbo", CAMERA, OURS]),  # order kept, deduped
        ([CAMERA], [OURS, OURS], [CAMERA, OURS]),
    ],
)
def test_merge_overlays_keeps_the_entrys_overlays_and_appends_ours_last(existing, ours, merged):
    assert x.merge_overlays(existing, ours) == merged
    assert x.merge_overlays(merged, ours) == merged
