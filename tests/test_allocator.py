"""The run-level allocator: tokens leave solved and hopeless problems for those in between; its trees do not
depend on how the requests were interleaved, nor on where a run was resumed; best-of-N spends through it alike.
Adaptive width: full where siblings disagree or the step is uncertain, narrow where they agree."""

from __future__ import annotations

import hashlib

import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.config import load_config
from mcts_cot.problems import arithmetic_problems
from mcts_cot.run import run_search
from mcts_cot.search import Engine, SearchConfig
from mcts_cot.search.allocator import Allocator, groups, need, split
from mcts_cot.search.config import AllocatorConfig
from mcts_cot.store import iter_trees
from mcts_cot.tree import Tree
from mcts_cot.verify import Verifier
from mcts_cot.yields import at_checkpoint, checkpoints

PROBLEMS = arithmetic_problems(6, "train")
GOLD = {p.problem: int(p.answer) for p in PROBLEMS}
EASY, HOPELESS = PROBLEMS[0].problem, PROBLEMS[1].problem


def script(prompt: str, index: int) -> str:
    """Problem 0: every answer right; problem 1: every answer wrong; the rest: one answer in three right.
    Each sample writes the steps its path still lacks (one or two, by problem), then its answer: a step
    request stops after the first step, a whole response (best-of-N) takes it all. The text depends only on
    the sample's own path and index."""
    problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    gold = GOLD[problem]
    h = int(hashlib.sha256(f"{prompt}{index}".encode()).hexdigest(), 16)
    right = problem == EASY or (problem != HOPELESS and h % 3 == 0)
    steps = 1 + gold % 2 - prompt.count("Step ")
    return "".join(f"Step {h % 97 + j}: think.\n\n" for j in range(max(0, steps))) + \
        f"Try {h % 9973}. The answer is \\boxed{{{gold if right else gold + 1 + h % 5}}}."


def config(tmp_path, model, name: str, *sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, [
        f"out={tmp_path / name}", f"model.name={model}", "backend.name=scripted", "problems.source=builtin:arithmetic:6",
        "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1", "policy.children=2", "best_of_n.wave=2",
        "allocator.tokens_per_problem=150", "allocator.step_tokens=20", "allocator.enough_correct=3",
        "allocator.hopeless_after=6", "budget.success_correct=99", "budget.max_rollouts=999", *sets])


def trees(run_dir) -> dict[int, Tree]:
    order = {p.id: i for i, p in enumerate(PROBLEMS)}
    return {order[t.problem["id"]]: t for t in iter_trees(run_dir)}


@pytest.mark.parametrize("strategy", ["mcts", "best_of_n", "fork"])
def test_tokens_leave_solved_and_hopeless_problems(tmp_path, tiny_model_dir, strategy):
    cfg = config(tmp_path, tiny_model_dir, "run", f"strategy={strategy}", "policy.children=3", "best_of_n.wave=3",
                 "allocator.tokens_per_problem=400", "allocator.enough_correct=6")
    # fork merges a repeated response, so its draws must differ as a seeded model's do
    run_search(cfg, backends=scripted_factory(script, seeded=strategy == "fork"))
    got = trees(tmp_path / "run")
    spent = {i: t.stats["generated_tokens"] for i, t in got.items()}
    # The solved problem is closed once it has enough correct ends, the hopeless one after 6 wrong ends.
    assert "enough_correct" in got[0].reason and got[0].stats["correct"] >= 6
    assert "hopeless" in got[1].reason and got[1].stats["rollouts"] == 6 and got[1].stats["correct"] == 0
    # The in-between problems (some right, some wrong) got more than the solved one.
    between = [spent[i] for i, t in got.items() if 0 < t.stats["correct"] < 6]
    assert between and min(between) > spent[0]
    # Never more than the budget, plus one request per tree (3 samples of at most the path limit).
    assert sum(spent.values()) <= 400 * 6 + 6 * 3 * 384
    assert all(len(t.stats["checkpoints"]) >= 1 for t in got.values())


