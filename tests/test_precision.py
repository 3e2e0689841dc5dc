"""Training numerics: bf16 true/false/auto, the cached reference under the policy's own autocast, warmup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from trainers import losses, precision, synthetic
from trainers.config import TrainConfig
from trainers.trainer import run, training_arguments, warmup_arguments

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = 16
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tiny_model_dir, tmp_path_factory):
    return synthetic.write_data_dir(tmp_path_factory.mktemp("data"), str(tiny_model_dir), (0, 256), pairs=PAIRS)


def test_bf16_auto_follows_native_support(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    on, line = precision.resolve_bf16("auto", use_cpu=True)
    assert not on and "off, float32" in line and "bf16: auto" in line
    on, line = precision.resolve_bf16(True, use_cpu=True)
    assert on and "bf16: auto would use float32" in line  # obeyed, with the reason it is slow
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_bf16("auto", use_cpu=True)[0]
    assert not precision.resolve_bf16(False, use_cpu=True)[0]


def test_bf16_auto_reaches_the_training_arguments(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    cfg = load_config(TrainConfig, overrides=["bf16=auto", "use_cpu=true"])
    cfg.validate()
    assert training_arguments(cfg, tmp_path, has_eval=False).bf16 is False
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert training_arguments(cfg, tmp_path, has_eval=False).bf16 is True


def test_bf16_rejects_other_strings():
    cfg = load_config(TrainConfig, overrides=["bf16=yes please"])
    with pytest.raises(UserError, match="bf16"):
        cfg.validate()


@pytest.mark.parametrize("version", ["4.57.1", "5.19.0"])
def test_warmup_is_a_ratio_on_every_allowed_transformers(version):
    """4.x has warmup_ratio and takes warmup_steps=0.1 as 0.1 steps (no warmup); 5.x dropped warmup_ratio."""
    kwargs = warmup_arguments(0.1, version)
    if version.startswith("4"):
        assert kwargs == {"warmup_ratio": 0.1}
    else:
        assert kwargs == {"warmup_steps": 0.1}


def test_warmup_ratio_on_the_installed_transformers(tmp_path):
    cfg = load_config(TrainConfig, overrides=["warmup_ratio=0.1", "use_cpu=true"])
    assert training_arguments(cfg, tmp_path, has_eval=False).get_warmup_steps(200) == 20


def _step0(monkeypatch, data_dir, out, *overrides):
    """Policy minus cached reference log-probs of the first training batch, before any update, and the
    run's metrics. One batch holds every pair and the reference pass uses the same batch size, so both
    sides see the same padded shapes (dropout is 0 in the tiny model)."""
    seen = []
    real = losses.compute

    def spy(settings, per_token, inputs, ref):
        if not seen:
            pol = losses.sequence_logps(per_token, inputs["chosen_mask"], inputs["rejected_mask"],
                                        inputs["epsilon"].shape[0])
            seen.append(torch.cat([pol.chosen.detach() - ref[0].to(pol.chosen.dtype),
                                   pol.rejected.detach() - ref[1].to(pol.rejected.dtype)]))
        return real(settings, per_token, inputs, ref)

    monkeypatch.setattr(losses, "compute", spy)
    cfg = load_config(TrainConfig, overrides=[
        f"data={data_dir}", "max_steps=1", "logging_steps=1", "save_steps=1000", "use_cpu=true",
        f"per_device_train_batch_size={PAIRS}", f"per_device_eval_batch_size={PAIRS}", *overrides])
    metrics = run(cfg, out).metrics
    return seen[0], metrics


def test_step0_margins_are_zero_in_float32(monkeypatch, data_dir, tmp_path):
    diff, _ = _step0(monkeypatch, data_dir, tmp_path / "fp32", "bf16=false")
    assert diff.abs().max().item() < 1e-5


def test_step0_margins_are_bit_identical_under_bf16(monkeypatch, data_dir, tmp_path):
    """The reference runs under the policy's autocast, and a float32 cache is not reused for bf16."""
    _, fp32 = _step0(monkeypatch, data_dir, tmp_path / "fp32", "bf16=false")
    diff, bf16 = _step0(monkeypatch, data_dir, tmp_path / "bf16", "bf16=true")
    assert torch.count_nonzero(diff).item() == 0, diff
    caches = [next(iter(m["reference"]["files"].values()))["cache"] for m in (fp32, bf16)]
    assert caches[0] != caches[1]
    assert bf16["precision"]["bf16"] is True and "bf16: true" in bf16["precision"]["log"]


@pytest.mark.parametrize("recipe", ["demo", "ladder", "compare-bon"])
def test_cpu_recipes_choose_bf16_by_hardware(recipe):
    """bf16: true would emulate bf16 on a CPU without it (27x slower); the recipes say auto."""
    from mcts_cot.loop import CompareConfig, LadderConfig, LoopConfig, load_loop_config
    from mcts_cot.loop.stages import stage_config

    cls = {"demo": LoopConfig, "ladder": LadderConfig, "compare-bon": CompareConfig}[recipe]
    cfg = load_loop_config(ROOT / "configs" / "recipes" / f"{recipe}.yaml", cls=cls)
    stage = cfg.train_row if recipe == "ladder" else cfg.train
    train_cfg = stage_config(TrainConfig, stage)
    train_cfg.validate()
    assert train_cfg.bf16 == "auto"
    assert cls().__dict__[("train_row" if recipe == "ladder" else "train")].set["bf16"] == "auto"
