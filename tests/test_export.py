"""export-pairs on hand-built trees with known Q values: exact SFT paths and pairs per strategy, the token /
text invariants the trainer relies on, the split, run-dir merging, the files, and TRL's DPO data preparation."""

from __future__ import annotations

import logging
import warnings

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.export import ExportConfig, build, validation_ids, write
from mcts_cot.pairs import facts, pair_rows, sft_rows
from mcts_cot.tiny import byte_tokenizer, tiny_llama
from mcts_cot.tree import Tree

TOK = byte_tokenizer()
PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
ENDS = {None: (None, None), "ok": ("answer", "correct"), "bad": ("answer", "wrong"),
        "none": ("eos", "no_answer"), "unv": ("answer", "unverifiable"), "cut": ("length", "no_answer"),
        "deep": ("max_depth", "no_answer")}
ANSWER5, ANSWER6 = "The answer is \\boxed{5}.", "The answer is \\boxed{6}."


def enc(text: str) -> list[int]:
    return TOK.encode(text)


def make_tree(pid, spec) -> Tree:
    """Nodes from nested (text, N, W, end, children) tuples, ids in depth-first order."""
    tree = Tree(problem={"id": pid, "problem": "What is 2+3?", "answer": "5"}, prompt_ids=enc(PROMPT), prompt_text=PROMPT)

    def grow(parent, items):
        for text, n, w, end, kids in items:
            terminal, verdict = ENDS[end]
            node = tree.add(parent, kind="step", text=text, token_ids=enc(text), N=n, W=w, terminal=terminal, verdict=verdict)
            grow(node, kids)

    grow(tree.root, spec)
    tree.root.N = sum(tree.nodes[i].N for i in tree.root.children)
    return tree


def tree_a(pid="a"):
    """1 (Q 2/3) ─ 2 correct, 3 (Q 2/3) ─ {4 correct, 5 wrong}, 6 wrong;  7 (Q 0) ─ 8 wrong, 9 no answer."""
    return make_tree(pid, [
        ("Step 1: 2+3=5.\n\n", 6, 4, None, [
            (ANSWER5, 2, 2, "ok", []),
            ("Step 2: check: 5.\n\n", 3, 2, None, [(ANSWER5, 2, 2, "ok", []), (ANSWER6, 1, 0, "bad", [])]),
            ("The answer is \\boxed{7}.", 1, 0, "bad", []),
        ]),
        ("Step 1: 2+3=6.\n\n", 3, 0, None, [(ANSWER6, 2, 0, "bad", []), ("So", 1, 0, "none", [])]),
    ])


def tree_sft(pid="s"):
    """Five direct answers: four distinct correct lengths (node 4 repeats node 2), one wrong."""
    return make_tree(pid, [
        ("x=5. " + ANSWER5, 1, 1, "ok", []), ("So x=5. " + ANSWER5, 1, 1, "ok", []),
        ("First, x=5. " + ANSWER5, 1, 1, "ok", []), ("So x=5. " + ANSWER5, 1, 1, "ok", []),
        ("First we add, x=5. " + ANSWER5, 1, 1, "ok", []), ("x=6. " + ANSWER6, 1, 0, "bad", []),
    ])


def cfg(*overrides: str) -> ExportConfig:
    return load_config(ExportConfig, None, list(overrides))


def pairs_of(tree, *overrides):
    c = cfg(*overrides)
    rows, counts = pair_rows(facts(tree, c.rejected_verdicts, c.limit_cut_rejected), c.strategies, {n: getattr(c, n) for n in c.strategies},
                             c.max_pairs_per_problem)
    return rows, counts


def ends(tree, row) -> tuple[int, int]:
    """The node ids whose root paths are the row's chosen and rejected sequences."""
    by_ids = {tuple(tree.path_ids(n)): n.id for n in reversed(tree.nodes[1:])}
    return by_ids[tuple(row["prefix_ids"] + row["chosen_ids"])], by_ids[tuple(row["prefix_ids"] + row["rejected_ids"])]


# --------------------------------------------------------------------------------------------- SFT


