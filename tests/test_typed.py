"""The paper's typed search with a model that does not close its tags: an end-of-turn or a length cut inside a
non-terminal action closes that action and the tree goes on (the embedded model never wrote `</sub-task>`,
so every typed tree died after its first expansion); an answer action still ends its path, and the depth and
path-token limits still hold. Also: the typed prompt shows the tag format, and the ladder and compare-bon run
on a typed search."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.backends.scripted import ScriptedBackend
from mcts_cot.config import load_config
from mcts_cot.evaluate import EvalConfig
from mcts_cot.loop import CompareConfig, LadderConfig, load_loop_config, run_compare, run_ladder
from mcts_cot.problems import Problem, arithmetic_problems
from mcts_cot.run import run_search
from mcts_cot.search import Engine, SearchConfig
from mcts_cot.store import iter_trees

MARCO = Path(__file__).resolve().parents[1] / "configs" / "search" / "marco.yaml"
PROBLEM = Problem(id="p1", problem="What is 2 + 3?", answer="5")
TYPED = [
    "policy.kind=typed",
    r'policy.separator="\n"',
    "policy.actions={plan: {open: '<p>', close: '</p>'}, check: {open: '<c>', close: '</c>'},"
    " answer: {open: '<a>', close: '</a>', prefill: ['The answer is \\boxed{'], terminal: true}}",
    "policy.transitions={root: {plan: 1}, plan: {check: 1}, check: {answer: 1}}",
]


class ExactVerifier:
    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a == g else "wrong" for g, a in items]


def grow(byte_tok, script, *sets: str, waves: int = 3):
    cfg = load_config(SearchConfig, None, ["backend.name=scripted", "prompt.few_shot=[]", "prompt.system=''", *TYPED, *sets])
    eng = Engine(cfg, {"main": ScriptedBackend(byte_tok, script)}, ExactVerifier(), byte_tok)
    ts = eng.start(PROBLEM)
    for _ in range(waves):
        eng.wave([ts])
    return ts


UNCLOSED = {"<p>": "add 2 and 3", "<c>": "2 + 3 = 5, fine"}  # what each action's open tag is followed by


def unclosed(prompt: str, index: int) -> str:
    """A model that never writes a close tag: every action ends with its turn (the answer action: "5}.")."""
    tail = prompt.rsplit("assistant\n", 1)[-1]
    return next((text for tag, text in UNCLOSED.items() if tail.endswith(tag)), "5}.")


def test_end_of_turn_closes_a_non_terminal_action_and_the_tree_goes_on(byte_tok):
    ts = grow(byte_tok, unclosed)
    t = ts.tree
    assert [n.kind for n in t.nodes] == ["root", "plan", "check", "answer"]
    plan, check, answer = t.nodes[1:]
    assert plan.text == "<p>add 2 and 3</p>\n" and check.text == "<c>2 + 3 = 5, fine</c>\n"
    for node in (plan, check):  # the closing tag and separator are in the token ids too
        assert node.terminal is None and node.finish == "eos"
        assert node.token_ids == byte_tok.encode(node.text, add_special_tokens=False)
    # an answer action that ends its turn still ends the path
    assert (answer.terminal, answer.answer, answer.answer_by, answer.verdict) == ("answer", "5", "boxed", "correct")
    assert answer.text == "<a>The answer is \\boxed{5}."


def test_a_length_cut_closes_a_non_terminal_action(byte_tok):
    def rambling(prompt: str, index: int) -> str:
        return "x" * 50 if prompt.endswith("<p>") else unclosed(prompt, index)

    ts = grow(byte_tok, rambling, "policy.max_step_tokens=20")
    plan = ts.tree.nodes[1]
    assert plan.finish == "length" and plan.terminal is None
    assert plan.text == "<p>" + "x" * 20 + "</p>\n"
    assert ts.tree.nodes[-1].verdict == "correct"


@pytest.mark.parametrize("sets,reason", [
    (("policy.max_depth=2",), "max_depth"),
    (("policy.max_path_tokens=12",), "max_tokens"),
])
def test_closed_actions_still_stop_at_the_path_limits(byte_tok, sets, reason):
    ts = grow(byte_tok, unclosed, "policy.transitions={root: {plan: 1}, plan: {plan: 1}}", *sets, waves=4)
    leaf = ts.tree.nodes[-1]
    assert leaf.kind == "plan" and (leaf.terminal, leaf.verdict) == (reason, "no_answer")
    assert ts.outcome()[0] == "failure"


def test_a_closed_stop_keeps_one_close_tag(byte_tok):
    def closes(prompt: str, index: int) -> str:
        return "add</p>" if prompt.endswith("<p>") else unclosed(prompt, index)

    plan = grow(byte_tok, closes, waves=1).tree.nodes[1]
    assert (plan.text, plan.finish, plan.terminal) == ("<p>add</p>\n", "stop", None)


def tagged_actions(cfg: SearchConfig, solution: str) -> list[str]:
    """The actions a worked solution is written in, checked as the search would grow them: each opens with its
    tag (and one of its prefills), is closed, and is followed by the separator; the table allows each step."""
    acts, sep, kind, kinds = cfg.policy.actions, cfg.policy.separator, "root", []
    rest = solution
    while rest:
        name = next((a for a, spec in acts.items() if rest.startswith(spec["open"])), None)
        assert name in cfg.policy.transitions.get(kind, {}), f"{kind} -> {rest[:30]!r}"
        spec = acts[name]
        assert spec["close"] in rest, f"{name} is never closed"
        body, rest = rest[len(spec["open"]):].split(spec["close"], 1)
        assert any(body.startswith(p) for p in spec.get("prefill") or [""]), body
        assert not rest or rest.startswith(sep)
        rest, kind = rest[len(sep):], name
        kinds.append(name)
    assert acts[kinds[-1]].get("terminal"), "a worked solution ends with the answer action"
    return kinds


def test_the_typed_prompt_shows_the_tag_format(byte_tok):
    from mcts_cot.prompts import prompt_ids

    cfg = load_config(SearchConfig, MARCO)
    shots = [tagged_actions(cfg, shot["solution"]) for shot in cfg.prompt.few_shot]
    assert len(shots) >= 2 and any(kinds.count("thinking") > 1 for kinds in shots)  # a multi-step example too
    # bytes bound tokens: the prompt and a whole path fit the context with room to spare
    prompt = prompt_ids(byte_tok, cfg.prompt, "A farmer has 12 rows of 7 plants and sells 15. How many are left?")
    assert len(prompt) + cfg.policy.max_path_tokens <= cfg.backend.max_model_len


# ---------------------------------------------------------------------------------- ladder and compare-bon

# The --set lines the ladder and compare-bon recipes document for a typed run.
LADDER_TYPED = ["eval.config=configs/eval/typed.yaml", "train_row.max_length=2048"]
COMPARE_TYPED = ["search.config=configs/search/marco.yaml", "eval.config=configs/eval/typed.yaml", "train.max_length=2048"]
GOLD = {p.problem: p.answer for split in ("train", "test") for p in arithmetic_problems(6, split)}
TINY_TRAIN = {"max_steps": 1, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
              "learning_rate": 1e-4, "logging_steps": 1, "save_steps": 1000}


def typed_model(prompt: str, index: int) -> str:
    """Typed steps that never close their tags; the answer is right on some paths, wrong on others; a whole
    response (best-of-N, eval) is a typed answer, right on even sample indices (greedy: index 0)."""
    gold = int(GOLD[prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]])
    tail = prompt.rsplit("<|im_start|>assistant\n", 1)[1]
    if not tail:
        return f"<thinking>add</thinking>\n<answer>The answer is \\boxed{{{gold + index % 2}}}.</answer>"
    if tail.endswith("\\boxed{"):
        return f"{gold + (len(prompt) % 3 == 0)}}}.</answer>"
    return f"step {index}"


@pytest.fixture(scope="module")
def typed_run(tiny_model_dir, tmp_path_factory):
    """A small typed search (configs/search/marco.yaml, its prompt included) on the scripted backend."""
    out = tmp_path_factory.mktemp("typed") / "search"
    cfg = load_config(SearchConfig, MARCO, [f"model.name={tiny_model_dir}", "backend.name=scripted",
                                            "problems.source=builtin:arithmetic:3", f"out={out}", "verify.workers=1",
                                            "budget.max_rollouts=6", "budget.success_correct=3"])
    run_search(cfg, backends=scripted_factory(typed_model))
    return out, cfg


def test_typed_trees_grow_past_their_first_expansion(typed_run):
    out, _ = typed_run
    trees = list(iter_trees(out))
    assert len(trees) == 3 and all(t.stats["correct"] for t in trees)
    assert {n.kind for t in trees for n in t.nodes} >= {"sub_task", "thinking", "double_check", "answer", "reflection"}


def test_ladder_runs_on_a_typed_search(typed_run, tmp_path):
    out, scfg = typed_run
    cfg = load_loop_config("configs/recipes/ladder.yaml", LADDER_TYPED, cls=LadderConfig)
    cfg.backend, cfg.test_problems, cfg.rows = "scripted", 2, cfg.rows[:1] + cfg.rows[-1:]  # SFT and the full recipe
    cfg.eval.set["verify.workers"] = 1
    cfg.train_row.set.update(TINY_TRAIN)
    res = run_ladder(out, tmp_path / "ladder", cfg, backends=scripted_factory(typed_model))
    assert [r["name"] for r in res["rows"]] == ["base", "SFT", "+ Masking"]
    pairs = [orjson.loads(line) for line in (tmp_path / "ladder" / "data-balanced" / "pairs.jsonl").open("rb")]
    assert pairs and all("<answer>" in p["chosen"] for p in pairs)
    for row in res["rows"]:  # every row evaluated with the prompt its training rows were rendered with
        assert load_config(EvalConfig, Path(row["greedy_dir"]) / "config.yaml").prompt == scfg.prompt
        assert row["greedy"]["accuracy"] == 1.0  # the typed answers are read (index 0: right)


def test_compare_bon_runs_on_a_typed_search(tiny_model_dir, tmp_path):
    """Every arm grows with the typed policy and prompt; each trained model is evaluated with that prompt."""
    cfg = load_loop_config("configs/recipes/compare-bon.yaml", COMPARE_TYPED, cls=CompareConfig)
    cfg.model, cfg.backend, cfg.test_problems, cfg.train_models = str(tiny_model_dir), "scripted", 2, True
    cfg.sets, cfg.train_set, cfg.tokens_per_problem = {"three": {"problems.source": "builtin:arithmetic:3"}}, "three", 600
    cfg.search.set.update({"verify.workers": 1, "allocator.step_tokens": 64})
    cfg.eval.set["verify.workers"] = 1
    cfg.train.set.update(TINY_TRAIN)
    res = run_compare(tmp_path / "cmp", cfg, backends=scripted_factory(typed_model))
    scfg = load_config(SearchConfig, MARCO)
    for arm in ("mcts", "best_of_n_allocated", "best_of_n"):
        arm_cfg = load_config(SearchConfig, tmp_path / "cmp" / "three" / "seed-0" / arm / "config.yaml")
        assert arm_cfg.prompt == scfg.prompt and arm_cfg.policy.kind == "typed"
        assert res["sets"]["three"]["budgets"][-1][arm]["yield"] > 0
    for name, where in res["training"]["evals"].items():
        assert load_config(EvalConfig, Path(where) / "config.yaml").prompt == scfg.prompt, name
