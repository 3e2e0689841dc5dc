"""Run dirs under misuse and crashes: one writer per trees file (a killed writer's lock never blocks), corrupt
lines skipped with a warning that names file and line, a full disk fails cleanly and resumes, one manifest
per shard, out dirs of export-pairs / train / eval kept unless --overwrite, and `search --dry-run` honours
--out and leaves no temp dir behind."""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.io import read_jsonl
from mcts_cot.search import SearchConfig
from mcts_cot.store import RunDir, iter_trees

ROOT = Path(__file__).resolve().parents[1]
SETS = ["backend.name=scripted", "problems.source=builtin:arithmetic:6", "concurrent_trees=3",
        "policy.children=2", "budget.max_rollouts=6", "budget.success_correct=2", "verify.workers=1"]


def _cfg(out: Path, model: Path, *extra: str) -> SearchConfig:
    return load_config(SearchConfig, None, [f"model.name={model}", *SETS, *extra], out=str(out))


def _search(out: Path, model: Path, *extra: str, **kwargs) -> dict:
    from mcts_cot.run import run_search

    return run_search(_cfg(out, model, *extra), **kwargs)


def _ids(path: Path) -> list[str]:
    return [r["problem"]["id"] for r in read_jsonl(path)]


# --------------------------------------------------------------------------------------------- the lock

