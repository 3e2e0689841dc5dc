"""Problems: the shared data files load as they are, the built-in generator, and bad rows named by row."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mcts_cot.config import ProblemsConfig
from mcts_cot.errors import UserError
from mcts_cot.problems import load_problems

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA_FILES = sorted(DATA.glob("*.jsonl")) if DATA.is_dir() else []


def _load(source, **kw):
    return load_problems(ProblemsConfig(source=str(source), **kw))


@pytest.mark.skipif(not DATA_FILES, reason="shared/data is not beside this checkout")
@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_shared_data_loads_as_it_is(path):
    problems, report = _load(path)
    rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    assert report.loaded == len(problems) == rows and not report.skipped
    assert all(p.id and p.problem and p.answer for p in problems)
    assert "source" in problems[0].meta


def test_builtin_is_deterministic_sized_and_well_formed():
    a, _ = _load("builtin:arithmetic:50")
    b, _ = _load("builtin:arithmetic:50")
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert len(a) == 50 and len({p.problem for p in a}) == 50 and len({p.id for p in a}) == 50
    assert all(p.answer.isdigit() and int(p.answer) > 0 for p in a)
    assert len(_load("builtin:arithmetic")[0]) == 100
    assert [p.id for p in _load("builtin:arithmetic:10")[0]] == [p.id for p in a[:10]]  # N takes a prefix
    assert [p.id for p in _load("builtin:arithmetic:50", seed=1)[0]] != [p.id for p in a]


def test_builtin_train_and_test_never_overlap():
    train, _ = _load("builtin:arithmetic:2000", split="train")
    test, _ = _load("builtin:arithmetic:500", split="test")
    assert len(train) == 2000 and len(test) == 500
    assert not {p.problem for p in train} & {p.problem for p in test}


def _digest(problems) -> str:
    return hashlib.sha256(json.dumps([(p.id, p.problem, p.answer) for p in problems]).encode()).hexdigest()[:16]


def test_builtin_defaults_are_the_problems_earlier_runs_used():
    """Run dirs resume by problem id and the demo's numbers are on these problems: the default stream (and
    any difficulty given as a plain N) must not change when the generator learns longer chains."""
    assert _digest(_load("builtin:arithmetic:200", split="train")[0]) == "0feb5580496d680e"
    assert _digest(_load("builtin:arithmetic:100", split="test")[0]) == "5c65cc6253275d89"
    assert _digest(_load("builtin:arithmetic:50", difficulty="1-2")[0]) == _digest(_load("builtin:arithmetic:50")[0])


def _replay(meta) -> list[int]:
    """Every value of a problem's chain, recomputed from its record with exact integer arithmetic."""
    values = [meta["start"]]
    for op, k in meta["ops"]:
        x = values[-1]
        assert op != "div" or x % k == 0, f"{x} / {k} is not a whole number"
        values.append({"add": x + k, "sub": x - k, "mul": x * k, "div": x // k}[op])
    return values


@pytest.mark.parametrize("difficulty, low, high", [(2, 1, 2), (3, 1, 3), ("4-6", 4, 6), ("4-4", 4, 4),
                                                   ("5-5", 5, 5), ("6-6", 6, 6)])
def test_builtin_problems_have_the_steps_they_claim_and_exact_answers(difficulty, low, high):
    problems, _ = _load("builtin:arithmetic:400", split="train", difficulty=difficulty)
    for p in problems:
        steps = p.meta["steps"]
        assert low <= steps <= high and len(p.meta["ops"]) == steps, p
        assert p.problem.count(", then ") == steps, p  # every step is written, none silently left out
        values = _replay(p.meta)
        assert all(v > 0 for v in values) and p.answer == str(values[-1]), p
        assert p.problem.startswith(p.problem.split(" has ")[0] + f" has {values[0]} ")
    assert {p.meta["steps"] for p in problems} == set(range(low, high + 1))


def test_builtin_splits_are_disjoint_at_every_difficulty():
    train, test = set(), set()
    for d in range(1, 7):
        a = {p.problem for p in _load("builtin:arithmetic:400", split="train", difficulty=f"{d}-{d}")[0]}
        b = {p.problem for p in _load("builtin:arithmetic:100", split="test", difficulty=f"{d}-{d}")[0]}
        assert len(a) == 400 and len(b) == 100 and not a & b
        train, test = train | a, test | b
    assert not train & test  # a text's split does not depend on the difficulty that drew it


@pytest.mark.parametrize("difficulty", ["6-4", "0-2", "1-7", "four", 7])
def test_a_bad_difficulty_names_the_key(difficulty):
    with pytest.raises(UserError, match=r"problems.difficulty: .*1 to 6"):
        _load("builtin:arithmetic:5", difficulty=difficulty)


def test_difficulty_is_set_as_a_range_from_the_command_line():
    from mcts_cot.config import load_config
    from mcts_cot.search import SearchConfig

    cfg = load_config(SearchConfig, overrides=["problems.difficulty=4-6"])
    assert cfg.problems.difficulty == "4-6"
    assert {p.meta["steps"] for p in load_problems(cfg.problems)[0]} <= {4, 5, 6}


@pytest.mark.parametrize("source, match", [("builtin:algebra", "expected builtin:arithmetic"),
                                           ("builtin:arithmetic:ten", "N must be a whole number")])
def test_builtin_bad_source(source, match):
    with pytest.raises(UserError, match=match):
        _load(source)


def _jsonl(tmp_path, rows, name="p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"}]


@pytest.mark.parametrize("bad, reason", [
    ({"id": "x", "problem": "?"}, "missing answer field 'answer'"),
    ({"id": "x", "problem": "?", "answer": "\\frac{"}, "gold answer .* does not parse with math-verify"),
    ("{not json", "not valid JSON"),
])
def test_bad_row_names_file_and_row(tmp_path, bad, reason):
    path = _jsonl(tmp_path, [*GOOD, bad])
    with pytest.raises(UserError, match=rf"p.jsonl: row 3: {reason}"):
        _load(path)


def test_skip_bad_rows_counts_them(tmp_path):
    path = _jsonl(tmp_path, [GOOD[0], {"id": "x", "problem": "?"}, {"id": "y", "problem": "?", "answer": "\\frac{"}, GOOD[1]])
    problems, report = _load(path, skip_bad_rows=True)
    assert [p.id for p in problems] == ["a", "b"] and report.loaded == 2
    assert len(report.skipped) == 2 and report.skipped[0].startswith("row 2")


def test_missing_problem_field_and_file(tmp_path):
    with pytest.raises(UserError, match="row 1: missing problem field 'problem'"):
        _load(_jsonl(tmp_path, [{"answer": "1"}]))
    with pytest.raises(UserError, match="problem file not found"):
        _load(tmp_path / "absent.jsonl")
    with pytest.raises(UserError, match="unknown problem file type"):
        _load(_jsonl(tmp_path, GOOD, name="p.csv"))


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(UserError, match="'a' appears more than once"):
        _load(_jsonl(tmp_path, [GOOD[0], GOOD[0]]))


def test_json_parquet_and_datasets_folder(tmp_path):
    import datasets

    expected = [("a", "1+1?", "2"), ("b", "2+2?", "4")]
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps({"data": GOOD}))
    ds = datasets.Dataset.from_list(GOOD)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for source in (as_json, tmp_path / "p.parquet", tmp_path / "saved"):
        problems, _ = _load(source)
        assert [(p.id, p.problem, p.answer) for p in problems] == expected, source
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match="several splits"):
        _load(tmp_path / "dd")


