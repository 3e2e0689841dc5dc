"""The KV cache of vLLM on CPU, sized in GiB rather than as a fraction of memory.

vLLM-CPU reads `gpu_memory_utilization` as a fraction of NUMA node 0's memory, not of the machine's: on the
2-core VMs this project runs on, node 0 reported anywhere from 3.6 to 14 GiB while `free` showed 23 GiB, so a
fraction that fits one machine leaves a negative budget on the next and the engine refuses to start deep in
its worker process. We pass an absolute size (vLLM's `kv_cache_memory_bytes`) instead, checked here against
what the node has free and what one full-length sequence needs, so a bad size is one line that says what to set.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcts_cot.errors import UserError

GIB = 2**30
AUTO_MAX_GIB = 4.0  # the demo's waves (64 trees x 4 samples) fit with room; more buys nothing at 135M
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
KEY = "backend.cpu_kv_cache_gib"


def node_available_bytes(node: int = 0, root: str | Path = "/sys/devices/system/node") -> int | None:
    """Bytes vLLM-CPU will consider available on `node` (its own formula: free + file pages + reclaimable
    slab), or None where the kernel exposes no per-node meminfo (vLLM then uses the machine's numbers)."""
    path = Path(root) / f"node{node}" / "meminfo"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    info = {p[2].rstrip(":"): int(p[3]) * 1024 for p in (line.split() for line in lines) if len(p) >= 4}
    return sum(info.get(k, 0) for k in ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable"))


def kv_bytes_per_token(model_path: str, dtype: str) -> int:
    """K and V of every layer for one token, in the engine's dtype (vLLM-CPU caches in the model dtype)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * DTYPE_BYTES.get(dtype, 4)


def requested_gib(configured: float | None) -> float | None:
    """The size asked for: vLLM's own `VLLM_CPU_KVCACHE_SPACE` (whole GiB, it wins inside vLLM) when set,
    else the config value; None means choose automatically."""
    env = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
    if env:
        try:
            return float(int(env))
        except ValueError:
            raise UserError(f"VLLM_CPU_KVCACHE_SPACE={env!r}: expected a whole number of GiB") from None
    return configured


def cpu_kv_cache_bytes(gib: float | None, available: int | None, per_token: int, max_model_len: int) -> int:
    """The KV cache size to give vLLM-CPU, in bytes.

    `gib` None = automatic: AUTO_MAX_GIB, or half of what the node has free when that is less. An explicit
    size larger than the node's free memory, or too small for one sequence of `max_model_len` tokens, is a
    `UserError` naming the key to set (the engine would otherwise die in its worker with a long traceback).
    """
    if gib is not None and gib <= 0:
        raise UserError(f"{KEY}: must be > 0 GiB, got {gib} (or null to size it automatically)")
    size = int(gib * GIB) if gib is not None else int(AUTO_MAX_GIB * GIB)
    if gib is None and available is not None:
        size = min(size, available // 2)
    elif available is not None and size > available:
        raise UserError(f"{KEY}: {gib:g} GiB asked for, but NUMA node 0 has only {available / GIB:.1f} GiB free "
                        f"(vLLM-CPU allocates its KV cache there); set --set {KEY}={max(0.5, available / GIB / 2):.1f}")
    need = per_token * max_model_len
    if size < need:
        raise UserError(f"{KEY}: {size / GIB:.2f} GiB holds {size // per_token} tokens, fewer than one sequence of "
                        f"backend.max_model_len={max_model_len} ({need / GIB:.2f} GiB); set --set {KEY}="
                        f"{max(1.0, 2 * need / GIB):.1f} or a smaller backend.max_model_len")
    return size