HOLDER = """
import sys, time
from mcts_cot.store import RunDir
run = RunDir(sys.argv[1], "h")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_while_the_first_lives_and_not_after_it_is_killed(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(UserError, match=r"trees\.jsonl.*another search"):
            RunDir(out, "h")
        with pytest.raises(UserError, match="another search"):
            _search(out, tiny_model_dir)
        assert not (out / "trees.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _search(out, tiny_model_dir)  # the killed holder's lock is gone with its process
    ids = _ids(out / "trees.jsonl")
    assert len(ids) == len(set(ids)) == 6


def test_distinct_shards_share_a_dir_and_a_run_dir_releases_its_lock(tmp_path):
    with RunDir(tmp_path, "h", shard=(0, 2)), RunDir(tmp_path, "h", shard=(1, 2)):
        with pytest.raises(UserError, match="another search"):
            RunDir(tmp_path, "h", shard=(1, 2))
        with pytest.raises(UserError, match="another search"):
            RunDir(tmp_path, "h", shard=(0, 2), overwrite=True)  # would delete a live shard's trees
    with RunDir(tmp_path, "h", shard=(1, 2)):
        pass


# --------------------------------------------------------------------------------------------- corrupt lines


def test_a_corrupt_line_is_skipped_with_its_file_and_line_and_regrown_on_resume(tmp_path, tiny_model_dir, caplog):
    from mcts_cot.export import ExportConfig, build
    from mcts_cot.inspect_run import summary_table
    from mcts_cot.run import summarize

    out = tmp_path / "run"
    _search(out, tiny_model_dir)
    path = out / "trees.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lost = json.loads(lines[2])["problem"]["id"]
    path.write_bytes(b"".join(lines[:2] + [b'{"problem": {"id": \xff garbage\n'] + lines[3:]))
    with caplog.at_level(logging.WARNING):
        assert summarize(out)["trees"] == 5
        summary_table(out)
        build(load_config(ExportConfig, None, None), [out])
    assert f"{path}: line 3" in caplog.text
    _search(out, tiny_model_dir)  # the resumed search grows the lost problem again
    trees = {t.problem["id"] for t in iter_trees(out)}
    assert len(trees) == 6 and lost in trees


# --------------------------------------------------------------------------------------------- global limits


def test_a_run_stopped_by_a_global_limit_resumes_to_the_uninterrupted_trees(tmp_path, tiny_model_dir, tree_records):
    from mcts_cot.export import ExportConfig, build

    whole = _search(tmp_path / "whole", tiny_model_dir)
    out = tmp_path / "cut"
    first = _search(out, tiny_model_dir, f"budget.max_total_tokens={whole['generated_tokens'] * 2 // 3}")
    unfinished = {t.problem["id"] for t in iter_trees(out) if t.status == "stopped"}
    finished = len(list(iter_trees(out))) - len(unfinished)
    assert first["status"] == "stopped" and unfinished and finished
    assert (first["problems"]["finished_now"], first["problems"]["stopped_now"]) == (finished, len(unfinished))
    report = build(load_config(ExportConfig, None, ["val_fraction=0"]), [out]).report
    assert report["trees"] == {"finished": finished, "unfinished_skipped": len(unfinished)}
    assert not unfinished & set(report["per_problem"])
    second = _search(out, tiny_model_dir)  # grows the stopped trees again, from their roots
    assert second["status"] == "complete"
    assert (second["problems"]["finished_before"], second["problems"]["finished_now"]) == (finished, 6 - finished)
    assert tree_records(out) == tree_records(tmp_path / "whole")
    assert all(t.status != "stopped" for t in iter_trees(out))


# --------------------------------------------------------------------------------------------- disk full


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_fails_in_one_line_keeps_what_was_written_and_resumes(tmp_path, tiny_model_dir):
    whole, out = tmp_path / "whole", tmp_path / "run"
    _search(whole, tiny_model_dir)
    size = (whole / "trees.jsonl").stat().st_size
    cmd = [sys.executable, "cli.py", "search", "--out", str(out), *(a for s in SETS for a in ("--set", s)),
           "--model", str(tiny_model_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, preexec_fn=_file_size_limit(size // 2), timeout=300,
                          env={**os.environ, "COLUMNS": "300"})
    err = proc.stderr.decode()
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "trees.jsonl" in error_lines[0] and "resume" in error_lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]
    raw = (out / "trees.jsonl").read_bytes()
    kept = _ids(out / "trees.jsonl")
    assert raw.endswith(b"\n") and len(raw.splitlines()) == len(kept) >= 1  # no torn tail
    _search(out, tiny_model_dir)
    ids = _ids(out / "trees.jsonl")
    assert ids[: len(kept)] == kept and len(ids) == len(set(ids)) == 6
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


# --------------------------------------------------------------------------------------------- shards


def test_each_shard_keeps_its_own_manifest(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    for i in range(2):
        _search(out, tiny_model_dir, shard=(i, 2))
    assert not (out / "manifest.json").exists()
    for i in range(2):
        manifest = json.loads((out / f"manifest-{i}-of-2.json").read_text())
        assert manifest["shard"] == [i, 2] and manifest["problems"]["finished_now"] == 3
    with pytest.raises(UserError, match="different config"):
        _search(out, tiny_model_dir, "policy.children=3", shard=(0, 2))


# --------------------------------------------------------------------------------------------- out dirs


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def test_export_pairs_keeps_an_earlier_data_dir_unless_overwrite(tmp_path, tiny_model_dir):
    runs, data = tmp_path / "run", tmp_path / "data"
    _search(runs, tiny_model_dir)
    assert _invoke("export-pairs", str(runs), "--out", str(data)).exit_code == 0
    before = (data / "manifest.json").read_bytes()
    result = _invoke("export-pairs", str(runs), "--out", str(data), "--set", "val_fraction=0.5")
    assert result.exit_code == 2 and "--overwrite" in result.output and str(data) in result.output
    assert (data / "manifest.json").read_bytes() == before
    result = _invoke("export-pairs", str(runs), "--out", str(data), "--set", "val_fraction=0.5", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "val_fraction: 0.5" in (data / "config.yaml").read_text()


def test_eval_keeps_an_earlier_eval_dir_unless_overwrite(tmp_path, tiny_model_dir):
    out = tmp_path / "eval"
    args = ["eval", "--backend", "scripted", "--model", str(tiny_model_dir), "--problems", "builtin:arithmetic:2",
            "--out", str(out), "--set", "verify.workers=1"]
    assert _invoke(*args).exit_code == 0
    before = (out / "summary.json").read_bytes()
    result = _invoke(*args, "--n", "2", "--temperature", "0.5")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "summary.json").read_bytes() == before
    result = _invoke(*args, "--n", "2", "--temperature", "0.5", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["n"] == 2


def test_train_keeps_an_earlier_model_dir_unless_overwrite(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "metrics.json").write_text("{}")  # what an earlier `train` leaves
    result = _invoke("train", "--data", str(tmp_path / "no-data"), "--out", str(model))
    assert result.exit_code == 2 and "--overwrite" in result.output and str(model) in result.output
    result = _invoke("train", "--data", str(tmp_path / "no-data"), "--out", str(model), "--overwrite")
    assert result.exit_code == 2 and "--overwrite" not in result.output  # past the guard, on to the data
    assert (model / "metrics.json").exists()  # an overwrite that fails before training leaves the old model


# --------------------------------------------------------------------------------------------- dry run


def test_dry_run_honours_out_and_leaves_no_temp_dir(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    args = ["search", "--dry-run", "--model", str(tiny_model_dir), *(a for s in SETS for a in ("--set", s))]
    result = _invoke(*args, "--out", str(tmp_path / "dry"))
    assert result.exit_code == 0, result.output
    assert len(_ids(tmp_path / "dry" / "trees.jsonl")) == 6
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and list((tmp_path / "tmp").iterdir()) == []


def test_train_overwrite_replaces_the_earlier_runs_checkpoints(tmp_path, tiny_model_dir, one_thread):
    from trainers import synthetic
    from trainers.config import TrainConfig
    from trainers.trainer import run

    data = synthetic.write_data_dir(tmp_path / "data", str(tiny_model_dir), (0, 256), pairs=8)
    out = tmp_path / "model"
    (out / "checkpoints" / "checkpoint-99").mkdir(parents=True)  # an earlier, longer run's last checkpoint
    (out / "metrics.json").write_text("{}")
    cfg = load_config(TrainConfig, overrides=[f"data={data}", "max_steps=2", "save_steps=1", "logging_steps=1",
                                              "per_device_train_batch_size=4", "reference=none", "objective=sft"])
    with pytest.raises(UserError, match="--overwrite"):
        run(cfg, out)
    run(cfg, out, overwrite=True)
    names = {p.name for p in (out / "checkpoints").iterdir()}
    assert "checkpoint-2" in names and "checkpoint-99" not in names  # resume=true would have picked 99
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2


def test_training_data_readers_skip_a_corrupt_line_and_name_the_true_line_after_it(tmp_path, tiny_model_dir, caplog):
    from trainers import synthetic
    from trainers.data import load_pairs

    data = synthetic.write_data_dir(tmp_path / "data", str(tiny_model_dir), (0, 256), pairs=3)
    path = data / "pairs.jsonl"
    rows = path.read_bytes().splitlines(keepends=True)
    assert len(load_pairs(path, 0, True, 512, 0.1)[0]) == 3
    path.write_bytes(rows[0] + b"{not json\n" + rows[1] + rows[2])
    with caplog.at_level(logging.WARNING):
        assert len(load_pairs(path, 0, True, 512, 0.1)[0]) == 3
    assert f"{path}: line 2" in caplog.text
    bad = json.loads(rows[2])
    del bad["chosen_ids"]
    path.write_bytes(rows[0] + b"{not json\n" + rows[1] + json.dumps(bad).encode() + b"\n")
    with pytest.raises(UserError, match=rf"{path}:4\b"):
        load_pairs(path, 0, True, 512, 0.1)
