"""The one device resolver of the engine: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` to a device.

Training, search, retraining, the report and prediction all resolve their ``--device`` here, so the
same words mean the same device everywhere and an unusable one is one clear error.
"""

from __future__ import annotations

from engine.errors import ConfigError

#: What a ``--device`` option accepts (``cuda:N`` besides these).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N"


def check_device_name(device) -> str:
    """``device`` as text if it is auto, cpu, cuda or cuda:N; else ``ConfigError``."""
    name = str(device)
    if name in DEVICE_CHOICES or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ConfigError(f"device must be {DEVICE_HELP}, got {name!r}")


def cuda_count() -> int:
    """How many CUDA devices this process can use: 0 without CUDA (or when torch cannot tell)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU, not a crash
        return 0


def resolve_device(device="auto"):
    """The ``torch.device`` for auto, cpu, cuda or cuda:N; ``ConfigError`` when CUDA (or GPU N) is absent."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = check_device_name(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} was asked for but there are {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resolve_device_name(device="auto") -> str:
    """``resolve_device`` as text (``cpu``, ``cuda``, ``cuda:1``), for plain-data settings."""
    return str(resolve_device(device))


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> float | None:
    """The CPUs' worth of time this process's control group may use (``docker --cpus``, a Kubernetes
    limit), from cgroup v2's ``cpu.max`` or v1's CFS quota; None when unlimited or unreadable."""
    from pathlib import Path

    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.strip().lstrip("/")
        try:
            if controllers == "":  # v2: one unified hierarchy
                quota, period = (Path(root) / rel / "cpu.max").read_text().split()[:2]
                if quota != "max" and int(period) > 0:
                    return int(quota) / int(period)
            elif "cpu" in controllers.split(","):
                for name in (controllers, "cpu", "cpu,cpuacct"):
                    base = Path(root) / name / rel
                    if (base / "cpu.cfs_quota_us").is_file():
                        quota = int((base / "cpu.cfs_quota_us").read_text())
                        period = int((base / "cpu.cfs_period_us").read_text())
                        if quota > 0 and period > 0:
                            return quota / period
                        break
        except (OSError, ValueError):
            continue
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what ``taskset``, a SLURM allocation or
    ``docker --cpuset-cpus`` leave it), capped by its control group's CPU quota (``docker --cpus``),
    not the machine's count, which would oversubscribe a share of a large node."""
    import math
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.ceil(limit))
    return max(1, n)
