"""The MCTS engine on a scripted backend: exact backups, selection, budgets, typed policy, merging,
resume after SIGKILL, torn lines, config refusal and the tree record round trip."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcts_cot.backends.scripted import ScriptedBackend
from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.io import read_jsonl
from mcts_cot.problems import Problem
from mcts_cot.search import Engine, SearchConfig, TreeSearch, run_waves
from mcts_cot.store import iter_trees
from mcts_cot.tree import Tree

ROOT = Path(__file__).resolve().parents[1]


class ExactVerifier:
    """Correct when the answer equals the gold string: enough for engine tests."""

    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a == g else "wrong" for g, a in items]


def table_script(table: dict[str, list[str]], default: str = "The answer is \\boxed{0}."):
    """Answer by the text after the last prompt turn: the path so far selects a list of outputs."""

    def script(prompt: str, index: int) -> str:
        path = prompt.rsplit("assistant\n", 1)[-1]
        outs = table.get(path, [default])
        return outs[index % len(outs)]

    return script


def config(*sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, ["backend.name=scripted", "prompt.few_shot=[]", "prompt.system=''", *sets])


def engine(cfg: SearchConfig, script, byte_tok) -> Engine:
    return Engine(cfg, {"main": ScriptedBackend(byte_tok, script)}, ExactVerifier(), byte_tok)


PROBLEM = Problem(id="p1", problem="What is 2 + 3?", answer="5")


def test_backup_gives_exact_visits_and_values(byte_tok):
    script = table_script({
        "": ["Step A\n\n", "The answer is \\boxed{5}.", "The answer is \\boxed{3}.", "Step B\n\n"],
        "Step A\n\n": ["The answer is \\boxed{5}.", "The answer is \\boxed{4}."],
        "Step B\n\n": ["I do not know."],
    })
    eng = engine(config("policy.children=4"), script, byte_tok)
    ts = eng.start(PROBLEM)
    eng.wave([ts])
    t = ts.tree
    root, a, right, wrong, b = t.nodes
    assert [n.text for n in (a, right, wrong, b)] == ["Step A\n\n", "The answer is \\boxed{5}.", "The answer is \\boxed{3}.", "Step B\n\n"]
    assert (right.verdict, wrong.verdict) == ("correct", "wrong")
    assert (root.N, root.W) == (2, 1.0)
    assert [(n.N, n.W) for n in (a, right, wrong, b)] == [(0, 0), (1, 1.0), (1, 0.0), (0, 0)]
    # Two more waves expand A and B (unvisited first); A's children are merged-free: 5 (correct) and 4 (wrong).
    eng.wave([ts])
    eng.wave([ts])
    a_kids = t.children(a)
    assert sorted((n.answer, n.verdict) for n in a_kids) == [("4", "wrong"), ("5", "correct")]
    (b_kid,) = t.children(b)
    assert (b_kid.terminal, b_kid.verdict) == ("eos", "no_answer")
    assert (a.N, a.W, b.N, b.W) == (2, 1.0, 1, 0.0)
    assert (root.N, root.W) == (5, 2.0)
    assert root.Q == pytest.approx(0.4)
    assert ts.stats["rollouts"] == 5 and ts.stats["correct"] == 2
    # Everything is terminal now: the tree is exhausted and says so.
    assert ts.outcome() == ("failure", "tree exhausted after 5 rollouts with 2 correct")


def test_uct_prefers_unvisited_then_formula(byte_tok):
    ts = engine(config(), table_script({}), byte_tok).start(PROBLEM)
    t = ts.tree
    kids = [t.add(t.root, kind="step", text=str(i)) for i in range(3)]
    t.root.N = 10
    for kid, (n, w) in zip(kids, [(5, 4.0), (3, 1.0), (2, 2.0)], strict=True):
        kid.N, kid.W = n, w
    expected = max(kids, key=lambda k: k.W / k.N + 1.414 * math.sqrt(2 * math.log(10) / k.N))
    assert ts.pick(t.root, kids) is expected is kids[2]
    fresh = t.add(t.root, kind="step", text="new")
    assert ts.pick(t.root, [*kids, fresh]) is fresh


def test_ties_are_broken_by_the_seeded_rng(byte_tok):
    def picks(seed: int) -> list[int]:
        ts = engine(config(f"seed={seed}"), table_script({}), byte_tok).start(PROBLEM)
        kids = [ts.tree.add(ts.tree.root, kind="step", text=str(i)) for i in range(4)]
        return [ts.pick(ts.tree.root, kids).id for _ in range(12)]

    assert picks(0) == picks(0)
    assert len(set(picks(0))) > 1  # unvisited ties are not always resolved to the first child
    assert any(picks(s) != picks(0) for s in range(1, 5))


def test_puct_uses_a_length_normalised_prior(byte_tok):
    ts = engine(config("selection.rule=puct", "selection.c=1.0"), table_script({}), byte_tok).start(PROBLEM)
    t = ts.tree
    likely = t.add(t.root, kind="step", text="a", token_ids=[1, 2], logprob=-0.2)
    unlikely = t.add(t.root, kind="step", text="b", token_ids=[1, 2], logprob=-4.0)
    assert ts.pick(t.root, [likely, unlikely]) is likely
    likely.N, likely.W, t.root.N = 3, 0.0, 3  # visited and worthless: the prior's pull fades with visits
    unlikely_score = 1.0 * ts._priors([likely, unlikely])[1] * math.sqrt(3)
    likely_score = 0 + 1.0 * ts._priors([likely, unlikely])[0] * math.sqrt(3) / 4
    assert ts.pick(t.root, [likely, unlikely]) is (unlikely if unlikely_score > likely_score else likely)


def test_virtual_loss_spreads_leaves_within_a_wave(byte_tok):
    script = table_script({"": ["Step A\n\n", "Step B\n\n", "Step C\n\n"]}, default="Step more\n\n")
    eng = engine(config("policy.children=3", "selection.leaves_per_tree=3"), script, byte_tok)
    ts = eng.start(PROBLEM)
    eng.wave([ts])  # expands the root only (it is the only leaf)
    planned = ts.plan()
    assert sorted(e.node.text for e in planned) == ["Step A\n\n", "Step B\n\n", "Step C\n\n"]


@pytest.mark.parametrize("correct,rollouts,expected", [
    (8, 9, ("success", "8 correct leaves (>= 8)")),
    (4, 33, ("success", "4 correct leaves after 33 rollouts")),
    (4, 32, None),
    (3, 127, None),
    (3, 128, ("failure", "128 rollouts (budget 128) with 3 correct")),
])
def test_budget_rules(byte_tok, correct, rollouts, expected):
    ts = engine(config(), table_script({}), byte_tok).start(PROBLEM)
    ts.stats["correct"], ts.stats["rollouts"] = correct, rollouts
    assert ts.outcome() == expected


def test_identical_siblings_are_merged(byte_tok):
    eng = engine(config("policy.children=4"), table_script({"": ["Step A\n\n"]}), byte_tok)
    ts = eng.start(PROBLEM)
    eng.wave([ts])
    assert [n.text for n in ts.tree.children(ts.tree.root)] == ["Step A\n\n"]
    assert ts.stats["merged"] == 3


def test_limits_end_paths(byte_tok):
    eng = engine(config("policy.children=1", "policy.max_depth=3"), table_script({}, default="Step\n\n"), byte_tok)
    ts = eng.start(PROBLEM)
    for _ in range(3):
        eng.wave([ts])
    leaf = ts.tree.nodes[-1]
    assert (leaf.depth, leaf.terminal, leaf.verdict) == (3, "max_depth", "no_answer")
    assert ts.outcome()[0] == "failure"


def test_only_a_stated_answer_ends_a_path_and_each_is_counted_by_how_it_was_recognised(byte_tok):
    words = "Let's figure out what the answer is by adding the numbers.\n\n"
    equation = "So the answer is 2 * 3 = 6.\n\n"
    script = table_script({"": [words, equation, "So the answer is 5.\n\n", "The answer is \\boxed{4}."]})
    eng = engine(config("policy.children=4", "policy.max_depth=1"), script, byte_tok)
    ts = eng.start(PROBLEM)
    eng.wave([ts])
    by_text = {n.text: n for n in ts.tree.children(ts.tree.root)}
    assert [(by_text[t].terminal, by_text[t].answer) for t in (words, equation)] == [("max_depth", None)] * 2
    assert (by_text["So the answer is 5.\n\n"].answer, by_text["So the answer is 5.\n\n"].answer_by) == ("5", "phrase")
    assert (by_text["The answer is \\boxed{4}."].answer_by, by_text["The answer is \\boxed{4}."].verdict) == ("boxed", "wrong")
    assert (ts.stats["answer_boxed"], ts.stats["answer_phrase"], ts.stats["no_answer"]) == (1, 1, 2)
    record = ts.finish("failure", "test").to_record()
    assert Tree.from_record(record).nodes[3].answer_by == "phrase"
    for row in record["nodes"]:
        del row["answer_by"]  # a record written before the field still loads
    assert Tree.from_record(record).nodes[3].answer_by is None


TYPED = [
    "policy.kind=typed",
    "policy.separator=''",
    "policy.actions={plan: {open: '<p>', close: '</p>'}, check: {open: '<c>', close: '</c>'},"
    " reflect: {open: '<r>', prefill: ['Wait!</r>'], fixed: true}, answer: {open: '<a>', close: '</a>',"
    " prefill: ['The answer is \\boxed{'], terminal: true}}",
    "policy.transitions={root: {plan: 1}, plan: {check: 1}, check: {answer: 1}, reflect: {plan: 1}}",
    "policy.on_wrong={check: {reflect: 1}}",
]


def test_typed_transitions_and_reflection_backtrack(byte_tok):
    def script(prompt: str, index: int) -> str:
        tail = prompt.rsplit("assistant\n", 1)[-1]
        if tail.endswith("<p>"):
            return "think</p>"
        if tail.endswith("<c>"):
            return "looks fine</c>"
        return ("3}.</a>" if "Wait!" not in tail else "5}.</a>")

    eng = engine(config(*TYPED), script, byte_tok)
    ts = eng.start(PROBLEM)
    for _ in range(3):
        eng.wave([ts])
    t = ts.tree
    assert [n.kind for n in t.nodes] == ["root", "plan", "check", "answer", "reflect"]
    answer, reflect = t.nodes[3], t.nodes[4]
    assert answer.text == "<a>The answer is \\boxed{3}.</a>" and answer.verdict == "wrong"
    assert reflect.parent == 2 and reflect.text == "<r>Wait!</r>"  # under the double-check, fixed text
    for _ in range(3):  # reflect → plan → check → answer, now right
        eng.wave([ts])
    assert [n.kind for n in t.path(t.nodes[-1])] == ["plan", "check", "reflect", "plan", "check", "answer"]
    assert t.nodes[-1].verdict == "correct"
    assert len([n for n in t.children(t.nodes[2]) if n.kind == "reflect"]) == 1  # at most once per ancestor


def test_typed_config_names_unknown_actions(byte_tok):
    bad = [*TYPED[:-1], "policy.on_wrong={check: {reflexion: 1}}"]
    with pytest.raises(UserError, match="unknown action 'reflexion'"):
        engine(config(*bad), table_script({}), byte_tok)


def test_rollout_nodes_are_real_nodes(byte_tok):
    script = table_script({"": ["Step A\n\n"], "Step A\n\n": ["Step B\n\n"]}, default="Step x\n\n")

    def roll(prompt, index):  # rollouts have no stop string, so they run to the answer
        return script(prompt, index) if not prompt.endswith("Step A\n\n") else "Step A2. The answer is \\boxed{5}."

    eng = engine(config("policy.children=1", "rollout=greedy"), roll, byte_tok)
    ts = eng.start(PROBLEM)
    eng.wave([ts])
    eng.wave([ts])
    kinds = [n.kind for n in ts.tree.nodes]
    assert "rollout" in kinds
    rollout = ts.tree.nodes[kinds.index("rollout")]
    assert rollout.verdict == "correct" and ts.tree.nodes[rollout.parent].text == "Step A\n\n"


def test_record_round_trips_through_networkx(byte_tok):
    script = table_script({"": ["Step A\n\n", "The answer is \\boxed{5}."]}, default="The answer is \\boxed{2}.")
    eng = engine(config("policy.children=2"), script, byte_tok)
    ts = eng.start(PROBLEM)
    for _ in range(2):
        eng.wave([ts])
    tree = ts.finish("failure", "test")
    record = tree.to_record("abc")
    again = Tree.from_graph(tree.to_graph()).to_record("abc")
    assert again == record
    assert Tree.from_record(record).to_record("abc") == record


def test_waves_keep_slots_full_and_write_each_tree_once(byte_tok):
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + 0?", answer=str(i % 3)) for i in range(7)]
    eng = engine(config("concurrent_trees=3", "policy.children=2", "budget.max_rollouts=4"),
                 table_script({}, default="The answer is \\boxed{1}."), byte_tok)
    seen = []
    sizes = []
    run_waves(eng, problems, lambda trees: seen.extend(t.problem["id"] for t in trees),
              lambda w, tok, live: sizes.append(live))
    assert sorted(seen) == sorted(p.id for p in problems)
    assert max(sizes) <= 3


# --------------------------------------------------------------------------------------------- run dirs

RUNNER = """
import sys, time
from mcts_cot.backends import scripted_factory
from mcts_cot.backends.scripted import default_script
from mcts_cot.config import load_config
from mcts_cot.run import run_search
from mcts_cot.search import SearchConfig

