"""GRPO with verified rewards: each reward on known completions, and two GRPO steps on a tiny model."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.rewards import accuracy_reward, format_reward, reflection_reward
from mcts_cot.verify import Verifier
from trainers.config import TrainConfig
from trainers.trainer import run

TOWER = r"9^{9^{9^{9^{9}}}}"  # hangs math-verify (Math-Verify #59)

# (name, completion, gold): the cases the issue names.
CASES = {
    "correct": ("Step 1: 3 + 5 = 8.\n\nThe answer is \\boxed{8}.", "8"),
    "wrong": ("Step 1: 3 + 5 = 9.\n\nThe answer is \\boxed{9}.", "8"),
    "unverifiable": ("The answer is \\boxed{8}.", "\\frac{1}{"),  # gold that does not parse
    "hostile": (f"The answer is \\boxed{{{TOWER}}}.", "5"),
    "no answer": ("Step 1: 3 + 5 = 8.", "8"),
    "two boxes": ("First \\boxed{9}, no wait.\n\nThe answer is \\boxed{8}.", "8"),
}


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2, timeout_s=1.0) as v:
        yield v


def _score(reward, name):
    completion, gold = CASES[name]
    as_chat = [{"role": "assistant", "content": completion}]  # TRL passes chat completions for chat prompts
    return reward(completions=[completion, as_chat], answer=[gold, gold])


@pytest.mark.parametrize(("name", "expected"), [
    ("correct", 1.0), ("wrong", 0.0), ("unverifiable", 0.0), ("hostile", 0.0), ("no answer", 0.0),
    ("two boxes", 1.0),  # the last box is the answer (one extractor, as search and eval)
])
def test_accuracy_rewards_only_verified_answers(verifier, name, expected):
    start = time.monotonic()
    assert _score(accuracy_reward(verifier), name) == [expected, expected]
    assert time.monotonic() - start < 10  # a hostile answer costs its timeout, never a hang


@pytest.mark.parametrize(("name", "expected"), [
    ("correct", 1.0), ("wrong", 1.0), ("unverifiable", 1.0), ("hostile", 1.0), ("no answer", 0.0),
    ("two boxes", 0.0),
])
def test_format_rewards_exactly_one_final_box(name, expected):
    assert _score(format_reward, name) == [expected, expected]


@pytest.mark.parametrize(("completion", "expected"), [
    ("The answer is \\boxed{8}", 1.0),
    ("$\\boxed{8}$.", 1.0),
    ("\\[ \\boxed{\\frac{1}{2}} \\]", 1.0),
    ("The answer is \\boxed{8}. Then 8 + 1 = 9 more text", 0.0),  # not final
    ("The answer is \\boxed{}.", 0.0),  # empty
    ("The answer is \\boxed{8", 0.0),  # cut off by the length limit
])
def test_format_wants_the_box_at_the_end(completion, expected):
    assert format_reward(completions=[completion]) == [expected]


def test_reflection_rewards_a_marker_once():
    texts = ["3 + 5 = 8. Wait, let me check: 8 - 5 = 3. Wait.", "3 + 5 = 8.", "Hmm, 8."]
    assert reflection_reward(completions=texts) == [1.0, 0.0, 1.0]


# ------------------------------------------------------------------------------------------ training

FAST = ["objective=grpo", "max_steps=2", "logging_steps=1", "save_steps=1000", "per_device_train_batch_size=4",
        "grpo.num_generations=4", "grpo.max_completion_length=8", "grpo.problems.limit=8", "learning_rate=1e-3",
        "grpo.verify.workers=1"]


def test_two_grpo_steps_change_the_weights_and_log_the_rewards(tiny_model_dir, tmp_path, monkeypatch):
    """A random model never writes a box, so accuracy and format are 0 for every completion and GRPO's
    advantages would be 0 (no update, correctly). The reflection slot gets a reward that varies (parity of
    the text's code points) so the step has a signal."""
    from mcts_cot import rewards

    def reflection_reward(completions, **_):
        return [float(sum(map(ord, rewards.completion_text(c))) % 2) for c in completions]

    monkeypatch.setattr(rewards, "reflection_reward", reflection_reward)
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, overrides=[f"model.name={tiny_model_dir}", *FAST, "beta=0.04",
                                              "grpo.reflection_weight=0.5"])
    metrics = run(cfg, tmp_path / "model").metrics
    assert metrics["global_step"] == 2
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    logged = [row for row in metrics["log_history"] if "reward" in row]
    assert len(logged) == 2
    for key in ("rewards/accuracy_reward/mean", "rewards/format_reward/mean", "rewards/reflection_reward/mean",
                "kl"):
        assert key in logged[0], key
    assert (tmp_path / "model" / "rewards.png").stat().st_size > 0
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["objective"] == "grpo"


def test_a_batch_that_cannot_hold_whole_groups_is_a_user_error(tiny_model_dir, tmp_path):
    cfg = load_config(TrainConfig, overrides=[f"model.name={tiny_model_dir}", *FAST,
                                              "per_device_train_batch_size=3"])
    with pytest.raises(UserError, match="grpo.num_generations"):
        run(cfg, tmp_path / "model")


def test_cli_trains_the_grpo_recipe_with_lora_and_needs_data_only_for_pairs(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    sets = [arg for item in FAST for arg in ("--set", item)]
    out = tmp_path / "lora"
    result = runner.invoke(app, ["train", "--config", "configs/train/grpo_lora.yaml", "--out", str(out),
                                 "--model", str(tiny_model_dir), *sets, "--set", "lora.target_modules=[q_proj]"])
    assert result.exit_code == 0, result.output
    assert "grpo: 2 steps" in result.output
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()  # merged
    no_data = runner.invoke(app, ["train", "--out", str(tmp_path / "x"), "--model", str(tiny_model_dir)])
    assert no_data.exit_code == 2 and "pass --data" in no_data.output


def test_the_recipes_load():
    for name in ("grpo", "grpo_lora", "grpo_gpu"):
        cfg = load_config(TrainConfig, f"configs/train/{name}.yaml")
        assert cfg.objective == "grpo" and cfg.grpo.accuracy_weight == 1.0
