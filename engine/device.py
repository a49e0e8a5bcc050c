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


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what ``taskset``, a SLURM allocation or
    ``docker --cpuset-cpus`` leave it), not the machine's count, which would oversubscribe a share of a
    large node; the machine's count where there is no affinity (not Linux)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
