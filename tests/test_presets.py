"""Prompt presets: the embedded model's two-shot prompt (the default `prompt` section) and the Qwen-style
preset for instruction models on a GPU (configs/presets/qwen-math/). No such model runs here, so a preset is
checked for what can be checked without one: how it renders through a ChatML template (the byte tokenizer
of `mcts_cot.tiny`), that its answer format is the one the extractor reads, and that its token limits fit
the task's solutions."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcts_cot.answers import extract_answer
from mcts_cot.config import PromptConfig, load_config
from mcts_cot.evaluate import EvalConfig
from mcts_cot.prompts import prompt_ids
from mcts_cot.search import SearchConfig
from trainers.config import TrainConfig

QWEN = Path(__file__).resolve().parents[1] / "configs" / "presets" / "qwen-math"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_ROOM = 1024  # tokens left for the prompt: MATH's longest problems are under 1,000 tokens


def _qwen(command: str):
    cls = {"search": SearchConfig, "eval": EvalConfig, "train": TrainConfig}[command]
    return load_config(cls, QWEN / f"{command}.yaml")


@pytest.mark.parametrize("command", ["search", "eval"])
def test_the_qwen_preset_renders_qwens_chain_of_thought_prompt(byte_tok, command):
    text = byte_tok.decode(prompt_ids(byte_tok, _qwen(command).prompt, "What is $1 + 1$?"))
    assert text == (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
                    "<|im_start|>user\nWhat is $1 + 1$?<|im_end|>\n<|im_start|>assistant\n")


def test_the_qwen_preset_searches_in_the_format_it_is_evaluated_in():
    assert _qwen("search").prompt == _qwen("eval").prompt


def test_the_qwen_preset_limits_fit_math_length_solutions():
    """Today's defaults stop eval at 512 tokens and training at 2,048; a MATH solution of an instruction
    model runs to thousands. Each limit leaves room for the prompt in the model's context, and training
    takes a searched path with its prompt uncut."""
    search, evaluate, train = _qwen("search"), _qwen("eval"), _qwen("train")
    assert evaluate.sampling.max_tokens >= 2048 and search.policy.max_path_tokens >= 2048
    assert evaluate.sampling.max_tokens + PROMPT_ROOM <= evaluate.backend.max_model_len
    assert search.policy.max_path_tokens + PROMPT_ROOM <= search.backend.max_model_len
    assert train.max_length >= search.policy.max_path_tokens + PROMPT_ROOM
    assert search.policy.stop == ["\n\n"] and search.policy.max_step_tokens >= 256  # a step is a paragraph


def test_the_answer_format_each_preset_asks_for_is_the_one_the_extractor_reads():
    qwen_style = "We have $x = \\frac{6}{8}$.\n\nSo the final answer is $\\boxed{\\frac{3}{4}}$."
    assert extract_answer(qwen_style) == "\\frac{3}{4}"
    assert [extract_answer(shot["solution"]) for shot in PromptConfig().few_shot] == ["8", "17"]


def test_the_two_shot_preset_is_the_default_prompt(byte_tok):
    """Every config without a `prompt` section (the embedded model's) gets two worked examples as earlier
    turns, written as blank-line separated steps: the plain policy's step boundary."""
    text = byte_tok.decode(prompt_ids(byte_tok, PromptConfig(), "Ana has 3 apples. How many apples does Ana have?"))
    assert text.count("<|im_start|>user\n") == 3 and text.count("<|im_start|>assistant\n") == 3
    assert text.endswith("<|im_start|>user\nAna has 3 apples. How many apples does Ana have?<|im_end|>\n"
                         "<|im_start|>assistant\n")
    assert all("\n\n" in shot["solution"] for shot in PromptConfig().few_shot)
    assert load_config(EvalConfig).sampling.max_tokens == 512  # built-in arithmetic: a few short steps


@pytest.mark.parametrize("command", ["search", "eval"])
def test_the_qwen_preset_runs_through_the_cli(tmp_path, tiny_model_dir, command):
    """The preset passes every check a run makes before it generates (the tiny model and the scripted
    backend stand in for the instruction model)."""
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, [command, "--config", str(QWEN / f"{command}.yaml"), "--model", str(tiny_model_dir),
                                   "--backend", "scripted", "--problems", "builtin:arithmetic:2",
                                   "--out", str(tmp_path / command), "--set", "verify.workers=1"])
    assert res.exit_code == 0, res.output