@pytest.mark.parametrize(("overrides", "expected", "dropped"), [
    ([], [(5, "longest")], {"duplicate": 1, "not_selected": 3}),
    (["sft.select=[shortest, medium, longest]"], [(1, "shortest"), (2, "medium"), (5, "longest")],
     {"duplicate": 1, "not_selected": 1}),
    (["sft.select=[shortest, medium, longest]", "sft.max_per_problem=2"], [(1, "shortest"), (2, "medium")],
     {"duplicate": 1, "not_selected": 1, "cap": 1}),
    (["sft.per_rank=2"], [(3, "longest"), (5, "longest")], {"duplicate": 1, "not_selected": 2}),
    (["sft.select=[]"], [], {"duplicate": 1, "not_selected": 4}),
])
def test_sft_ranks_dedup_and_cap(overrides, expected, dropped):
    tree, c = tree_sft(), cfg(*overrides)
    rows, counts = sft_rows(facts(tree, c.rejected_verdicts), c.sft)
    assert [(r["completion"], r["rank"]) for r in rows] == [(tree.nodes[i].text, rank) for i, rank in expected]
    assert {k: v for k, v in counts.items() if k != "kept"} == dropped and counts["kept"] == len(expected)
    for row in rows:
        assert row["prompt_ids"] + row["completion_ids"] == enc(row["prompt"] + row["completion"])
        assert row["complete"] and row["num_tokens"] == len(row["completion_ids"])


def test_sft_single_path_is_kept_once_under_its_first_rank():
    tree = make_tree("one", [(ANSWER5, 1, 1, "ok", []), (ANSWER6, 1, 0, "bad", [])])
    rows, _ = sft_rows(facts(tree, ["wrong"]), cfg("sft.select=[longest, shortest]").sft)
    assert [r["rank"] for r in rows] == ["longest"]


# --------------------------------------------------------------------------------------------- pairs


def test_path_pairs_take_the_shortest_correct_and_the_least_shared_rejected():
    tree = tree_a()
    rows, counts = pairs_of(tree)
    assert [ends(tree, r) for r in rows] == [(2, 9)]  # 8 and 9 share only "Step 1: 2+3=" with 1-2; 9 is shorter
    row = rows[0]
    assert row["prefix_ids"] == enc("Step 1: 2+3=") and row["prompt"] == PROMPT + "Step 1: 2+3="
    assert row["chosen"] == "5.\n\n" + ANSWER5 and row["rejected"] == "6.\n\nSo"
    assert (row["chosen_complete"], row["rejected_complete"]) == (True, False)
    assert (row["chosen_end"], row["rejected_end"]) == ("answer", "eos")
    assert (row["chosen_q"], row["chosen_n"], row["rejected_q"], row["rejected_n"]) == (4 / 6, 6, 0.0, 3)
    assert row["confidence"] == pytest.approx(2 / 3) and row["epsilon"] == pytest.approx(1 / 3)
    assert counts["path"] == {"kept": 1, "chosen_not_selected": 4, "longer_shared_prefix": 3}

    rows, _ = pairs_of(tree, "rejected_verdicts=[wrong]")
    assert [ends(tree, r) for r in rows] == [(2, 8)]


def test_path_pairs_all_chosen_with_caps():
    tree = tree_a()
    rows, counts = pairs_of(tree, "path.chosen=all", "path.rejected_per_chosen=2")
    assert [ends(tree, r) for r in rows] == [(2, 9), (2, 8), (4, 9), (4, 8)]
    rows, counts = pairs_of(tree, "path.chosen=all", "path.rejected_per_chosen=2", "path.max_per_problem=3")
    assert len(rows) == 3 and counts["path"]["cap"] == 1
    rows, counts = pairs_of(tree, "path.chosen=longest")
    assert [ends(tree, r) for r in rows] == [(4, 9)]


def test_step_pairs_respect_margin_and_min_visits():
    tree = tree_a()
    rows, counts = pairs_of(tree, "strategies=[step]")
    assert [ends(tree, r) for r in rows] == [(1, 7), (2, 3)]  # largest Q gap first; 6, 5 and 9 have N = 1
    assert counts["step"] == {"kept": 2, "min_visits": 2}
    inner = rows[1]
    assert inner["prompt"] == PROMPT + "Step 1: 2+3=5.\n\n" and inner["prefix_ids"] == enc("Step 1: 2+3=5.\n\n")
    assert (inner["chosen"], inner["rejected"]) == (ANSWER5, "Step 2: check: 5.\n\n")
    assert (inner["chosen_complete"], inner["rejected_complete"]) == (True, False)
    assert (inner["chosen_q"], inner["rejected_q"], inner["chosen_n"], inner["rejected_n"]) == (1.0, 2 / 3, 2, 3)
    assert inner["confidence"] == pytest.approx(0.4) and inner["epsilon"] == 0.5

    rows, counts = pairs_of(tree, "strategies=[step]", "step.margin=0.5")
    assert [ends(tree, r) for r in rows] == [(1, 7)] and counts["step"]["margin"] == 1
    rows, counts = pairs_of(tree, "strategies=[step]", "step.min_visits=1")
    assert [ends(tree, r) for r in rows] == [(2, 6), (4, 5), (1, 7)] and counts["step"]["margin"] == 1  # 8 vs 9


