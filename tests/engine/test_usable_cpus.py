"""How many CPUs the engine shares out: the process's affinity, capped by its control group's quota
(a container's ``--cpus``), read from cgroup v2 or v1 files laid out as the kernel does."""

from __future__ import annotations

import os

import pytest

from engine import device
from engine.device import cgroup_cpu_limit, usable_cpus


def _cgroup(tmp_path, text: str, files: dict[str, str]):
    (tmp_path / "self_cgroup").write_text(text)
    for rel, content in files.items():
        f = tmp_path / "fs" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content)
    return str(tmp_path / "fs"), str(tmp_path / "self_cgroup")


@pytest.mark.parametrize("self_cgroup, files, limit", [
    ("0::/\n", {"cpu.max": "250000 100000\n"}, 2.5),  # v2, container at the root of its namespace
    ("0::/user.slice/job\n", {"user.slice/job/cpu.max": "100000 100000\n"}, 1.0),  # v2, nested
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),  # v2, no limit
    ("4:memory:/x\n2:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
                                                  "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 3.0),  # v1
    ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
    ("0::/gone\n", {}, None),  # unreadable: no limit assumed
])
def test_the_cgroup_quota_is_read_from_v2_and_v1(tmp_path, self_cgroup, files, limit):
    root, own = _cgroup(tmp_path, self_cgroup, files)
    assert cgroup_cpu_limit(root, own) == limit


def test_usable_cpus_is_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: None)
    assert usable_cpus() == 8
    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: 2.5)  # docker --cpus 2.5: three threads' worth
    assert usable_cpus() == 3
    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: 0.2)
    assert usable_cpus() == 1
    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: 32.0)
    assert usable_cpus() == 8


def test_training_uses_no_more_threads_than_usable_cpus(monkeypatch):
    """PyTorch's default thread count is the node's; a training without a thread setting is held to the
    usable CPUs while it runs, and the count is restored after. A thread setting is kept as given."""
    import torch

    from engine.train import trainer

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(trainer, "usable_cpus", lambda: 1)
        with trainer._torch_settings(torch.device("cpu"), None):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with trainer._torch_settings(torch.device("cpu"), 2):
            assert torch.get_num_threads() == 2
        monkeypatch.setattr(trainer, "usable_cpus", lambda: 4)
        with trainer._torch_settings(torch.device("cpu"), None):
            assert torch.get_num_threads() == 2  # never raised above PyTorch's own choice
    finally:
        torch.set_num_threads(before)
