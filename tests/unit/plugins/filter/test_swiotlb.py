"""MiB <-> swiotlb= slots: 2 KiB slots, rounded up to 128 as the kernel does; never 0."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.swiotlb import swiotlb_mib, swiotlb_slots


@pytest.mark.parametrize(("mib", "slots"), [(4, 2048), ("8", 4096), (64, 32768), (3, 1536), (1, 512)])
def test_slots(mib, slots):
    assert swiotlb_slots(mib) == slots
    assert swiotlb_slots(mib) % 128 == 0


def test_upper_bound_is_the_modules():
    assert swiotlb_slots(1024) == 524288  # SWIOTLB_MAX_SLOTS, 1 GiB


@pytest.mark.parametrize("bad", [0, -4, "0", 2.5, "4.5", True, None, "four", 1025, 100000000])
def test_refused(bad):
    with pytest.raises(AnsibleFilterError):
        swiotlb_slots(bad)


def test_mib():
    assert swiotlb_mib(2048) == 4.0
    with pytest.raises(AnsibleFilterError):
        swiotlb_mib(False)
