"""Honest eval numbers: maj@k by math equivalence with a stated tie rule, 95% intervals, unseeded samples."""

from __future__ import annotations

import json

import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.config import load_config
from mcts_cot.evaluate import EvalConfig, majority_score, run_eval, summary_table, wilson_interval
from mcts_cot.loop import before_after_table, ladder_table


def _eval(tiny_model_dir, tmp_path, answers: list[str], gold: str) -> dict:
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "p", "problem": "What is it?", "answer": gold}) + "\n")
    cfg = load_config(EvalConfig, None, None, **{
        "model.name": str(tiny_model_dir), "backend.name": "scripted", "problems.source": str(problems),
        "sampling.n": len(answers), "sampling.temperature": 0.7, "verify.workers": 1})
    return run_eval(cfg, tmp_path / "eval", backends=scripted_factory(lambda prompt, i: f"The answer is \\boxed{{{answers[i]}}}."))


def test_maj_groups_equivalent_answers_not_texts(tiny_model_dir, tmp_path):
    """Three ways to write 1/2 outvote two 3s."""
    summary = _eval(tiny_model_dir, tmp_path, ["\\frac{1}{2}", "0.5", "1/2", "3", "3"], gold="1/2")
    assert summary["maj@5"] == 1.0


def test_maj_tie_scores_the_share_of_right_groups(tiny_model_dir, tmp_path):
    """0.5 and 1/2 (right) against 3, 3 (wrong): a 2-2 tie scores 1/2, whatever the sample order."""
    summary = _eval(tiny_model_dir, tmp_path, ["3", "0.5", "3", "1/2"], gold="1/2")
    assert summary["maj@4"] == 0.5


def test_maj_joins_the_first_group_whose_first_member_matches():
    """Equivalence is not transitive: a~b and b~c but not a~c gives groups {a, b} and {c}."""
    pairs = {("a", "b"), ("b", "c")}

    def same(x, y):
        return (x, y) in pairs

    samples = [{"answer": a, "verdict": v} for a, v in [("a", "correct"), ("b", "correct"), ("c", "wrong"),
                                                         ("c", "wrong"), (None, "no_answer")]]
    assert majority_score(samples, 3, same) == 1.0  # {a, b}: 2 votes, {c}: 1
    assert majority_score(samples, 5, same) == 0.5  # {a, b}: 2, {c, c}: 2 — a tie
    assert majority_score(samples[4:], 1, same) == 0.0  # no answer, no vote


def test_wilson_interval_known_values():
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def _summary(**extra) -> dict:
    return {"accuracy": 0.5, "pass@8": 0.6, "maj@8": 0.4, "k": 8, "no_answer_rate": 0.1, "unverifiable_rate": 0.0,
            "truncated_rate": 0.0, "mean_generated_tokens": 10.0, "reflection_per_response": {"total": 0.0},
            "tokens_per_s": 1.0, "wall_s": 1.0, "problem_count": 100, "n": 8, "model": "m", "problems": "p",
            "backend": "vllm", "temperature": 0.7, **extra}


def _cells(table) -> str:
    return table.text()


def test_eval_table_prints_intervals_and_says_sampling_is_unseeded():
    text = _cells(summary_table(_summary(seeded=False), "out"))
    assert "50.0% [40.4–59.6]" in text and "60.0% [" in text and "40.0% [" in text
    assert "cannot seed" in text
    assert "cannot seed" not in _cells(summary_table(_summary(seeded=True), "out"))


def test_loop_and_ladder_tables_print_intervals():
    row = {"name": "base", "greedy": _summary(), "sampled": _summary(seeded=False), "greedy_dir": "x"}
    text = _cells(before_after_table([row]))
    assert text.count("50.0% [40.4–59.6]") == 2 and "60.0% [50.2–69.1]" in text and "cannot seed" in text
    assert "50.0% [40.4–59.6]" in _cells(ladder_table([row]))


def test_compare_table_and_stage_lines_print_intervals(tiny_model_dir, tmp_path):
    from rich.console import Console

    from mcts_cot.loop import EnginePool, Runner, compare_table

    arm = {"tokens": 10, "yield": 7, "yield_ci": (4, 9), "solved": 5, "pairs": 3}
    row = {"mcts": arm, "best_of_n": arm, "mcts_over_best_of_n": (1.0, 0.5, 2.0)}
    table = compare_table({"sets": {"s": {"problems": 10, "budgets": [row]}}}, cap=4)
    assert "7 [4–9]" in _cells(table) and "1.00× [0.50–2.00]" in _cells(table)
    assert "MCTS / best-of-N distinct correct paths 1.00× [0.50–2.00]" in table.caption
    console = Console(record=True, width=200)
    cfg = load_config(EvalConfig, None, None, **{"model.name": str(tiny_model_dir), "backend.name": "scripted",
                                                  "problems.source": "builtin:arithmetic:2", "verify.workers": 1})
    with EnginePool() as engines:
        Runner(console, engines).eval("base: greedy eval", cfg, tmp_path / "eval")
    assert "% [" in console.export_text()


def test_summary_says_whether_sampling_was_seeded(tiny_model_dir, tmp_path, monkeypatch):
    """A backend without per-request seeds (vLLM on CPU) makes sampled figures unseeded; greedy stays seeded."""
    from mcts_cot.backends.scripted import ScriptedBackend

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _eval(tiny_model_dir, tmp_path / "a", ["1", "2"], gold="1")["seeded"] is True
    monkeypatch.setattr(ScriptedBackend, "per_request_seeds", False, raising=False)
    assert _eval(tiny_model_dir, tmp_path / "b", ["1", "2"], gold="1")["seeded"] is False


def test_paired_difference_and_its_interval():
    from mcts_cot.evaluate import paired_difference

    d = paired_difference(40, 10, 200)  # the demo's +40 −10 on 200 problems
    assert d["difference"] == pytest.approx(0.15)
    # per-problem differences: 40 of +1, 10 of −1: variance 50/200 − 0.15² = 0.2275
    half = 1.959963984540054 * (0.2275 / 200) ** 0.5
    assert (d["difference_low"], d["difference_high"]) == pytest.approx((0.15 - half, 0.15 + half))
    assert d["difference_low"] > 0.08
    assert paired_difference(0, 0, 0)["difference"] == 0.0