@pytest.mark.parametrize("strategy", ["mcts", "best_of_n"])
def test_a_reserve_spends_what_the_others_cannot_use_on_the_hopeless_trees(tmp_path, tiny_model_dir, strategy):
    sets = [f"strategy={strategy}", "allocator.tokens_per_problem=1000", "allocator.hopeless_after=3",
            "allocator.enough_correct=5"]
    run_search(config(tmp_path, tiny_model_dir, "close", *sets), backends=scripted_factory(script))
    run_search(config(tmp_path, tiny_model_dir, "reserve", *sets, "allocator.hopeless=reserve"),
               backends=scripted_factory(script))
    close, reserve = trees(tmp_path / "close"), trees(tmp_path / "reserve")
    hopeless = {i for i, t in close.items() if "hopeless" in t.reason}
    assert 1 in hopeless
    # A tree with need never waited for the reserve: it is the closing run's tree.
    assert all(reserve[i].to_record()["nodes"] == close[i].to_record()["nodes"] for i in close if i not in hopeless)
    others_open = max(len(close[i].stats["checkpoints"]) for i in close if i not in hopeless)
    for i in hopeless:
        c, r = close[i], reserve[i]
        assert r.stats["rollouts"] > 3 and "hopeless" not in r.reason
        # The same tree, grown further (node for node; visit counts grow with it) ...
        assert [(n.parent, n.text) for n in r.nodes[:len(c.nodes)]] == [(n.parent, n.text) for n in c.nodes]
        # ... but only once no tree with need was open: no new tokens at those checkpoints (mark k = state at k).
        waited = r.stats["checkpoints"][len(c.stats["checkpoints"]):others_open + 1]
        assert all(tokens == c.stats["generated_tokens"] for tokens, _ in waited)
        assert len(waited) > 1 or strategy == "mcts"  # best-of-N's problem 1 is hopeless while others still need
    # Best-of-N spends the group's whole budget (up to one request past it); MCTS may run out of tree first.
    spent, spent_closing = (sum(t.stats["generated_tokens"] for t in run.values()) for run in (reserve, close))
    assert spent_closing < spent and (strategy == "mcts" or spent_closing < 6 * 1000 <= spent + 3 * 384)


def test_a_reserve_run_read_back_at_a_checkpoint_is_the_smaller_run(tmp_path, tiny_model_dir):
    """The reserve's turn depends on the trees' counts, not on the budget: a big run whose reserve grew, read
    back at checkpoint k, is still the run with the smaller budget."""
    sets = ["strategy=best_of_n", "allocator.hopeless=reserve", "allocator.hopeless_after=3", "allocator.enough_correct=5"]
    run_search(config(tmp_path, tiny_model_dir, "big", *sets, "allocator.tokens_per_problem=1000"),
               backends=scripted_factory(script))
    run_search(config(tmp_path, tiny_model_dir, "small", *sets, "allocator.tokens_per_problem=360"),
               backends=scripted_factory(script))
    assert trees(tmp_path / "big")[1].stats["rollouts"] > trees(tmp_path / "small")[1].stats["rollouts"]  # it grew
    big, small = (sorted(iter_trees(tmp_path / r), key=lambda t: str(t.problem["id"])) for r in ("big", "small"))
    score = lambda verdict: float(verdict == "correct")  # noqa: E731
    assert checkpoints(small) > 4
    for k in range(1, checkpoints(small) - 1):
        (a, ta), (b, tb) = at_checkpoint(big, k, score), at_checkpoint(small, k, score)
        assert ta == tb and [t.to_record()["nodes"] for t in a] == [t.to_record()["nodes"] for t in b]


