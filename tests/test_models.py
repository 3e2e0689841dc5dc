"""Model names: aliases convert once into the cache; HF ids and folders pass through; bad paths are named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcts_cot.errors import UserError
from mcts_cot.models import cpu_has_bf16, resolve_dtype, resolve_model


def test_hf_ids_and_folders_pass_through(tiny_model_dir):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_bad_local_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no such folder"):
        resolve_model("./runs/nothing-here")
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_resolve_dtype():
    assert resolve_dtype("auto", gpu=True) == "bfloat16"
    assert resolve_dtype("auto", gpu=False) == ("bfloat16" if cpu_has_bf16() else "float32")
    assert resolve_dtype("float16", gpu=False) == "float16"
    with pytest.raises(UserError, match="model.dtype"):
        resolve_dtype("fp8", gpu=True)


@pytest.mark.slow
def test_embedded_alias_resolves_once_with_tokenizer_template_and_eos():
    from transformers import AutoConfig, GenerationConfig

    from mcts_cot.models import load_tokenizer

    path = Path(resolve_model("smollm2-135m"))
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    start = time.perf_counter()
    assert resolve_model("smollm2-135m") == str(path)
    assert time.perf_counter() - start < 0.5  # cached: no second conversion
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    tok = load_tokenizer("smollm2-135m")
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert GenerationConfig.from_pretrained(path).eos_token_id == tok.eos_token_id
    assert AutoConfig.from_pretrained(path).model_type == "llama"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_concurrent_first_use_converts_once(tmp_path):
    """Two processes resolving the alias into an empty cache: one converts, the other waits for it."""
    code = "from mcts_cot.models import resolve_model; print(resolve_model('smollm2-135m'))"
    env = {**os.environ, "MCTS_COT_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {out.strip().splitlines()[-1] for out, _ in outs}  # the last line: libraries may log to stdout
    assert paths == {str(tmp_path / "smollm2-135m-instruct-v1")}
    assert sum("converting" in err for _, err in outs) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".smollm2") and "tmp" in p.name] == []
