"""End-to-end `run` on a tiny random Llama: learning, reference cache, resume, LoRA, SFT/SimPO, CLI, 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from trainers import synthetic
from trainers.config import TrainConfig
from trainers.trainer import run

ROOT = Path(__file__).resolve().parents[1]
FAST = ["max_steps=2", "logging_steps=1", "save_steps=1000", "per_device_train_batch_size=4",
        "per_device_eval_batch_size=8"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tiny_model_dir, tmp_path_factory):
    """16 toy pairs; the validation file is the training file, so eval loss measures fitting."""
    d = synthetic.write_data_dir(tmp_path_factory.mktemp("data"), str(tiny_model_dir), (0, 256), pairs=16)
    shutil.copy(d / "pairs.jsonl", d / "pairs_val.jsonl")
    return d


def train(data_dir, out, *overrides):
    cfg = load_config(TrainConfig, overrides=[f"data={data_dir}", *FAST, *overrides])
    return run(cfg, out).metrics


@pytest.fixture(scope="module")
def untrained(data_dir, tmp_path_factory):
    """lr = 0: the evaluation loss of the initial model (and the first, cache-missing run)."""
    return train(data_dir, tmp_path_factory.mktemp("untrained"), "learning_rate=0.0")


def test_live_reference_agrees_with_cached(data_dir, untrained, tmp_path):
    assert [f["hit"] for f in untrained["reference"]["files"].values()] == [False, False]
    live = train(data_dir, tmp_path / "live", "learning_rate=0.0", "reference=live")
    assert live["reference"] == {"mode": "live", "files": {}}
    assert live["eval"]["eval_loss"] == pytest.approx(untrained["eval"]["eval_loss"], abs=1e-5)


def test_short_run_lowers_the_loss_and_hits_the_reference_cache(data_dir, untrained, tmp_path):
    trained = train(data_dir, tmp_path / "out", "learning_rate=0.003", "max_steps=-1", "epochs=4",
                    "per_device_train_batch_size=8", "warmup_ratio=0.0", "prefix_sharing=true")
    assert [f["hit"] for f in trained["reference"]["files"].values()] == [True, True]
    assert trained["global_step"] == 8
    assert trained["eval"]["eval_loss"] < untrained["eval"]["eval_loss"] - 0.3
    assert trained["eval"]["eval_rewards/margins"] > 0
    logged = [h for h in trained["log_history"] if "rewards/accuracies" in h]
    assert {"loss/pref", "loss/nll", "nll", "rewards/chosen", "rewards/rejected", "masked_share"} <= set(logged[0])


def test_resume_continues_from_the_checkpoint(data_dir, tmp_path):
    args = ("learning_rate=0.002", "max_steps=6", "save_steps=3", "per_device_train_batch_size=2")
    full = train(data_dir, tmp_path / "full", *args)
    ckpt = tmp_path / "resumed" / "checkpoints" / "checkpoint-3"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "checkpoint-3", ckpt)
    resumed = train(data_dir, tmp_path / "resumed", *args, "resume=true")
    assert full["global_step"] == resumed["global_step"] == 6
    losses = [{h["step"]: h["loss"] for h in m["log_history"] if "loss" in h} for m in (full, resumed)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)  # steps 1-3 restored from the checkpoint, 4-6 re-run
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_lora_merged_output_is_a_plain_model_folder(data_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcts_cot.tiny import CHAT_TEMPLATE

    out = tmp_path / "lora"
    metrics = train(data_dir, out, "lora.enabled=true", "lora.rank=4", "reference=live", "learning_rate=0.01")
    assert metrics["global_step"] == 2 and not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert AutoTokenizer.from_pretrained(out).chat_template == CHAT_TEMPLATE
    assert (out / "config.yaml").is_file() and json.loads((out / "metrics.json").read_text())["global_step"] == 2


@pytest.mark.parametrize("objective", ["sft", "simpo"])
def test_sft_and_simpo_train_without_reference(data_dir, tmp_path, objective):
    metrics = train(data_dir, tmp_path / objective, f"objective={objective}", "reference=none", "beta=2.0")
    assert metrics["reference"]["mode"] == "none" and metrics["global_step"] == 2
    assert metrics["data"]["train"]["file"].endswith("sft.jsonl" if objective == "sft" else "pairs.jsonl")
    assert torch.isfinite(torch.tensor(metrics["eval"]["eval_loss"]))


def test_cli_train_and_user_errors(data_dir, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(tmp_path / "x"), "--set", "betta=1"])
    assert bad.exit_code == 2 and "did you mean 'beta'" in bad.output
    dpo_none = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(tmp_path / "x"),
                                   "--set", "reference=none"])
    assert dpo_none.exit_code == 2 and "needs a reference" in dpo_none.output
    missing = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "export-pairs" in missing.output


@pytest.mark.slow
def test_two_process_cpu_ddp_run(data_dir, tmp_path):
    """torchrun, 2 processes, gloo: each step sees 2 x 2 pairs, so 16 pairs make 4 steps per epoch."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "cli.py"), "train",
           "--data", str(data_dir), "--out", str(out), "--set", "max_steps=4", "--set", "per_device_train_batch_size=2",
           "--set", "save_steps=1000"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 4 and metrics["train"]["epoch"] == 1.0


@pytest.mark.parametrize("recipe", sorted(p.relative_to(ROOT) for p in (ROOT / "configs" / "train").rglob("*.yaml")))
def test_recipes_load(recipe):
    cfg = load_config(TrainConfig, ROOT / recipe)
    cfg.validate()
    if "ladder/6" in str(recipe):
        assert (cfg.objective, cfg.alpha, cfg.masking) == ("cdpo", 1.0, True)


def _missing_tracker() -> str:
    import importlib.util

    for name, module in (("wandb", "wandb"), ("mlflow", "mlflow"), ("comet_ml", "comet_ml"), ("clearml", "clearml")):
        if importlib.util.find_spec(module) is None:
            return name
    pytest.skip("every tracker this test knows is installed here")


def test_a_missing_tracker_says_which_package_to_install(data_dir, tmp_path):
    name = _missing_tracker()
    with pytest.raises(UserError, match=rf"report_to: tracker '{name}' needs the Python package .*: pip install "):
        train(data_dir, tmp_path / "out", f"report_to=[{name}]")
    with pytest.raises(UserError, match=r"report_to: unknown tracker 'tensorbord'; did you mean 'tensorboard'\?"):
        train(data_dir, tmp_path / "out2", "report_to=[tensorbord]")


def test_max_wall_s_stops_after_the_step_that_passes_it(data_dir, tmp_path):
    """A tiny time limit ends training after its first optimizer step (of 8), and the model is still saved."""
    metrics = train(data_dir, tmp_path / "out", "max_steps=-1", "epochs=4", "max_wall_s=1e-6")
    assert metrics["global_step"] == 1
    assert (tmp_path / "out" / "model.safetensors").is_file() or (tmp_path / "out" / "config.json").is_file()
