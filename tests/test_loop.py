"""The closed loop end to end on CPU in seconds: scripted generation (search, eval, best-of-N), the tiny random
model for training. Checks that every stage's output exists and feeds the next (run dir → data dir → model
dir → eval summaries), that round 2 searches with the round-1 model, that a trained model dir loads for real
generation, that the ladder trains and evaluates every row, and that best-of-N trees export unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from mcts_cot.backends import scripted_factory
from mcts_cot.config import load_config
from mcts_cot.loop import (
    BestOfNConfig,
    LadderConfig,
    LoopConfig,
    load_loop_config,
    run_ladder,
    run_loop,
    sample_best_of_n,
)
from mcts_cot.problems import arithmetic_problems

GOLD = {p.problem: p.answer for split in ("train", "test") for seed in (0, 1)
        for p in arithmetic_problems(6, split, seed=seed)}
FAST_PROMPT = {"prompt.system": "", "prompt.few_shot": []}


def script(prompt: str, index: int) -> str:
    """First call of a path: a step (two distinct ones); then a correct answer on even samples, a wrong one on odd."""
    problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    gold = int(GOLD[problem])
    if prompt.endswith("<|im_start|>assistant\n"):
        return f"Step {index % 2}: add.\n\n"
    return f"Wait, so \\boxed{{{gold if index % 2 == 0 else gold + 1}}}."


def eval_script(prompt: str, index: int) -> str:
    problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    return f"Step 1: ok.\n\nThe answer is \\boxed{{{GOLD[problem]}}}." if index % 3 else "I do not know."


TINY_TRAIN = {"max_steps": 2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
              "learning_rate": 1e-4, "max_length": 256, "logging_steps": 1, "save_steps": 1000}


def tiny_loop(tmp_path: Path, model: Path, **over) -> LoopConfig:
    cfg = LoopConfig(model=str(model), backend="scripted", out=str(tmp_path / "loop"), train_problems=4,
                     test_problems=3, sampled_test_problems=2)
    cfg.search.set.update({**FAST_PROMPT, "policy.children": 2, "budget.max_rollouts": 4, "budget.success_correct": 2,
                           "verify.workers": 1})
    cfg.train.set.update(TINY_TRAIN)
    for stage in (cfg.eval, cfg.sampled_eval):
        stage.set.update({**FAST_PROMPT, "verify.workers": 1, "sampling.max_tokens": 64})
    cfg.sampled_eval.set.update({"sampling.n": 3, "k": 3})
    for key, value in over.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def looped(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    cfg = tiny_loop(tmp, tiny_model_dir, rounds=2)
    return cfg, run_loop(cfg, backends=scripted_factory(script))


def test_every_stage_writes_and_feeds_the_next(looped, tiny_model_dir):
    cfg, results = looped
    root = Path(cfg.out)
    assert (root / "config.yaml").is_file() and (root / "results.md").is_file()
    assert "vs base (+/−, p)" in (root / "results.md").read_text()
    for k in (1, 2):
        rd = root / f"round-{k}"
        assert (rd / "search" / "trees.jsonl").stat().st_size > 0
        data_manifest = json.loads((rd / "data" / "manifest.json").read_text())
        assert data_manifest["inputs"][0]["run_dir"] == str(rd / "search")
        assert data_manifest["rows"]["pairs"] > 0
        metrics = json.loads((rd / "model" / "metrics.json").read_text())
        assert metrics["global_step"] == 2
        assert yaml.safe_load((rd / "model" / "config.yaml").read_text())["data"] == str(rd / "data")
        assert (rd / "model" / "config.json").is_file()
        for ev in ("eval-greedy", "eval-sampled"):
            summary = json.loads((rd / ev / "summary.json").read_text())
            assert summary["model"] == str(rd / "model")
    assert json.loads((root / "base" / "eval-greedy" / "summary.json").read_text())["model"] == str(tiny_model_dir)
    # sampled eval: 2 test problems x 3 samples
    assert json.loads((root / "base" / "eval-sampled" / "summary.json").read_text())["sample_count"] == 6
    assert [r["name"] for r in results["rows"]] == ["base", "round 1", "round 2"]


def test_round_two_searches_and_trains_from_the_round_one_model(looped, tiny_model_dir):
    cfg, _ = looped
    root = Path(cfg.out)
    r1_model = str(root / "round-1" / "model")
    assert yaml.safe_load((root / "round-1" / "search" / "config.yaml").read_text())["model"]["name"] == str(tiny_model_dir)
    assert yaml.safe_load((root / "round-2" / "search" / "config.yaml").read_text())["model"]["name"] == r1_model
    assert json.loads((root / "round-2" / "model" / "metrics.json").read_text())["model"] == r1_model
    # fresh problems per round: the two rounds search different train problems, never a test problem
    ids = [{json.loads(line)["problem"]["id"] for line in (root / f"round-{k}" / "search" / "trees.jsonl").open()}
           for k in (1, 2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert all(i.startswith("arith-train-") for i in ids[0] | ids[1])


def test_rerun_skips_finished_stages(looped, capsys):
    cfg, first = looped
    again = run_loop(cfg, backends=scripted_factory(script))
    assert again["stage_seconds"] == {}  # every stage was found done with the same config
    assert again["rows"][1]["greedy"]["accuracy"] == first["rows"][1]["greedy"]["accuracy"]
    out = capsys.readouterr().out
    assert "before / after" in out and "greedy acc" in out and "pass@3" in out and "round 2" in out
    assert out.count("round 1: data") == 1  # the table of where things are, printed once


def test_a_quiet_loop_prints_no_table(looped, capsys):
    cfg, _ = looped
    run_loop(cfg, console=Console(stderr=True, quiet=True), backends=scripted_factory(script))
    captured = capsys.readouterr()
    assert captured.out == "" and "before / after" not in captured.err


def test_trained_model_loads_for_real_generation(looped, tmp_path):
    cfg, _ = looped
    model = Path(cfg.out) / "round-1" / "model"
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--model", str(model), "--backend", "hf", "--problems", "builtin:arithmetic:2",
                              "--out", str(tmp_path / "ev"), "--set", "sampling.max_tokens=4", "--set", "verify.workers=1"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["sample_count"] == 2
    res = runner.invoke(app, ["search", "--model", str(model), "--backend", "hf", "--problems", "builtin:arithmetic:1",
                              "--out", str(tmp_path / "s"), "--set", "policy.max_path_tokens=6",
                              "--set", "policy.children=2", "--set", "budget.max_rollouts=2", "--set", "verify.workers=1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "trees.jsonl").stat().st_size > 0


def test_ladder_trains_and_evaluates_every_row(looped, tmp_path, capsys):
    cfg, _ = looped
    run_dir = Path(cfg.out) / "round-1" / "search"
    lcfg = load_loop_config("configs/recipes/ladder.yaml", cls=LadderConfig)
    lcfg.backend, lcfg.test_problems = "scripted", 2
    lcfg.eval.set.update({**FAST_PROMPT, "verify.workers": 1, "sampling.max_tokens": 64})
    lcfg.train_row.set.update({**TINY_TRAIN, "max_steps": 1})
    res = run_ladder(run_dir, tmp_path / "ladder", lcfg, backends=scripted_factory(eval_script))
    names = [r["name"] for r in res["rows"]]
    assert names == ["base", "SFT", "+ DPO", "+ Data Balance", "+ cDPO", "+ Joint Loss", "+ Masking"]
    for row in res["rows"][1:]:
        metrics = json.loads((Path(row["model"]) / "metrics.json").read_text())
        tcfg = yaml.safe_load((Path(row["model"]) / "config.yaml").read_text())
        assert metrics["global_step"] == 1
        if row["name"] != "SFT":  # every DPO row starts from the SFT model
            assert tcfg["model"]["name"] == res["rows"][1]["model"]
    objectives = {r["name"]: yaml.safe_load((Path(r["model"]) / "config.yaml").read_text()) for r in res["rows"][1:]}
    assert objectives["SFT"]["objective"] == "sft"
    assert objectives["+ DPO"]["objective"] == "dpo" and objectives["+ DPO"]["data"].endswith("data-unbalanced")
    assert objectives["+ Data Balance"]["data"].endswith("data-balanced")
    assert objectives["+ cDPO"]["objective"] == "cdpo" and objectives["+ cDPO"]["alpha"] == 0
    assert objectives["+ Joint Loss"]["alpha"] == 1 and not objectives["+ Joint Loss"]["masking"]
    assert objectives["+ Masking"]["masking"]
    # balanced data: each pair's chosen is the problem's shortest correct path; unbalanced: the longest
    bal = [orjson.loads(line) for line in (tmp_path / "ladder" / "data-balanced" / "pairs.jsonl").open("rb")]
    unb = [orjson.loads(line) for line in (tmp_path / "ladder" / "data-unbalanced" / "pairs.jsonl").open("rb")]
    assert bal and unb
    assert "ablation ladder" in capsys.readouterr().out


def test_best_of_n_trees_export_unchanged(tmp_path, tiny_model_dir):
    bon = BestOfNConfig(n=3, out=str(tmp_path / "bon"))
    bon.model.name, bon.backend.name, bon.verify.workers = str(tiny_model_dir), "scripted", 1
    bon.problems.source, bon.prompt.system, bon.prompt.few_shot = "builtin:arithmetic:2", "", []
    manifest = sample_best_of_n(bon, backends=scripted_factory(lambda prompt, i: script(prompt + "x", i)))
    assert manifest["samples_per_problem"] == 3
    res = CliRunner().invoke(app, ["export-pairs", str(tmp_path / "bon"), "--out", str(tmp_path / "bon-data"),
                                   "--set", "val_fraction=0"])
    assert res.exit_code == 0, res.output
    pairs = [orjson.loads(line) for line in (tmp_path / "bon-data" / "pairs.jsonl").open("rb")]
    # whole samples share no node; their shared prefix is the responses' common opening tokens, nothing more
    assert pairs and all(p["chosen_ids"][0] != p["rejected_ids"][0] for p in pairs)



def test_demo_recipe_is_the_default_and_stage_overrides_parse():
    assert load_loop_config("configs/recipes/demo.yaml") == LoopConfig()
    cfg = load_loop_config(None, ["rounds=3", "search.budget.max_rollouts=32", "train.learning_rate=1e-5",
                                  "search.config=configs/search/plain.yaml"])
    assert cfg.rounds == 3 and cfg.search.set["budget.max_rollouts"] == 32 and cfg.train.set["learning_rate"] == 1e-5
    assert cfg.search.config == "configs/search/plain.yaml"
    assert load_loop_config("configs/recipes/rounds.yaml").rounds == 2


def test_bad_recipe_values_are_one_line_errors(tmp_path):
    res = CliRunner().invoke(app, ["loop", "--set", "rounds=0", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "key 'rounds' must be >= 1, got 0" in res.output
    res = CliRunner().invoke(app, ["loop", "--set", "search.budget.max_rolouts=3", "--out", str(tmp_path), "--backend", "scripted"])
    assert res.exit_code == 2 and "max_rolouts" in res.output


def test_the_time_box_writes_its_sizes_into_the_stage_configs(looped):
    """With time_budget_s (the default) each round's search runs groups while `allocator.wall_s` lasts and
    training stops at `max_wall_s`: both chosen from the time left, recorded in the results and the configs."""
    from mcts_cot.search import SearchConfig
    from trainers.config import TrainConfig

    cfg, results = looped
    for k, r in enumerate(results["rounds"], start=1):
        sizes = r["sizes"]
        assert 60 <= sizes["search_wall_s"] <= cfg.time_budget_s and 30 <= sizes["train_wall_s"] <= cfg.time_budget_s
        rd = Path(cfg.out) / f"round-{k}"
        assert load_config(SearchConfig, rd / "search" / "config.yaml").allocator.wall_s == sizes["search_wall_s"]
        assert load_config(TrainConfig, rd / "model" / "config.yaml").max_wall_s == sizes["train_wall_s"]


def test_a_named_models_greedy_eval_is_cached_across_runs(tmp_path, monkeypatch):
    """The second eval of the same named model and settings copies the first one's result (no generation)
    and reports the seconds the first one took."""
    from rich.console import Console

    from mcts_cot.evaluate import EvalConfig
    from mcts_cot.loop import EnginePool, Runner
    from mcts_cot.loop.timebox import cached_eval

    monkeypatch.setenv("MCTS_COT_CACHE", str(tmp_path / "cache"))
    calls = []

    def counting(prompt: str, index: int) -> str:
        calls.append(prompt)
        return eval_script(prompt, index)

    cfg = load_config(EvalConfig, None, None, **{"model.name": "smollm2-135m", "backend.name": "scripted",
                                                  "problems.source": "builtin:arithmetic:3", "verify.workers": 1, **FAST_PROMPT})
    with EnginePool(scripted_factory(counting)) as pool:
        first, took = cached_eval(Runner(Console(quiet=True), pool), "base", cfg, tmp_path / "a")
        made = len(calls)
        again, took_again = cached_eval(Runner(Console(quiet=True), pool), "base", cfg, tmp_path / "b")
    assert made == 3 and len(calls) == made  # the second eval generated nothing
    assert again == first and took_again == pytest.approx(took)
    assert (tmp_path / "b" / "samples.jsonl").read_bytes() == (tmp_path / "a" / "samples.jsonl").read_bytes()
