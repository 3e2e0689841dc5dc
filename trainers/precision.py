"""Which precision training runs in: `bf16` true, false or auto, resolved once and said in the log.

bf16 autocast pays off only where the hardware does bf16 arithmetic: a GPU that supports it, or a CPU with
avx512_bf16 / AMX. A CPU without them emulates every bf16 op; the demo's training step took 248 s there
against 9 s in float32 (27x). `auto` therefore follows the vLLM dtype rule (`mcts_cot.models.resolve_dtype`):
bf16 where it is native, float32 elsewhere. `true` is obeyed even where bf16 is emulated, with a warning.
"""

from __future__ import annotations

import torch

from mcts_cot.models import cpu_has_bf16

Bf16Setting = bool | str


def native_bf16(use_cpu: bool) -> tuple[bool, str]:
    """Whether the training device does bf16 natively, and the device as a phrase for the log."""
    if not use_cpu and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(), f"GPU {torch.cuda.get_device_name()}"
    return cpu_has_bf16(), "CPU"


def resolve_bf16(setting: Bf16Setting, use_cpu: bool) -> tuple[bool, str]:
    """(bf16 on?, one log line saying what was chosen and why); `setting` is validated by TrainConfig."""
    native, device = native_bf16(use_cpu)
    how = f"{device} {'has native bf16' if native else 'has no native bf16 (emulated: ~27x slower on CPU)'}"
    if setting == "auto":
        return native, f"bf16 autocast {'on' if native else 'off, float32'} (bf16: auto; the {how})"
    if setting and not native:
        return True, f"bf16 autocast on (bf16: true) although the {how}; bf16: auto would use float32"
    return bool(setting), f"bf16 autocast {'on' if setting else 'off, float32'} (bf16: {str(setting).lower()})"