def test_step_margin_is_met_despite_float_rounding():
    tree = make_tree("f", [(ANSWER5, 10, 7, "ok", []), (ANSWER6, 10, 4, "bad", [])])  # 0.7 - 0.4 < 0.3 in floats
    rows, _ = pairs_of(tree, "strategies=[step]", "step.margin=0.3")
    assert [ends(tree, r) for r in rows] == [(1, 2)]
    rows, _ = pairs_of(tree, "strategies=[step]", "step.margin=0.31")
    assert rows == []


def test_step_continuation_follows_to_a_terminal():
    tree = tree_a()
    rows, _ = pairs_of(tree, "strategies=[step]", "step.completion=continuation")
    # 7 → 8 (more visited than 9); 3 → 5, not its higher-Q child 4: the rejected side heads for a rejected end
    assert [ends(tree, r) for r in rows] == [(2, 8), (2, 5)]
    first = rows[0]
    assert first["prefix_ids"] == enc("Step 1: 2+3=")  # the longest common token prefix of the two paths
    assert first["chosen"] == "5.\n\n" + ANSWER5 and first["rejected"] == "6.\n\n" + ANSWER6
    assert (first["chosen_q"], first["rejected_q"]) == (4 / 6, 0.0)  # of the divergent steps, not the ends
    assert (first["chosen_complete"], first["rejected_complete"]) == (True, True)


def test_length_pairs_ratio_and_direction():
    tree = tree_a()
    short, long = len(tree.path_ids(tree.nodes[2])), len(tree.path_ids(tree.nodes[4]))
    assert 1.4 < long / short < 1.5
    rows, counts = pairs_of(tree, "strategies=[length]")
    assert rows == [] and counts["length"] == {"min_ratio": 1}
    rows, _ = pairs_of(tree, "strategies=[length]", "length.min_ratio=1.4")
    assert [ends(tree, r) for r in rows] == [(2, 4)]
    assert rows[0]["prefix_ids"] == enc("Step 1: 2+3=5.\n\n") and rows[0]["rejected_complete"]
    assert rows[0]["confidence"] == pytest.approx(0.4) and rows[0]["epsilon"] == 0.5
    rows, _ = pairs_of(tree, "strategies=[length]", "length.min_ratio=1.4", "length.prefer=long")
    assert [ends(tree, r) for r in rows] == [(4, 2)]


def test_no_identical_unverifiable_or_repeated_pairs():
    tree = make_tree("u", [(ANSWER5, 2, 2, "ok", []), (ANSWER5, 1, 0, "bad", []), ("The answer is \\boxed{six}.", 5, 0, "unv", []),
                           (ANSWER6, 2, 0, "bad", [])])
    rows, counts = pairs_of(tree, "strategies=[path, step]", "path.rejected_per_chosen=3")
    assert [(r["strategy"], *ends(tree, r)) for r in rows] == [("path", 1, 4)]
    assert counts["path"] == {"kept": 1, "empty_suffix": 1}  # 1 and 2 are the same tokens
    assert counts["step"] == {"duplicate": 1}  # best 1 vs worst 4 (the unverifiable 3 is never compared)
    assert all(r["chosen_ids"] != r["rejected_ids"] for r in rows)


def test_a_pair_shares_the_longest_common_token_prefix_of_its_two_responses():
    prefill = "<sub-task>Let me add the two numbers: "  # one request's children share its open tag and prefill
    tree = make_tree("t", [(prefill + "2+3=5.</sub-task>\n", 3, 2, None, [(ANSWER5, 2, 2, "ok", [])]),
                           (prefill + "2+3=6.</sub-task>\n", 2, 0, None, [(ANSWER6, 2, 0, "bad", [])])])
    for strategy in ("path", "step"):
        [row], _ = pairs_of(tree, f"strategies=[{strategy}]", "step.margin=0.1")
        assert row["prefix_ids"] == enc(prefill + "2+3=") and row["prompt"] == PROMPT + prefill + "2+3="
        assert row["chosen_ids"][:1] == enc("5") and row["rejected_ids"][:1] == enc("6")
        assert (row["chosen_q"], row["rejected_q"]) == (2 / 3, 0.0)  # of the divergent nodes
    [row], _ = pairs_of(make_tree("u", [(ANSWER5, 2, 2, "ok", []), (ANSWER6, 2, 0, "bad", [])]))
    assert (row["prefix_ids"], row["chosen_ids"], row["rejected_ids"]) == (enc("The answer is \\boxed{"), enc("5}."), enc("6}."))