def test_custom_field_names_row_number_ids_and_limit(tmp_path):
    rows = [{"question": f"{i}+1?", "final": i + 1, "level": 3} for i in range(5)]
    path = _jsonl(tmp_path, rows)
    problems, _ = _load(path, problem_field="question", answer_field="final", limit=3)
    assert [(p.id, p.problem, p.answer) for p in problems] == [("1", "0+1?", "1"), ("2", "1+1?", "2"), ("3", "2+1?", "3")]
    assert problems[0].meta == {"level": 3}


# ------------------------------------------------------------------------------------- hostile input


def test_non_utf8_bytes_name_the_file_and_row(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "problem": "1+1?", "answer": "2"}\n{"id": "b", "problem": "caf\xe9?", "answer": "4"}\n')
    with pytest.raises(UserError, match=r"p.jsonl: row 2: not UTF-8 \(byte 0xe9 at column 28\)"):
        _load(path)
    as_json = tmp_path / "p.json"
    as_json.write_bytes(b'[{"id": "a", "problem": "1+1?", "answer": "2"},\n {"id": "b", "problem": "caf\xe9?", "answer": "4"}]')
    with pytest.raises(UserError, match=r"p.json: line 2: not UTF-8 \(byte 0xe9"):
        _load(as_json)


def test_corrupt_parquet_names_the_file(tmp_path):
    import datasets

    good = tmp_path / "good.parquet"
    datasets.Dataset.from_list(GOOD * 50).to_parquet(str(good))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not a parquet file at all")
    with pytest.raises(UserError, match=r"garbage.parquet: not a readable Parquet file"):
        _load(garbage)
    data = bytearray(good.read_bytes())
    data[10:200] = b"\xff" * 190  # the first data pages, while the footer stays intact
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"torn.parquet: rows 1-100: corrupt \("):
        _load(torn)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_problem_file_is_an_error_that_says_so(tmp_path, content):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=r"p.jsonl: the file holds no problems \(it is empty\)"):
        _load(path)


def test_a_file_whose_every_row_is_skipped_says_so(tmp_path):
    path = _jsonl(tmp_path, [{"id": "x", "problem": "?"}])
    with pytest.raises(UserError, match=r"p.jsonl: every row was skipped \(1\); first: row 1: missing answer"):
        _load(path, skip_bad_rows=True)


def test_a_5000_digit_integer_answer_is_valid(tmp_path):
    big = "9" * 5000  # past Python's 4300-digit int() limit
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "s", "problem": "?", "answer": big}) + "\n"
                    + '{"id": "n", "problem": "?", "answer": ' + big + "}\n")  # also as a JSON number
    problems, _ = _load(path)
    assert [p.answer for p in problems] == [big, big]