def slow(prompt, index):
    time.sleep(0.002)
    return default_script(prompt, index)

cfg = load_config(SearchConfig, None, sys.argv[2:], out=sys.argv[1])
if __name__ == "__main__":
    run_search(cfg, backends=scripted_factory(slow))
"""

SETS = ["backend.name=scripted", "problems.source=builtin:arithmetic:24", "concurrent_trees=5",
        "policy.children=3", "budget.max_rollouts=12", "budget.success_correct=3"]


def _run(out: Path, model: Path, *extra: str, kill_after: float | None = None) -> int:
    cmd = [sys.executable, "-c", RUNNER, str(out), f"model.name={model}", *SETS, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        return 0
    trees = out / "trees.jsonl"
    before = _lines(trees)
    deadline = time.time() + 120
    while _lines(trees) <= before and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # wait until this run has written something, then kill it at a random moment
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _search(out: Path, model: Path, *extra: str, **kwargs) -> dict:
    """The same run as `_run`, in this process."""
    from mcts_cot.run import run_search

    return run_search(load_config(SearchConfig, None, [f"model.name={model}", *SETS, *extra], out=str(out)), **kwargs)


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model_dir, tree_records):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _search(whole, tiny_model_dir)
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        code = _run(resumed, tiny_model_dir, kill_after=rng.uniform(0.0, 0.4))
        kills += code == -signal.SIGKILL
        if (resumed / "manifest.json").exists() and '"complete"' in (resumed / "manifest.json").read_text():
            break
    _run(resumed, tiny_model_dir)
    assert kills >= 1
    lines = [r["problem"]["id"] for r in read_jsonl(resumed / "trees.jsonl")]
    assert len(lines) == len(set(lines)) == 24  # every problem exactly once
    assert tree_records(resumed) == tree_records(whole)


def test_torn_last_line_is_repaired(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    _search(out, tiny_model_dir, "problems.limit=4")
    path = out / "trees.jsonl"
    raw = path.read_bytes()
    path.write_bytes(raw + raw.splitlines(keepends=True)[0][:50])  # a half-written line at the end
    _search(out, tiny_model_dir, "problems.limit=6")
    ids = [r["problem"]["id"] for r in read_jsonl(path)]
    assert len(ids) == len(set(ids)) == 6
    assert path.read_bytes().endswith(b"\n")


def test_a_different_config_is_refused_unless_overwrite(tmp_path, tiny_model_dir):
    from mcts_cot.run import run_search

    out = tmp_path / "run"
    _search(out, tiny_model_dir, "problems.limit=2")
    cfg = load_config(SearchConfig, None, [f"model.name={tiny_model_dir}", *SETS, "policy.children=2"], out=str(out))
    with pytest.raises(UserError, match="different config"):
        run_search(cfg)
    run_search(load_config(SearchConfig, None, [f"model.name={tiny_model_dir}", *SETS, "problems.limit=3"], out=str(out)))
    assert len(list(read_jsonl(out / "trees.jsonl"))) == 3  # a longer problem list resumes the same run
    run_search(cfg, overwrite=True)
    assert len(list(read_jsonl(out / "trees.jsonl"))) == 24


def test_shards_split_the_problems(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    for i in range(3):
        _search(out, tiny_model_dir, "problems.limit=6", shard=(i, 3))
    names = sorted(p.name for p in out.glob("trees*.jsonl"))
    assert names == ["trees-0-of-3.jsonl", "trees-1-of-3.jsonl", "trees-2-of-3.jsonl"]
    assert len({t.problem["id"] for t in iter_trees(out)}) == 6


def test_tree_search_state_is_per_problem(byte_tok):
    cfg = config()
    a = TreeSearch(PROBLEM, [1], "x", None, cfg)
    b = TreeSearch(Problem(id="p2", problem="?", answer="1"), [1], "x", None, cfg)
    assert a.seed != b.seed
