"""The yield proof's measuring stick: distinct correct responses (paraphrases count once), budgets read back from
one growing run equal runs with those smaller budgets, and `compare-bon` gives its arms equal tokens."""

from __future__ import annotations

import math

import pytest
from test_allocator import PROBLEMS, script

from mcts_cot.backends import scripted_factory
from mcts_cot.config import load_config
from mcts_cot.loop import CompareConfig, run_compare
from mcts_cot.loop.compare import ARMS
from mcts_cot.run import run_search
from mcts_cot.search import SearchConfig
from mcts_cot.store import iter_trees
from mcts_cot.tree import Tree
from mcts_cot.yields import (
    at_checkpoint,
    at_share,
    bootstrap,
    checkpoints,
    distinct_correct,
    nearest_share,
    normalise,
    paired_ratio,
)

FAST = ["prompt.system=''", "prompt.few_shot=[]", "verify.workers=1"]


def score(verdict: str) -> float:
    return float(verdict == "correct")


def hand_tree(responses: list[tuple[str, str]]) -> Tree:
    """A best-of-N-like tree: one child of the root per (text, verdict)."""
    tree = Tree(problem={"id": "p", "problem": "q", "answer": "1"}, prompt_ids=[])
    for text, verdict in responses:
        node = tree.add(tree.root, kind="sample", text=text, token_ids=[0])
        node.terminal, node.verdict = "answer", verdict
    return tree


def test_paraphrased_copies_count_once():
    assert normalise("  So  1,000 +\n\n 3.50 = 1003.5 ") == "So 1000 + 3.5 = 1003.5"
    assert normalise("x = 4.0 and 10.20 and 7.") == "x = 4 and 10.2 and 7."
    tree = hand_tree([("2 + 2 = 4.\n\nThe answer is 4.", "correct"),
                      ("2 + 2  = 4.0. The answer is 4.", "correct"),  # the same after normalisation
                      ("2 plus 2 is 4. The answer is 4.", "correct"),  # really different
                      ("2 + 2 = 5. The answer is 5.", "wrong")])
    assert distinct_correct(tree) == 2
    # a tree: two correct leaves under one step are two responses; text is the whole path
    t = Tree(problem={"id": "p", "problem": "q", "answer": "1"}, prompt_ids=[])
    step = t.add(t.root, kind="step", text="Step 1.\n\n", token_ids=[0])
    for text in ("So 1,000.", "So 1000.", "So 10."):
        leaf = t.add(step, kind="step", text=text, token_ids=[0])
        leaf.terminal, leaf.verdict = "answer", "correct"
    assert distinct_correct(t) == 2


def test_bootstrap_and_paired_ratio_intervals_contain_the_estimate_and_narrow_with_problems():
    small = bootstrap([0, 1, 2, 3] * 3)
    large = bootstrap([0, 1, 2, 3] * 300, stat=lambda v: sum(v) / len(v))
    assert small[0] < 18 < small[1] and large[0] < 1.5 < large[1] and large[1] - large[0] < 0.2
    ratio, lo, hi = paired_ratio([2, 2, 4, 4] * 10, [1, 1, 2, 2] * 10)
    assert ratio == 2.0 and lo == hi == 2.0  # every problem has ratio 2: no spread
    ratio, lo, hi = paired_ratio([1, 0, 0, 0], [0, 0, 0, 1])
    assert ratio == 1.0 and lo == 0.0 and hi == math.inf  # resamples without best-of-N's problem: infinite


def config(tmp_path, model, name: str, *sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, [
        f"out={tmp_path / name}", f"model.name={model}", "backend.name=scripted", "problems.source=builtin:arithmetic:6",
        "policy.children=3", "best_of_n.wave=2", "allocator.step_tokens=20", "allocator.enough_correct=6",
        "allocator.hopeless_after=6", "budget.success_correct=99", "budget.max_rollouts=999", *FAST, *sets])


def ordered(run_dir) -> list[Tree]:
    return sorted(iter_trees(run_dir), key=lambda t: str(t.problem["id"]))


