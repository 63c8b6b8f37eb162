"""SWIOTLB debugfs counters, sampling, the sizing recommendation and the kernel's slot rounding.

Debugfs directories are laid out as the kernels write them: ``io_tlb_nslabs`` via debugfs_create_ulong and
``io_tlb_used``/``io_tlb_used_hiwater`` via DEFINE_DEBUGFS_ATTRIBUTE, all "%llu\\n"; 5.10 and 5.15 have no hiwater
file [KERNEL-SWIOTLB-5.10/5.15/6.8]. Figures: the stock 64 MiB pool (32768 slots), NVIDIA's 4 MiB example
(2048), the emulated boot's 32 MiB (16384, docs/emulated-boot.md), and the "buffer is full" line of
fixtures/l4t/dmesg-full.txt (total 2048, used 1920).
"""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb
from conftest import swiotlb_debugfs as debugfs


def test_read_6x_counters(tmp_path):
    r = tlb.read_counters(debugfs(tmp_path, nslabs=32768, used=12, hiwater=310))
    assert (r["present"], r["nslabs"], r["used"], r["hiwater"], r["problems"]) == (True, 32768, 12, 310, [])


def test_read_5x_counters_have_no_hiwater(tmp_path):
    r = tlb.read_counters(debugfs(tmp_path, nslabs=2048, used=0))
    assert (r["nslabs"], r["used"], r["hiwater"]) == (2048, 0, None)
    assert tlb.peak({**r, "used_max": 0}) == (0, "io_tlb_used")


def test_no_debugfs_and_no_pool(tmp_path):
    r = tlb.read_counters(str(tmp_path / "absent"))
    assert r["present"] is False and r["nslabs"] is None and "not present" in r["problems"][0]
    assert tlb.peak(r) == (None, None)
    # 5.15/6.8 create the directory but no files when no pool was allocated (swiotlb=noforce, RAM in the DMA zone)
    empty = tlb.read_counters(debugfs(tmp_path))
    assert empty["present"] is True and empty["nslabs"] is None and empty["problems"] == []


def test_garbage_is_reported_not_guessed(tmp_path):
    path = debugfs(tmp_path, nslabs=2048)
    (tmp_path / "swiotlb" / "io_tlb_used").write_text("-1\n")
    r = tlb.read_counters(path)
    assert r["used"] is None and "not a slot count" in r["problems"][0]


def test_sampling_keeps_the_largest_used(tmp_path):
    path = debugfs(tmp_path, nslabs=2048, used=0)
    now = [0.0]
    values = iter([700, 1920, 40])

    def sleep(seconds):
        now[0] += seconds
        (tmp_path / "swiotlb" / "io_tlb_used").write_text(f"{next(values)}\n")

    r = tlb.sample(path, window=15, interval=5, sleep=sleep, clock=lambda: now[0])
    assert (r["samples"], r["used_max"], r["used_min"], r["used"]) == (4, 1920, 0, 40)
    assert tlb.peak(r) == (1920, "io_tlb_used")
    with pytest.raises(tlb.SwiotlbError):
        tlb.sample(path, window=10, interval=0)


def test_hiwater_wins_over_samples_when_higher(tmp_path):
    r = tlb.sample(debugfs(tmp_path, nslabs=32768, used=12, hiwater=2500), window=0, interval=5)
    assert r["samples"] == 1 and tlb.peak(r) == (2500, "io_tlb_used_hiwater")


@pytest.mark.parametrize(
    ("release", "cpus", "requested", "expected"),
    [
        ("5.10.216-tegra", 6, 2048, 2048),  # R35: no areas, a multiple of 128 stays
        ("5.10.216-tegra", 6, 3000, 3072),  # ALIGN(3000, 128)
        ("5.15.148-tegra", 12, 3000, 3072),  # R36: the same, whatever the CPU count
        ("5.15.148-tegra", 12, 1024, 1024),
        ("6.8.12-tegra", 6, 2048, 2048),  # R38/R39 Orin Nano: 8 areas, 2048 is a power of two >= 1024
        ("6.8.12-tegra", 14, 2048, 2048),  # Thor: 16 areas, 2048 = 128 x 16
        ("6.8.12-tegra", 14, 1024, 2048),  # below 128 x 16 areas: raised to 2048
        ("6.8.12-tegra", 6, 3000, 4096),  # ALIGN -> 3072, not a power of two -> 4096
        ("6.8.12-tegra", 12, 3072, 4096),  # 6 MiB asked, 8 MiB allocated
        ("6.8.12-tegra", 6, 32768, 32768),  # the 64 MiB default is left alone
        ("6.1.0-28-arm64", 1, 16384, 16384),  # the emulated boot (-smp 1): one area
    ],
)
def test_allocated_slots(release, cpus, requested, expected):
    assert tlb.allocated_slots(requested, release, cpus)[0] == expected