def tree_cut(pid="c"):
    """1 correct; 2 cut at the length limit, 3 at the depth limit (no shared tokens with 1); 4 ended (eos)."""
    return make_tree(pid, [(ANSWER5, 2, 2, "ok", []), ("Hmm, 2 and 3", 1, 0, "cut", []), ("Hmm, 3 and 2", 1, 0, "deep", []),
                           ("The sum is big.", 1, 0, "none", [])])


def test_a_rejected_side_cut_by_a_limit_is_marked_counted_and_optional(tmp_path):
    rows, _ = pairs_of(tree_cut(), "path.rejected_per_chosen=3")
    assert [r["rejected_end"] for r in rows] == ["length", "max_depth", "eos"]
    assert {r["chosen_end"] for r in rows} == {"answer"} and not any(r["rejected_complete"] for r in rows)
    rows, counts = pairs_of(tree_cut(), "path.rejected_per_chosen=3", "limit_cut_rejected=false")
    assert [r["rejected_end"] for r in rows] == ["eos"] and counts["path"] == {"kept": 1}
    rows, counts = pairs_of(tree_cut(), "strategies=[step]", "step.min_visits=1", "limit_cut_rejected=false")
    assert rows == [] and counts["step"] == {"limit_cut": 1}  # worst sibling 2 (cut) against best 1
    report = build(cfg("path.rejected_per_chosen=3", "val_fraction=0"), [run_dir(tmp_path / "r", [tree_cut()])]).report
    assert report["pair_ends"] == {"chosen": {"answer": 3}, "rejected": {"eos": 1, "length": 1, "max_depth": 1},
                                   "rejected_cut_by_limit": 2, "limit_cut_rejected": True, "limit_cut_ends_excluded": 0}
    off = build(cfg("path.rejected_per_chosen=3", "val_fraction=0", "limit_cut_rejected=false"), [tmp_path / "r"]).report
    assert (off["pair_ends"]["rejected_cut_by_limit"], off["pair_ends"]["limit_cut_ends_excluded"]) == (0, 2)


def test_problem_cap_over_strategies():
    rows, counts = pairs_of(tree_a(), "strategies=[path, step]", "max_pairs_per_problem=2")
    assert [r["strategy"] for r in rows] == ["path", "step"] and counts["step"]["problem_cap"] == 1


@pytest.mark.parametrize("strategies", ["[path]", "[step]", "[length]"])
@pytest.mark.parametrize("completion", ["step", "continuation"])
def test_rows_rebuild_the_full_paths_exactly(strategies, completion):
    tree = tree_a()
    paths = {tuple(tree.path_ids(n)): "".join(m.text for m in tree.path(n)) for n in tree.nodes[1:]}
    rows, _ = pairs_of(tree, f"strategies={strategies}", f"step.completion={completion}", "step.min_visits=1",
                       "length.min_ratio=1", "path.chosen=all", "path.rejected_per_chosen=4")
    assert rows
    for row in rows:
        for side in ("chosen", "rejected"):
            full = tuple(row["prefix_ids"] + row[f"{side}_ids"])
            assert paths[full] == row["prompt"][len(PROMPT):] + row[side]
            assert row["prompt_ids"] == tree.prompt_ids and row["prompt"].startswith(tree.prompt_text)
            assert TOK.decode(row["prompt_ids"] + list(full)) == row["prompt"] + row[side]
        assert row["chosen_ids"] and row["rejected_ids"] and row["chosen_ids"] != row["rejected_ids"]


# --------------------------------------------------------------------------------------------- run dirs and files