@pytest.mark.parametrize("strategy", ["mcts", "fork"])
def test_trees_do_not_depend_on_how_requests_interleave(tmp_path, tiny_model_dir, tree_records, strategy):
    """Grow the group tree by tree (each alone until it waits, in reverse order) instead of in lock-step
    waves: the allocator decides only when every tree waits, so the trees are the same."""
    cfg = config(tmp_path, tiny_model_dir, "waves", f"strategy={strategy}")
    run_search(cfg, backends=scripted_factory(script))
    backend = scripted_factory(script)(cfg.model, cfg.backend)
    with Verifier.from_config(cfg.verify) as verifier:
        engine = Engine(cfg, {"main": backend}, verifier, backend.tokenizer)
        live = [engine.start(p) for p in PROBLEMS]
        alloc, done = Allocator(cfg.allocator, live), []
        alloc.checkpoint(live)
        while live:
            for ts in reversed(live):
                while engine.wave([ts]).requests:
                    pass
            done += [ts.tree for ts in live if ts.outcome() and ts.finish(*ts.outcome())]
            live = [ts for ts in live if ts.tree not in done]
            for ts, why in alloc.checkpoint(live) if live else []:
                done.append(ts.finish("success" if ts.stats["correct"] else "failure", why))
            live = [ts for ts in live if ts.tree not in done]
    by_hand = {t.problem["id"]: {k: v for k, v in t.to_record().items() if k != "stats"} for t in done}
    waves = {k: {f: v for f, v in r.items() if f != "stats"} for k, r in tree_records(tmp_path / "waves").items()}
    assert {k: r["nodes"] for k, r in by_hand.items()} == {k: r["nodes"] for k, r in waves.items()}


@pytest.mark.parametrize("sets", [[], ["selection.widen=2", "allocator.hopeless=reserve"], ["strategy=fork"]])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model_dir, tree_records, sets):
    factory = scripted_factory(script, seeded=True)
    run_search(config(tmp_path, tiny_model_dir, "whole", "allocator.group=4", *sets), backends=factory)
    cut = run_search(config(tmp_path, tiny_model_dir, "parts", "allocator.group=4", "budget.max_total_tokens=300", *sets),
                     backends=factory)
    assert cut["status"] == "stopped"
    run_search(config(tmp_path, tiny_model_dir, "parts", "allocator.group=4", *sets), backends=factory)
    assert tree_records(tmp_path / "parts") == tree_records(tmp_path / "whole")


def test_widening_keeps_a_short_tree_spending_instead_of_ending_exhausted(tmp_path, tiny_model_dir):
    """Problem trees here are one or two steps deep: with 2 children per expansion they are soon all terminal
    ('tree exhausted'). Widening expands such a node again with new samples (a seed of their own)."""
    sets = ["strategy=mcts", "allocator.tokens_per_problem=600", "allocator.hopeless=reserve"]
    run_search(config(tmp_path, tiny_model_dir, "plain", *sets), backends=scripted_factory(script, seeded=True))
    run_search(config(tmp_path, tiny_model_dir, "widen", *sets, "selection.widen=3"),
               backends=scripted_factory(script, seeded=True))
    plain, widen = trees(tmp_path / "plain"), trees(tmp_path / "widen")
    assert sum("exhausted" in t.reason for t in plain.values()) > sum("exhausted" in t.reason for t in widen.values())
    assert sum(t.stats["rollouts"] for t in widen.values()) > sum(t.stats["rollouts"] for t in plain.values())
    # A widened node has more children than one expansion gives (policy.children = 2), none a merged copy.
    for tree in widen.values():
        counts = [len(n.children) for n in tree.nodes]
        assert max(counts) <= 2 * (1 + 3)
        texts = [(n.parent, n.text) for n in tree.nodes]
        assert len(set(texts)) == len(texts)
    assert max(len(n.children) for t in widen.values() for n in t.nodes) > 2
    assert max(len(n.children) for t in plain.values() for n in t.nodes) <= 2