def test_gold_answers_are_checked_with_the_runs_verify_config(tmp_path):
    from mcts_cot.config import VerifyConfig

    path = _jsonl(tmp_path, GOOD)
    with pytest.raises(UserError, match="raise verify.memory_mb"):
        load_problems(ProblemsConfig(source=str(path)), verify=VerifyConfig(workers=1, memory_mb=1))
    assert len(load_problems(ProblemsConfig(source=str(path)), verify=VerifyConfig(workers=1))[0]) == 2


class _Spy:
    """A tokenizer that counts how many characters it was asked to render."""

    def __init__(self, tok):
        self.tok, self.rendered = tok, 0

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def apply_chat_template(self, messages, **kw):
        self.rendered += sum(len(m["content"]) for m in messages)
        return self.tok.apply_chat_template(messages, **kw)


def _context(max_model_len):
    from mcts_cot.config import PromptConfig
    from mcts_cot.problems import Context
    from mcts_cot.tiny import byte_tokenizer

    return Context(_Spy(byte_tokenizer()), PromptConfig(system="", few_shot=[]), max_model_len)


def test_a_problem_longer_than_the_context_names_the_row(tmp_path):
    context = _context(256)
    path = _jsonl(tmp_path, [GOOD[0], {"id": "long", "problem": "x" * 300, "answer": "1"}, GOOD[1]])
    with pytest.raises(UserError, match=r"p.jsonl: row 2 \(id 'long'\): the prompt is 3\d\d tokens, "
                                        r"more than fit in backend.max_model_len \(256\)"):
        load_problems(ProblemsConfig(source=str(path)), context=context)
    problems, report = load_problems(ProblemsConfig(source=str(path), skip_bad_rows=True), context=context)
    assert [p.id for p in problems] == ["a", "b"] and report.skipped[0].startswith("row 2 (id 'long'): the prompt is")


def test_a_huge_problem_is_refused_by_its_length_before_it_is_tokenised(tmp_path):
    context = _context(256)
    path = _jsonl(tmp_path, [GOOD[0], {"id": "huge", "problem": "x" * 5_000_000, "answer": "1"}])
    with pytest.raises(UserError, match=r"p.jsonl: row 2 \(id 'huge'\): the problem is 5000000 characters, "
                                        r"more than 256 tokens \(backend.max_model_len\) can hold"):
        load_problems(ProblemsConfig(source=str(path)), context=context)
    assert context.tokenizer.rendered < 1000  # only the short row was rendered


@pytest.mark.parametrize("command", ["search", "eval"])
def test_search_and_eval_refuse_bad_problem_files_before_they_start(tmp_path, tiny_model_dir, command):
    from typer.testing import CliRunner

    from cli import app

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    long = _jsonl(tmp_path, [GOOD[0], {"id": "long", "problem": "x" * 3000, "answer": "1"}])
    base = [command, "--model", str(tiny_model_dir), "--backend", "scripted", "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, [*base, "--problems", str(empty)])
    assert res.exit_code == 2 and "empty.jsonl: the file holds no problems (it is empty)" in res.output
    res = CliRunner().invoke(app, [*base, "--problems", str(long), "--set", "backend.max_model_len=2048"])
    assert res.exit_code == 2 and "p.jsonl: row 2 (id 'long'): the prompt is" in res.output


REPO = Path(__file__).resolve().parents[1]
GSM8K = {"search": ("configs/search/gsm8k.yaml", "gsm8k_train_2k.jsonl", "trees.jsonl"),
         "eval": ("configs/eval/gsm8k.yaml", "gsm8k_test.jsonl", "samples.jsonl")}


@pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl").is_file() or not (DATA / "gsm8k_train_2k.jsonl").is_file(),
                    reason="../shared/data (gsm8k_train_2k.jsonl, gsm8k_test.jsonl) is not beside this checkout")
@pytest.mark.parametrize("command", ["search", "eval"])
def test_gsm8k_configs_run_on_the_real_files_from_the_repo_root(tmp_path, tiny_model_dir, monkeypatch, command):
    """GSM8K train is a search set and GSM8K test an eval set as the files are, through configs whose
    paths work from the repository root (the tiny model and the scripted backend stand in for the model)."""
    from typer.testing import CliRunner

    from cli import app

    config, name, written = GSM8K[command]
    monkeypatch.chdir(REPO)
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()[:3]]
    res = CliRunner().invoke(app, [command, "--config", config, "--model", str(tiny_model_dir), "--backend", "scripted",
                                   "--out", str(tmp_path / "out"), "--set", "problems.limit=3", "--set", "verify.workers=1"])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in (tmp_path / "out" / written).read_text().splitlines()]
    got = {(r["problem"]["id"], r["problem"]["answer"]) if command == "search" else (r["id"], r["gold"]) for r in out}
    assert got == {(r["id"], r["answer"]) for r in rows} and all(r["answer"].lstrip("-").isdigit() for r in rows)