def run_dir(path, trees, name="trees.jsonl", model="tiny"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": model}}))
    with open(path / name, "ab") as fh:
        fh.writelines(orjson.dumps(t.to_record()) + b"\n" for t in trees)
    return path


def test_split_is_disjoint_exact_and_seeded():
    ids = [f"p{i}" for i in range(40)]
    val = validation_ids(ids, 0.25, 0)
    assert len(val) == 10 and val == validation_ids(ids[::-1], 0.25, 0) and val != validation_ids(ids, 0.25, 1)


def test_run_dirs_merge_shards_and_dedup(tmp_path):
    one = run_dir(tmp_path / "one", [tree_a("p0"), tree_a("p1")], "trees-0-of-2.jsonl")
    run_dir(one, [tree_a("p2")], "trees-1-of-2.jsonl")
    two = run_dir(tmp_path / "two", [tree_sft("p2"), tree_sft("p3")], model="other")
    result = build(cfg("val_fraction=0.5"), [one, two])
    assert sorted(result.report["per_problem"]) == ["p0", "p1", "p2", "p3"]
    assert [(s.trees, s.duplicates) for s in result.sources] == [(3, 0), (2, 1)]
    p2 = [r for r in result.sft if r["problem_id"] == "p2"]
    assert [(r["completion"], r["model"]) for r in p2] == [("Step 1: 2+3=5.\n\nStep 2: check: 5.\n\n" + ANSWER5, "tiny")]
    splits = {}
    for row in result.sft + result.pairs:
        splits.setdefault(row["problem_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values()) and {"train", "validation"} == set().union(*splits.values())


def test_run_dir_without_trees_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no trees"):
        build(cfg(), [tmp_path / "empty"])


def test_files_are_deterministic_and_load_with_datasets(tmp_path):
    from datasets import load_dataset

    runs = run_dir(tmp_path / "run", [tree_a(f"p{i}") for i in range(6)] + [tree_sft("s")])
    c = cfg("strategies=[path, step, length]", "length.min_ratio=1", "val_fraction=0.3")
    for out in ("out1", "out2"):
        write(build(c, [runs]), c, tmp_path / out)
    names = ["sft.jsonl", "sft_val.jsonl", "pairs.jsonl", "pairs_val.jsonl", "report.json", "lengths.png", "config.yaml"]
    for name in names:
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name
    manifest = orjson.loads((tmp_path / "out1" / "manifest.json").read_bytes())
    assert manifest["rows"]["pairs"] + manifest["rows"]["pairs_val"] == 6 * 4 + 3  # tree s: 1 path + 2 length pairs
    for name in names[:4]:
        ds = load_dataset("json", data_files=str(tmp_path / "out1" / name), split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) > 0 and set(ds["split"]) == {"validation" if "val" in name else "train"}
    report = orjson.loads((tmp_path / "out1" / "report.json").read_bytes())
    assert report["pairs"]["step"] == {"candidates": 25, "kept": 12, "dropped": {"min_visits": 13}}
    assert report["sft"]["lengths_before"]["count"] == 6 * 2 + 4 and report["sft"]["lengths_after"]["count"] == 7


def test_cli_dry_run_writes_nothing_and_reports(tmp_path):
    from cli import app

    runs = run_dir(tmp_path / "run", [tree_a("p0")])
    result = CliRunner().invoke(app, ["export-pairs", str(runs), "--dry-run", "--set", "strategies=[path, step]"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "pairs: step" in result.output and "1 problems" in result.output and not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["export-pairs", str(runs), "--out", str(tmp_path / "out"), "--config",
                                      "configs/export/step.yaml"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()) == 2
    result = CliRunner().invoke(app, ["export-pairs", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and "no trees" in result.output


# --------------------------------------------------------------------------------------------- TRL


def test_pairs_pass_trl_dpo_preparation_without_boundary_warnings(tmp_path, caplog):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    runs = run_dir(tmp_path / "run", [tree_a(f"p{i}") for i in range(2)])
    c = cfg("strategies=[path, step, length]", "length.min_ratio=1", "val_fraction=0")
    write(build(c, [runs]), c, tmp_path / "data")
    ds = load_dataset("json", data_files=str(tmp_path / "data" / "pairs.jsonl"), split="train",
                      cache_dir=str(tmp_path / "hf"))
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=1, bf16=False,
                     report_to=[], save_strategy="no", use_cpu=True, gradient_checkpointing=False, disable_tqdm=True)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        trainer = DPOTrainer(model=tiny_llama(TOK), ref_model=tiny_llama(TOK), args=args, train_dataset=ds,
                             processing_class=TOK)
        trainer.train()
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "prefix" in m.lower() or "mismatch" in m.lower()], said
    eos = [TOK.eos_token_id]
    for ours, theirs in zip(ds, trainer.train_dataset, strict=True):  # TRL re-tokenises the text
        assert theirs["prompt_ids"] == ours["prompt_ids"] + ours["prefix_ids"]
        assert theirs["chosen_ids"] == ours["chosen_ids"] + eos and theirs["rejected_ids"] == ours["rejected_ids"] + eos
