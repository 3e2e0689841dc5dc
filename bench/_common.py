"""Helpers every bench script shares: the machine it ran on, the exact command, and the results file.

Each bench compares two things in one run, prints the ratio last and writes `bench/results/<name>.json`
with `machine()` and `command()` beside its figures (docs/DESIGN.md: "Benchmarks compare two things in one run
and print the ratio; record results with the machine they ran on").
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere, without installing
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide speed here (vector width, native bf16 / AMX): machines of one kind differ."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return [f for f in line.split(":", 1)[1].split() if f in wanted]


def machine() -> dict:
    """CPU model and flags, cores, RAM, GPU (if any), OS and package versions."""
    info = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["ram_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except Exception:  # torch missing or broken: the machine info still stands
        pass
    try:
        from mcts_cot.versions import package_versions

        info["versions"] = package_versions()
    except Exception:
        pass
    return info


def command() -> str:
    """The command line that produced this result, as it could be typed again."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def write_result(name: str, figures: dict, out: str | Path | None = None) -> Path:
    """bench/results/<name>.json (or `out`) with figures, machine and command; returns the path."""
    from mcts_cot.io import write_json

    path = Path(out) if out else RESULTS / f"{name}.json"
    write_json(path, {"bench": name, "command": command(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                      "machine": machine(), **figures})
    return path
