"""Strategies are peers behind one shell: MCTS and best-of-N grow trees through the same `run_search`, label
and back up alike, resume alike and export alike; best-of-N's sample counts and token budgets are exact."""

from __future__ import annotations

import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.backends.scripted import ScriptedBackend
from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.export import ExportConfig, build
from mcts_cot.problems import Problem, arithmetic_problems
from mcts_cot.run import run_search
from mcts_cot.search import Engine, SearchConfig
from mcts_cot.store import iter_trees

GOLD = {p.problem: p.answer for p in arithmetic_problems(6, "train")}


def script(prompt: str, index: int) -> str:
    """A step first; then a right answer on even samples and a wrong one on odd ones. A whole response
    (best-of-N, no stop string) is the step and the answer together."""
    problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    gold = int(GOLD[problem])
    answer = f"The answer is \\boxed{{{gold if index % 2 == 0 else gold + 1}}}."
    if prompt.endswith("<|im_start|>assistant\n"):
        return f"Step {index}: think.\n\n{answer}"
    return answer


def search_config(tmp_path, model, strategy: str, name: str, *sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, [
        f"strategy={strategy}", f"out={tmp_path / name}", f"model.name={model}", "backend.name=scripted",
        "problems.source=builtin:arithmetic:6", "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1",
        "policy.children=2", "budget.max_rollouts=4", "budget.success_correct=2", "best_of_n.n=3", *sets])


@pytest.mark.parametrize("strategy", ["mcts", "best_of_n"])
def test_both_strategies_resume_through_the_shell_and_export_alike(tmp_path, tiny_model_dir, strategy, tree_records):
    factory = scripted_factory(script)
    whole = search_config(tmp_path, tiny_model_dir, strategy, "whole")
    manifest = run_search(whole, backends=factory)
    assert manifest["strategy"] == strategy and manifest["status"] == "complete"
    # The same run in two parts (3 problems, then all 6 into the same dir) equals the uninterrupted one.
    run_search(search_config(tmp_path, tiny_model_dir, strategy, "parts", "problems.limit=3"), backends=factory)
    run_search(search_config(tmp_path, tiny_model_dir, strategy, "parts"), backends=factory)
    assert tree_records(tmp_path / "parts") == tree_records(tmp_path / "whole")
    assert len(tree_records(tmp_path / "whole")) == 6
    for tree in iter_trees(tmp_path / "whole"):
        # One backup for all: the root's visits are the terminals scored, its value the correct ones.
        ends = [n for n in tree.nodes if n.verdict is not None]
        assert tree.root.N == len(ends) == tree.stats["rollouts"]
        assert tree.root.W == sum(n.verdict == "correct" for n in ends) == tree.stats["correct"]
        assert all(n.terminal == "answer" and n.answer is not None for n in ends)
    result = build(load_config(ExportConfig, None, ["val_fraction=0"]), [tmp_path / "whole"])
    assert result.sft and result.pairs
    assert {k for row in result.pairs for k in row} == set(result.pairs[0])  # one row contract for both
    assert all(row["chosen_complete"] and row["rejected_complete"] for row in result.pairs)


def test_best_of_n_samples_n_per_problem_in_one_request(tmp_path, tiny_model_dir):
    run_search(search_config(tmp_path, tiny_model_dir, "best_of_n", "bon"), backends=scripted_factory(script))
    for tree in iter_trees(tmp_path / "bon"):
        kids = tree.children(tree.root)
        assert len(kids) == 3 and all(k.depth == 1 and k.kind == "sample" for k in kids)
        assert [k.verdict for k in kids] == ["correct", "wrong", "correct"]
        assert tree.status == "success" and tree.reason == "3 samples, 2 correct"


def test_best_of_n_spends_its_token_share_within_one_request(byte_tok):
    cfg = load_config(SearchConfig, None, ["strategy=best_of_n", "best_of_n.tokens_per_problem=100",
                                           "best_of_n.wave=3", "policy.max_path_tokens=16"])
    engine = Engine(cfg, {"main": ScriptedBackend(byte_tok, lambda p, i: "x" * (5 + i))}, None, byte_tok)
    tree = engine.start(Problem(id="p", problem="?", answer="1"))
    while (exps := tree.plan()):
        (exp,) = exps
        for node in tree.grow(exp, engine.backends["main"].generate([exp.request])[0]):
            tree.score(node, "no_answer")
    spent = tree.stats["generated_tokens"]
    assert 100 <= spent < 100 + 3 * 16  # stops at the first request past the share, never more than one over
    assert tree.outcome() == ("failure", f"{tree.stats['rollouts']} samples, 0 correct")
    assert all(n.terminal == "eos" for n in tree.tree.nodes[1:])


def test_best_of_n_needs_a_count_or_a_budget(byte_tok):
    cfg = load_config(SearchConfig, None, ["strategy=best_of_n"])
    with pytest.raises(UserError, match="best_of_n.n .*, best_of_n.tokens_per_problem or allocator.tokens_per_problem"):
        Engine(cfg, {"main": ScriptedBackend(byte_tok)}, None, byte_tok)