@pytest.mark.parametrize("strategy", ["mcts", "best_of_n"])
def test_a_checkpoint_of_a_big_run_is_a_run_with_that_smaller_budget(tmp_path, tiny_model_dir, strategy):
    """The allocator's tranches do not depend on the total: up to the checkpoint where the small run's last
    tranche was cut, the big run's trees read back at each checkpoint are the small run's."""
    factory = scripted_factory(script)
    run_search(config(tmp_path, tiny_model_dir, "big", f"strategy={strategy}", "allocator.tokens_per_problem=400"), backends=factory)
    run_search(config(tmp_path, tiny_model_dir, "small", f"strategy={strategy}", "allocator.tokens_per_problem=120"), backends=factory)
    big, small = ordered(tmp_path / "big"), ordered(tmp_path / "small")
    last = checkpoints(small)
    assert checkpoints(big) > last >= 3
    for k in range(1, last - 1):
        a, ta = at_checkpoint(big, k, score)
        b, tb = at_checkpoint(small, k, score)
        assert ta == tb and [t.to_record()["nodes"] for t in a] == [t.to_record()["nodes"] for t in b]
    assert at_checkpoint(big, 1, score)[1] == 0


def test_a_best_of_n_share_read_back_equals_a_run_with_that_share(tmp_path, tiny_model_dir):
    factory = scripted_factory(script)
    run_search(config(tmp_path, tiny_model_dir, "big", "strategy=best_of_n", "best_of_n.tokens_per_problem=300"), backends=factory)
    run_search(config(tmp_path, tiny_model_dir, "small", "strategy=best_of_n", "best_of_n.tokens_per_problem=70"), backends=factory)
    cut, tokens = at_share(ordered(tmp_path / "big"), 70, 2, score)
    small = ordered(tmp_path / "small")
    assert tokens == sum(t.stats["generated_tokens"] for t in small)
    assert [t.to_record()["nodes"] for t in cut] == [t.to_record()["nodes"] for t in small]
    # the share whose total is nearest a target: never further from it than share = target / problems
    big = ordered(tmp_path / "big")
    for target in (150, 400, 700):
        naive = at_share(big, round(target / len(big)), 2, score)[1]
        assert abs(nearest_share(big, target, 2, score)[1] - target) <= abs(naive - target)


def test_compare_gives_the_four_arms_equal_tokens_and_trains_on_two(tmp_path, tiny_model_dir):
    cfg = CompareConfig(model=str(tiny_model_dir), backend="scripted", tokens_per_problem=300, budgets=2, yield_cap=6,
                        sets={"six": {"problems.source": "builtin:arithmetic:6"}}, train_models=True,
                        train_set="six", test_problems=3, arms=list(ARMS))
    cfg.search.set.update({"prompt.system": "", "prompt.few_shot": [], "verify.workers": 1, "policy.children": 3,
                           "allocator.step_tokens": 20, "allocator.hopeless_after": 6})
    cfg.train.set.update({"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256, "logging_steps": 1})
    cfg.eval.set.update({"prompt.system": "", "prompt.few_shot": [], "verify.workers": 1, "sampling.max_tokens": 32})
    train = {p.problem for p in PROBLEMS}

    def model(prompt: str, index: int) -> str:  # test problems (the evals) get a made-up answer
        known = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0] in train
        return script(prompt, index) if known else "The answer is \\boxed{3}."

    res = run_compare(tmp_path / "cmp", cfg, backends=scripted_factory(model))
    data = res["sets"]["six"]
    assert data["problems"] == len(PROBLEMS) and len(data["budgets"]) == 2
    request = 3 * 384  # the largest request of any arm: 3 children (or 2 samples) of at most the path limit
    for row in data["budgets"]:
        tokens = [row[arm]["tokens"] for arm in ("mcts", "fork", "best_of_n_allocated", "best_of_n")]
        assert max(tokens) - min(tokens) <= len(PROBLEMS) * request
        for tree in ("mcts", "fork"):
            assert row[f"{tree}_over_best_of_n"][0] == row[tree]["yield"] / max(1e-9, row["best_of_n"]["yield"])
    assert data["budgets"][0]["mcts"]["tokens"] < data["budgets"][1]["mcts"]["tokens"]
    assert (tmp_path / "cmp" / "yield.png").stat().st_size > 0
    assert "MCTS / best-of-N distinct correct paths" in (tmp_path / "cmp" / "results.md").read_text()
    assert "fork / best-of-N distinct correct paths" in (tmp_path / "cmp" / "results.md").read_text()
    evals = res["training"]["evals"]
    assert set(evals) == {"base", "mcts/search-0/train-0", "best_of_n/search-0/train-0"}
    assert "pooled over seeds" in (tmp_path / "cmp" / "results.md").read_text()