def test_need_split_and_groups():
    cfg = AllocatorConfig(tokens_per_problem=10, enough_correct=4, hopeless_after=8)
    assert need(cfg, {"correct": 0, "rollouts": 0}) == 0.5 * 4
    assert need(cfg, {"correct": 4, "rollouts": 9}) == 0  # saturated
    assert need(cfg, {"correct": 0, "rollouts": 8}) == 0  # hopeless
    assert need(cfg, {"correct": 1, "rollouts": 2}) == pytest.approx(0.5 * 3)
    assert need(cfg, {"correct": 1, "rollouts": 2}) > need(cfg, {"correct": 0, "rollouts": 6})
    assert split(10, [1.0, 1.0, 1.0]) == [4, 3, 3]  # the remainder to the earliest
    assert split(7, [3.0, 1.0]) == [5, 2]
    assert sum(split(1001, [0.3, 0.11, 2.7, 0.01])) == 1001
    assert groups(list(range(5)), 2) == [[0, 1], [2, 3], [4]]


def test_adaptive_width_is_wide_where_siblings_disagree_or_the_step_is_uncertain(tmp_path, tiny_model_dir):
    """A leaf whose visited siblings disagree (one right, one wrong) gets policy.children; one whose siblings
    agree and whose step was confident gets min_children; an uncertain step (low mean log-probability per
    token) gets the full width again."""
    cfg = config(tmp_path, tiny_model_dir, "w", "selection.width=adaptive", "selection.min_children=2",
                 "policy.children=4", "selection.uncertain_logprob=-1.0")
    backend = scripted_factory(script)(cfg.model, cfg.backend)
    with Verifier.from_config(cfg.verify) as verifier:
        ts = Engine(cfg, {"main": backend}, verifier, backend.tokenizer).start(PROBLEMS[2])
    tree = ts.tree

    def step(parent, logprob=-0.1, value=None):
        node = tree.add(parent, kind="step", text="Step.\n\n", token_ids=[1, 2], logprob=logprob)
        if value is not None:
            node.N, node.W = 1, value
        return node

    a = step(tree.root)
    mixed = [step(a, value=1.0), step(a, value=0.0), step(a)]
    agree = [step(tree.root), step(tree.root, value=0.0), step(tree.root, value=0.0)]
    unsure = step(agree[0], logprob=-3.0)
    widths = {name: ts._expand(leaf)[0].request.n for name, leaf in
              [("root", tree.root), ("mixed", mixed[2]), ("agree", agree[0]), ("unsure", unsure)]}
    assert widths == {"root": 4, "mixed": 4, "agree": 2, "unsure": 4}


def test_wall_budget_starts_no_group_that_would_not_fit(tmp_path, tiny_model_dir, tree_records):
    """allocator.wall_s: groups run while the last group's time still fits; the rest stays unsearched and a
    later run without the limit searches it, ending with the trees an unlimited run grows."""
    factory = scripted_factory(script)
    cut = run_search(config(tmp_path, tiny_model_dir, "parts", "allocator.group=2", "allocator.wall_s=1e-9"), backends=factory)
    assert cut["status"] == "complete" and cut["unstarted"] == 4 and len(trees(tmp_path / "parts")) == 2
    run_search(config(tmp_path, tiny_model_dir, "parts", "allocator.group=2"), backends=factory)
    run_search(config(tmp_path, tiny_model_dir, "whole", "allocator.group=2"), backends=factory)
    assert tree_records(tmp_path / "parts") == tree_records(tmp_path / "whole")


@pytest.mark.parametrize("rollout", ["sample", "greedy"])
def test_rollouts_spend_through_the_allocator(tmp_path, tiny_model_dir, rollout):
    """rollout: every new step also gets a rollout to an answer (a real node); its tokens count against the
    tree's grant, so the run stays within its budget plus one request per tree."""
    run_search(config(tmp_path, tiny_model_dir, "r", f"rollout={rollout}", "policy.children=2"), backends=scripted_factory(script))
    got = trees(tmp_path / "r")
    assert any(n.kind == "rollout" for t in got.values() for n in t.nodes)
    assert sum(t.stats["generated_tokens"] for t in got.values()) <= 150 * 6 + 6 * 2 * 384
    assert all(t.stats.get("checkpoints") for t in got.values())
