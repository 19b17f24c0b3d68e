"""The media port range at the edge: a default clear of the kernel's ephemeral range, a start-up check, and
fd exhaustion reported as such (not as "no media ports")."""

from __future__ import annotations

import asyncio
import os
import resource
from pathlib import Path

import pytest

from dce.exchange.config import MediaConfig
from dce.media.ports import DescriptorsExhausted, PortsExhausted, ephemeral_overlap
from dce.media.relay import MediaRelay


def test_default_range_is_below_linux_ephemeral_range_in_even_odd_pairs(tmp_path: Path) -> None:
    low, high = MediaConfig().port_range
    assert low % 2 == 0 and high % 2 == 1
    linux = tmp_path / "ip_local_port_range"
    linux.write_text("32768\t60999\n")
    assert ephemeral_overlap(low, high, linux) is None
    assert ephemeral_overlap(30000, 40000, linux) == (32768, 40000)  # the old default


def test_overlap_is_none_when_the_kernel_range_cannot_be_read(tmp_path: Path) -> None:
    assert ephemeral_overlap(30000, 40000, tmp_path / "missing") is None
    garbage = tmp_path / "garbage"
    garbage.write_text("not numbers")
    assert ephemeral_overlap(30000, 40000, garbage) is None


async def test_out_of_descriptors_is_not_reported_as_no_ports() -> None:
    relay = MediaRelay(address="127.0.0.1", port_range=(18000, 18199), rtp_timeout_s=5,
                       loop=asyncio.get_running_loop())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        while True:  # use every descriptor up to the limit
            try:
                held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        with pytest.raises(DescriptorsExhausted) as info:
            await relay.allocate("call-1", on_timeout=lambda: None)
        assert isinstance(info.value, PortsExhausted)  # callers that catch PortsExhausted still do
        assert info.value.reason == "out of file descriptors"
        assert relay.ports.in_use == 0  # nothing half-taken
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await relay.close()
    session = await relay.allocate("call-2", on_timeout=lambda: None)  # and it works again
    session.close()
