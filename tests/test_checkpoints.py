"""Checkpoint branching and DTO over existing trajectories: splitting and the checkpoint draw on known texts,
trees whose shared path is the original trajectory token for token, right-to-wrong and wrong-to-right pairs
with the attempt bound, and DTO's exit point and truncated text, on a scripted backend."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.checkpoints.config import CheckpointConfig
from mcts_cot.checkpoints.driver import run_checkpoints
from mcts_cot.checkpoints.dto import exit_point, probe_answer
from mcts_cot.checkpoints.split import checkpoints, choose, paragraphs
from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.export import ExportConfig, build
from mcts_cot.models import load_tokenizer
from mcts_cot.store import iter_trees

RIGHT = "Step 1: a.\n\nStep 2: b.\n\nWait, check it.\n\nThe answer is \\boxed{7}."  # p1, gold 7
WRONG = "Step 1: x.\n\nStep 2: y.\n\nThe answer is \\boxed{4}."  # p2, gold 5
EXIT = " Wait, I suddenly got the final answer to the whole problem. Final Answer: \\boxed{"
CLOSING = "Hmm, I think this is enough to derive the final answer.\n\n"


# ------------------------------------------------------------------------------------------ splitting


def test_paragraphs_keep_their_breaks_and_fall_back_to_line_ends():
    assert paragraphs(RIGHT, ["\n\n", "\n"]) == ["Step 1: a.\n\n", "Step 2: b.\n\n", "Wait, check it.\n\n",
                                                 "The answer is \\boxed{7}."]
    gsm = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips."
    assert paragraphs(gsm, ["\n\n", "\n"]) == ["Natalia sold 48/2 = 24 clips in May.\n", "Natalia sold 48+24 = 72 clips."]
    assert paragraphs("one line", ["\n\n", "\n"]) == ["one line"]
    assert paragraphs("a\n\n\n\nb\n\n", ["\n\n"]) == ["a\n\n\n\n", "b\n\n"]


def test_checkpoints_prefer_reflection_markers_else_every_break():
    parts = paragraphs(RIGHT, ["\n\n"])
    assert checkpoints(parts, ["Wait", "Alternatively", "But"]) == [2]
    assert checkpoints(paragraphs(WRONG, ["\n\n"]), ["Wait", "Alternatively", "But"]) == [1, 2]
    assert checkpoints(["a\n\n", "Butter is 3.\n\n", "But no.\n\n", "x"], ["But"]) == [2]  # a whole word only
    assert checkpoints(parts, []) == [1, 2, 3]


def test_short_trajectories_draw_early_checkpoints_more_often():
    cuts = [3, 5, 8, 9, 12]
    firsts = Counter(choose(cuts, 1, random.Random(seed))[0] for seed in range(2000))
    # The early-weighted list 1,1,1,1,1,2,2,3,3,4,5: the first checkpoint 5/11 of the time, the last 1/11.
    assert abs(firsts[3] / 2000 - 5 / 11) < 0.04 and abs(firsts[12] / 2000 - 1 / 11) < 0.03
    assert choose(cuts, 5, random.Random(0)) == cuts  # without replacement: all five, in order
    assert choose([4, 6], 3, random.Random(0)) == [4, 6]  # list entries past the count are dropped
    assert choose([], 2, random.Random(0)) == []


def test_long_trajectories_take_one_checkpoint_per_decile():
    cuts = list(range(1, 41))
    assert choose(cuts, 10, random.Random(0)) == [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]
    three = choose(cuts, 3, random.Random(1))
    assert len(three) == 3 and set(three) <= {1, 5, 9, 13, 17, 21, 25, 29, 33, 37}


def test_dto_exit_point_is_the_first_checkpoint_at_the_threshold():
    votes = {1: ["wrong", "correct", "wrong", "wrong"], 2: ["correct"] * 3 + ["wrong"], 3: ["correct"] * 4}
    assert exit_point(votes, 0.75) == 2
    assert exit_point(votes, 1.0) == 3
    assert exit_point({1: ["wrong"], 2: ["no_answer"]}, 0.5) is None
    assert probe_answer("12}. So the total") == "12"
    assert probe_answer("\\frac{1}{2}} more") == "\\frac{1}{2}"
    assert probe_answer("12 and so on") is None


# ------------------------------------------------------------------------------------------ runs


def script(prompt: str, index: int) -> str:
    """Forced answers: wrong after one paragraph, 3 of 4 right after two, all right after three. Exits: the
    answer. Continuations of p1 (right): even samples wrong. Of p2 (wrong): from one paragraph always wrong,
    from two paragraphs the second sample is right."""
    if prompt.endswith(EXIT):
        prefix = prompt.rsplit("Final Answer", 1)[0]
        return "7}." if "check it" in prefix or ("Step 2" in prefix and index < 3) else "8}."
    if prompt.endswith(CLOSING):
        return "The answer is \\boxed{7}."
    if "Step 1: a." in prompt:
        return f"Then {index}.\n\nThe answer is \\boxed{{{8 if index % 2 == 0 else 7}}}."
    right = "Step 2: y." in prompt and index == 1
    return f"Redo.\n\nThe answer is \\boxed{{{5 if right else 6}}}."


@pytest.fixture
def responses(tmp_path):
    path = tmp_path / "responses.jsonl"
    rows = [{"id": "p1", "problem": "What is 3 + 4?", "answer": "7", "solution": RIGHT},
            {"id": "p2", "problem": "What is 2 + 3?", "answer": "5", "solution": WRONG}]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def config(tmp_path, model, responses, *sets: str) -> CheckpointConfig:
    return load_config(CheckpointConfig, None, [
        f"out={tmp_path / 'run'}", f"model.name={model}", "backend.name=scripted", f"trajectories.source={responses}",
        "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1", "branch.checkpoints=2", "branch.n=4",
        "branch.max_attempts=5", "branch.wave=2", *sets])


def test_branching_keeps_the_original_tokens_and_makes_both_kinds_of_pairs(tmp_path, tiny_model_dir, responses):
    manifest = run_checkpoints(config(tmp_path, tiny_model_dir, responses), backends=scripted_factory(script))
    assert manifest["trajectory_verdicts"] == {"correct": 1, "wrong": 1}
    tok = load_tokenizer(str(tiny_model_dir))
    trees = {t.problem["id"]: t for t in iter_trees(tmp_path / "run")}
    for pid, text in (("p1", RIGHT), ("p2", WRONG)):
        tree = trees[pid]
        end = next(n for n in tree.leaves() if n.kind == "original")
        assert tree.path_ids(end) == tok.encode(text, add_special_tokens=False)  # the shared path is the original
        for cont in (n for n in tree.nodes if n.kind == "continuation"):
            prefix = tree.path_ids(tree.nodes[cont.parent])
            assert tree.path_ids(end)[:len(prefix)] == prefix and tok.decode(prefix) in text
    by_cut = lambda tree: Counter(tree.nodes[n.parent].text for n in tree.nodes if n.kind == "continuation")  # noqa: E731
    assert by_cut(trees["p1"]) == {"Step 2: b.\n\n": 4}  # only the break before "Wait" is a checkpoint
    # p2 is wrong: from one paragraph never right, so exactly max_attempts (2 + 2 + 1); from two, right at once.
    assert by_cut(trees["p2"]) == {"Step 1: x.\n\n": 5, "Step 2: y.\n\n": 2}
    assert trees["p2"].stats["generated_tokens"] == sum(len(n.token_ids) for n in trees["p2"].nodes if n.kind == "continuation")

    result = build(load_config(ExportConfig, None, ["val_fraction=0", "strategies=[checkpoint]", "sft.select=[]"]),
                   [tmp_path / "run"])
    pairs = {pid: [r for r in result.pairs if r["problem_id"] == pid] for pid in ("p1", "p2")}
    assert len(pairs["p1"]) == 2 and len(pairs["p2"]) == 1
    for row in pairs["p1"]:  # right-to-wrong: the original continuation is chosen
        assert row["prompt"].endswith("Step 2: b.\n\n") and row["chosen"] == "Wait, check it.\n\nThe answer is \\boxed{7}."
        assert row["rejected"].startswith("Then ") and row["rejected"].endswith("\\boxed{8}.")
    (w2r,) = pairs["p2"]  # wrong-to-right: the regenerated right continuation against the original wrong one
    assert w2r["chosen"] == "Redo.\n\nThe answer is \\boxed{5}." and w2r["rejected"] == "The answer is \\boxed{4}."
    assert tok.decode(w2r["prefix_ids"]) == "Step 1: x.\n\nStep 2: y.\n\n"
    assert result.report["pairs"]["checkpoint"]["kept"] == 3


def test_dto_exits_at_the_first_checkpoint_over_the_threshold_and_ends_with_the_closing(tmp_path, tiny_model_dir, responses):
    cfg = config(tmp_path, tiny_model_dir, responses, "method=dto", "split.markers=[]", "dto.probes=4", "dto.threshold=0.75")
    run_checkpoints(cfg, backends=scripted_factory(script))
    trees = {t.problem["id"]: t for t in iter_trees(tmp_path / "run")}
    (report,) = [r for r in trees["p1"].stats["dto"] if r["verdict"] == "correct"]
    assert report["votes"] == {"1": ["wrong"] * 4, "2": ["correct"] * 3 + ["wrong"], "3": ["correct"] * 4}
    assert report["exit"] == 2 and report["kept"]
    (cut,) = [n for n in trees["p1"].nodes if n.kind == "exit"]
    assert cut.text == CLOSING + "The answer is \\boxed{7}." and cut.verdict == "correct"
    text = "".join(n.text for n in trees["p1"].path(cut))
    assert text == "Step 1: a.\n\nStep 2: b.\n\n" + CLOSING + "The answer is \\boxed{7}."
    assert report["truncated_tokens"] == len(trees["p1"].path_ids(cut)) and report["original_tokens"] == len(RIGHT)
    assert not [n for n in trees["p2"].nodes if n.kind == "exit"]  # a wrong trajectory is never truncated
    result = build(load_config(ExportConfig, None, ["val_fraction=0", "strategies=[dto]", "sft.select=[]"]),
                   [tmp_path / "run"])
    (row,) = result.pairs
    assert row["problem_id"] == "p1" and row["chosen"] == CLOSING + "The answer is \\boxed{7}."
    assert row["rejected"] == "Wait, check it.\n\nThe answer is \\boxed{7}."


def test_dto_threshold_one_exits_later(tmp_path, tiny_model_dir, responses):
    cfg = config(tmp_path, tiny_model_dir, responses, "method=dto", "split.markers=[]", "dto.threshold=1.0")
    run_checkpoints(cfg, backends=scripted_factory(script))
    tree = next(t for t in iter_trees(tmp_path / "run") if t.problem["id"] == "p1")
    assert [r["exit"] for r in tree.stats["dto"] if r["verdict"] == "correct"] == [3]


def test_bad_trajectory_rows_and_the_judge_hook_are_one_line_errors(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "problem": "?", "answer": "1"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl: line 1: lacks solution"):
        run_checkpoints(config(tmp_path, tiny_model_dir, bad), backends=scripted_factory(script))
    with pytest.raises(UserError, match="dto.judge_model"):
        run_checkpoints(config(tmp_path, tiny_model_dir, bad, "dto.judge_model=x"), backends=scripted_factory(script))


# ------------------------------------------------------------------------------------------ the DTO recipe


def test_dto_recipe_runs_sampling_truncation_export_simpo_and_eval(tmp_path, tiny_model_dir):
    from mcts_cot.checkpoints.recipe import load_recipe, run_dto_recipe
    from mcts_cot.problems import arithmetic_problems

    gold = {p.problem: p.answer for split in ("train", "test") for p in arithmetic_problems(4, split)}

    def recipe_script(prompt: str, index: int) -> str:
        problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
        if prompt.endswith(EXIT):
            return f"{gold[problem]}}}."
        if prompt.endswith(CLOSING):
            return f"The answer is \\boxed{{{gold[problem]}}}."
        return f"Step 1: add.\n\nStep 2: more.\n\nWait, check.\n\nThe answer is \\boxed{{{gold[problem]}}}."

    cfg = load_recipe("configs/recipes/dto.yaml", [f"out={tmp_path / 'dto'}", f"model={tiny_model_dir}", "backend=scripted",
                                                  "train_problems=4", "test_problems=3", "samples=2", "dto.dto.probes=2"])
    assert cfg.dto.set["dto.probes"] == 2 and cfg.dto.set["dto.threshold"] == 0.75  # a stage key joins the YAML's
    fast = {"prompt.system": "", "prompt.few_shot": [], "verify.workers": 1}
    for stage in (cfg.sample, cfg.eval, cfg.dto):
        stage.set.update(fast)
    cfg.sample.set["sampling.max_tokens"] = 256
    cfg.train.set.update({"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 256})
    cfg.export.set["val_fraction"] = 0.0
    result = run_dto_recipe(cfg, backends=scripted_factory(recipe_script))
    # Every sample is correct; each exits at its first checkpoint (the break before "Wait") and verifies.
    assert result["dto"]["correct_trajectories"] == 8 and result["dto"]["keep_rate"] == 1.0
    assert result["pairs"] == 4  # one per problem: shortest truncation vs longest original
    assert (tmp_path / "dto" / "model" / "metrics.json").is_file() and result["trained"]["problem_count"] == 3
    assert result["vs_base"]["problems"] == 3 and (tmp_path / "dto" / "results.md").is_file()


def test_a_search_runs_paths_are_trajectories_with_their_own_prompt_and_tokens(tmp_path, tiny_model_dir):
    from mcts_cot.checkpoints import trajectories
    from mcts_cot.run import run_search
    from mcts_cot.search import SearchConfig

    scfg = load_config(SearchConfig, None, [
        "strategy=best_of_n", "best_of_n.n=2", f"out={tmp_path / 'search'}", f"model.name={tiny_model_dir}",
        "backend.name=scripted", "problems.source=builtin:arithmetic:2", "prompt.system=''", "prompt.few_shot=[]",
        "verify.workers=1"])
    run_search(scfg, backends=scripted_factory(lambda prompt, i: f"Step {i}.\n\nThe answer is \\boxed{{{i}}}."))
    found = trajectories.load(str(tmp_path / "search"))
    trees = {t.problem["id"]: t for t in iter_trees(tmp_path / "search")}
    assert set(found) == set(trees) and all(len(ts) == 2 for ts in found.values())
    for pid, ts in found.items():
        ends = trees[pid].leaves()
        assert [t.token_ids for t in ts] == [trees[pid].path_ids(e) for e in ends]
        assert all(t.prompt_ids == trees[pid].prompt_ids and t.text.startswith("Step ") for t in ts)


def test_reference_solutions_from_elsewhere_split_at_line_ends_and_can_be_closed_with_their_gold():
    from pathlib import Path

    from mcts_cot.answers import extract_answer
    from mcts_cot.checkpoints import trajectories

    gsm = Path(__file__).parents[1] / ".." / "shared" / "data" / "gsm8k_train_2k.jsonl"
    if not gsm.is_file():
        pytest.skip("../shared/data is not here")
    plain = trajectories.load(str(gsm), limit=3)
    closed = trajectories.load(str(gsm), limit=3, close_with_gold=True)
    for pid, (traj,) in plain.items():
        assert extract_answer(traj.text) is None  # GSM8K's solutions state no answer the extractor reads
        (done,) = closed[pid]
        assert done.text.startswith(traj.text.rstrip()) and extract_answer(done.text) == done.problem.answer
        assert len(paragraphs(traj.text, ["\n\n", "\n"])) == traj.text.count("\n") + 1  # one line, one paragraph