def test_allocated_slots_areas_from_the_command_line_and_unknowns():
    assert tlb.allocated_slots(2048, "6.8.12-tegra", cpus=6, nareas=32)[0] == 4096  # swiotlb=2048,32: 128 x 32
    assert tlb.allocated_slots(2048, "6.8.12-tegra", cpus=6, nareas=0)[0] == 2048  # 0 areas means 1
    assert tlb.allocated_slots(1000, "6.8.12-tegra", cpus=None) == (1024, tlb.allocated_slots(1000, "6.8", None)[1])
    assert "areas unknown" in tlb.allocated_slots(1000, "6.8.12-tegra", cpus=None)[1]
    for bad in (0, -128, True, "2048"):
        with pytest.raises(tlb.SwiotlbError):
            tlb.allocated_slots(bad, "6.8.12-tegra", 6)


def test_pool_accepted_rounding_instead_of_the_exact_request():
    expected, _how = tlb.allocated_slots(3072, "6.8.12-tegra", 12)
    assert tlb.pool_accepted(expected, pool_slots=4096) is True  # what 6.8 allocates for swiotlb=3072
    assert tlb.pool_accepted(expected, pool_slots=3072) is False  # not what the kernel would have done
    assert tlb.pool_accepted(2048, pool_slots=32768) is False  # the change is not in effect
    # The log prints (nslabs << 11) >> 20: 2176 slots = 4.25 MiB shows as (4MB)
    assert tlb.pool_accepted(2176, pool_log_mib=4) is True and tlb.log_mib(2176) == 4
    assert tlb.pool_accepted(2048, pool_log_mib=64) is False
    assert tlb.pool_accepted(2048) is None


def test_helpers_on_real_strings():
    assert tlb.kernel_version("5.15.148-tegra") == (5, 15) and tlb.kernel_version("") is None
    assert tlb.possible_cpus("0-5\n") == 6 and tlb.possible_cpus("0-3,6-7") == 6 and tlb.possible_cpus("0") == 1
    assert tlb.possible_cpus("garbage") is None
    assert tlb.nareas_of("2048,4,force") == 4 and tlb.nareas_of("2048,force") is None and tlb.nareas_of(None) is None
    assert tlb.mib_to_slots(4) == 2048 and tlb.mib_to_slots(64) == 32768


def test_recommend_twice_the_peak_rounded_to_whole_mib():
    rec = tlb.recommend(2500, 32768, "5.15.148-tegra", 6)  # 2500 slots = 4.88 MiB, x2 = 9.77 -> 10 MiB
    assert (rec["size_mib"], rec["slots"], rec["kernel_slots"], rec["basis"]) == (10, 5120, 5120, "high-water mark x 2")
    assert rec["shrinks"] and not rec["saturated"]
    on68 = tlb.recommend(2500, 32768, "6.8.12-tegra", 6)  # 5120 slots is not a power of two on 6.8
    assert (on68["size_mib"], on68["kernel_slots"], on68["kernel_mib"]) == (10, 8192, 16.0)


def test_recommend_floor_and_saturation():
    idle = tlb.recommend(12, 32768, "5.15.148-tegra", 6)
    assert (idle["size_mib"], idle["basis"]) == (4, "floor (4 MiB)")
    # total 2048 (slots), used 1920 at the "buffer is full" moment; the hiwater can equal the pool
    full = tlb.recommend(2048, 2048, "5.15.148-tegra", 6)
    assert full["saturated"] and full["size_mib"] == 8 and not full["shrinks"]
    with pytest.raises(tlb.SwiotlbError):
        tlb.recommend(12, 32768, "5.15", 6, factor=0.5)
    with pytest.raises(tlb.SwiotlbError):
        tlb.recommend(12, 32768, "5.15", 6, floor_mib=0)


def test_sampling_count_does_not_drift_with_slow_reads(tmp_path, monkeypatch):
    path = debugfs(tmp_path, nslabs=2048, used=0)
    now = [0.0]
    real_read = tlb.read_counters

    def slow_read(p):
        now[0] += 0.3  # a read on a busy device takes time
        return real_read(p)

    monkeypatch.setattr(tlb, "read_counters", slow_read)
    r = tlb.sample(path, window=2, interval=1, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert r["samples"] == 3
