"""A record of the software and hardware a run used, saved into results.json."""

from __future__ import annotations

import os
import platform
import sys

import matplotlib
import numpy
import scipy
import sympy
import torch

__all__ = ["environment_info"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(device: str) -> dict:
    """Return versions, the device and thread counts."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "versions": {
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "sympy": sympy.__version__,
            "matplotlib": matplotlib.__version__,
        },
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        info["cuda_device"] = torch.cuda.get_device_name(index)
        info["cuda_version"] = torch.version.cuda
    return info
