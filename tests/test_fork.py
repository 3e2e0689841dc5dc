"""strategy fork: best-of-N's responses cut into step chains (the model's own ids), forks only below correct
responses and deepest first, shared steps one node and a repeated response a merged draw, and more distinct
correct paths per token than best-of-N where a correct prefix makes a correct end likely."""

from __future__ import annotations

import hashlib

import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.models import load_tokenizer
from mcts_cot.problems import arithmetic_problems
from mcts_cot.run import run_search
from mcts_cot.search import Engine, SearchConfig
from mcts_cot.store import iter_trees
from mcts_cot.yields import distinct_correct

PROBLEMS = arithmetic_problems(8, "train")
GOLD = {p.problem: int(p.answer) for p in PROBLEMS}


def script(prompt: str, index: int) -> str:
    """Three steps and an answer. The first step is good one time in four; after a good first step the answer
    is right nine times in ten, after a bad one one time in ten. A request continues the steps its prompt lacks."""
    problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    h = int(hashlib.sha256(f"{prompt}{index}".encode()).hexdigest(), 16)
    written = prompt.rsplit("<|im_start|>assistant\n", 1)[1]
    have = written.count("Step ")
    first = "good" if h % 4 == 0 else "bad"
    steps = "".join(f"Step {k}: {first if k == 1 else 'note'} {h % 997}.\n\n" for k in range(have + 1, 4))
    good = "Step 1: good" in written + steps
    right = (h >> 8) % 10 < (9 if good else 1)
    return steps + f"Try {h % 9973}. The answer is \\boxed{{{GOLD[problem] if right else GOLD[problem] + 1}}}."


def config(tmp_path, model, name: str, *sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, [
        f"out={tmp_path / name}", f"model.name={model}", "backend.name=scripted", "problems.source=builtin:arithmetic:8",
        "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1", "best_of_n.wave=2", "fork.n=2",
        "best_of_n.tokens_per_problem=1200", "budget.success_correct=99", *sets])


@pytest.mark.parametrize(("min_suffix", "deepest"), [(24, 3), (40, 2)])  # the answer line alone: ~33 tokens
def test_fork_trees_are_step_chains_forked_below_correct_responses_deepest_first(tmp_path, tiny_model_dir, min_suffix,
                                                                                  deepest):
    run_search(config(tmp_path, tiny_model_dir, "fork", "strategy=fork", f"fork.min_suffix_tokens={min_suffix}"),
               backends=scripted_factory(script, seeded=True))
    tok = load_tokenizer(str(tiny_model_dir))
    forks = 0
    for tree in iter_trees(tmp_path / "fork"):
        ends = [n for n in tree.nodes if n.terminal is not None]
        correct = [n for n in ends if n.verdict == "correct"]
        on_correct = {n.id for e in correct for n in tree.path(e)[:-1]}
        for end in ends:
            path = tree.path(end)
            # a chain of steps that joins back to the model's text, its own token ids cut where a step ends
            assert tok.decode(tree.path_ids(end)) == "".join(n.text for n in path)
            assert all(n.text.endswith("\n\n") for n in path[:-1]) and "\\boxed" in end.text
        branched = [n for n in tree.nodes[1:] if len(n.children) > 1]
        assert all(n.id in on_correct for n in branched)  # forks only below correct responses
        # the first fork: from the deepest step of the correct paths found before it whose suffix is long enough
        first = next((n for n in tree.nodes if n.parent not in (None, 0) and n.id != tree.nodes[n.parent].children[0]), None)
        if first is not None:
            forks += 1
            assert tree.nodes[first.parent].depth == deepest
        assert tree.root.N == len(ends) == tree.stats["rollouts"]
    assert forks >= 2


def test_fork_finds_more_distinct_correct_paths_per_token_than_best_of_n(tmp_path, tiny_model_dir):
    """The same per-problem token budget, trees stopped at K = 4 correct ends: forking pays only the suffix after
    a correct prefix, so it finds more distinct correct paths with no more tokens."""
    factory = scripted_factory(script, seeded=True)
    for strategy in ("fork", "best_of_n"):
        run_search(config(tmp_path, tiny_model_dir, strategy, f"strategy={strategy}", "best_of_n.tokens_per_problem=500",
                          "budget.success_correct=4"), backends=factory)
    fork, bon = (list(iter_trees(tmp_path / name)) for name in ("fork", "best_of_n"))
    tokens = [sum(t.stats["generated_tokens"] for t in run) for run in (fork, bon)]
    yields = [sum(min(distinct_correct(t), 4) for t in run) for run in (fork, bon)]
    assert tokens[0] <= tokens[1] and yields[0] > 1.3 * yields[1]
    assert sum(t.stats.get("forks", 0) for t in fork) > 0


def test_shared_steps_are_one_node_and_a_repeated_response_is_a_merged_draw(tmp_path, tiny_model_dir):
    def same(prompt: str, index: int) -> str:
        return "Step 1: add.\n\nThe answer is \\boxed{1}."

    run_search(config(tmp_path, tiny_model_dir, "same", "strategy=fork", "best_of_n.max_n=6",
                      "best_of_n.tokens_per_problem=100000"), backends=scripted_factory(same))
    for tree in iter_trees(tmp_path / "same"):
        assert len(tree.nodes) == 3 and tree.stats["rollouts"] == 1  # one end: a copy is no new correct path
        assert tree.stats["rollouts"] + tree.stats["merged"] == 6  # max_n counts draws, the copies too


@pytest.mark.parametrize(("sets", "message"), [
    (["policy.kind=typed"], "strategy fork: needs policy.kind plain"),
    (["best_of_n.n=4"], "strategy fork: samples to a token budget"),
])
def test_a_config_fork_cannot_run_is_one_line(tmp_path, tiny_model_dir, sets, message):
    cfg = config(tmp_path, tiny_model_dir, "bad", "strategy=fork", *sets)
    with pytest.raises(UserError, match=message):
        Engine(cfg, {}, None, None)
