"""CLI basics for scripting and logs: --version, --quiet, one JSON summary line on stdout, plain progress lines
when the output is not a terminal, help that shows the config defaults, push --dry-run, TrainingArguments
aliases in train configs."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from rich.console import Console
from test_export import cfg, run_dir, tree_a
from typer.testing import CliRunner

from cli import app
from mcts_cot.config import BackendConfig, ModelConfig, load_config
from mcts_cot.errors import UserError
from mcts_cot.export import build, write
from mcts_cot.progress import LineProgress, progress_bar
from trainers.config import TrainConfig


def invoke(*args):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("mcts-cot 0.")


def test_quiet_export_prints_only_one_json_line(tmp_path):
    runs = run_dir(tmp_path / "run", [tree_a(f"p{i}") for i in range(4)])
    loud = invoke("export-pairs", str(runs), "--out", str(tmp_path / "a"))
    quiet = invoke("--quiet", "export-pairs", str(runs), "--out", str(tmp_path / "b"))
    assert loud.exit_code == quiet.exit_code == 0, loud.output
    assert "export-pairs" in loud.stderr and quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert len(lines) == 1 and json.loads(loud.stdout)["command"] == "export-pairs"
    summary = json.loads(lines[0])
    assert summary["command"] == "export-pairs" and summary["out"] == str(tmp_path / "b")
    assert summary["rows"]["pairs"] + summary["rows"]["pairs_val"] == 4


def test_push_dry_run_lists_the_upload(tmp_path):
    runs = run_dir(tmp_path / "run", [tree_a("p0")])
    c = cfg("val_fraction=0")
    write(build(c, [runs]), c, tmp_path / "data")
    result = invoke("push", str(tmp_path / "data"), "me/data", "--dry-run")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"][0] == "README.md" and "pairs.parquet" in summary["files"] and summary["dry_run"]
    assert invoke("push", str(tmp_path / "run"), "me/data", "--dry-run").exit_code == 2


def test_progress_prints_plain_lines_off_a_terminal(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    monkeypatch.setenv("MCTS_COT_PROGRESS_EVERY", "0")  # what --progress-every 0 sets
    bar = progress_bar(console)
    assert isinstance(bar, LineProgress) and bar.every_s == 0.0
    with bar:
        task = bar.add_task("search", total=3)
        bar.update(task, completed=1, info="12 tok/s")
        bar.advance(task)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("search: 1/3 in ") and lines[0].endswith(" · 12 tok/s")
    assert lines[-1].startswith("search: 2/3 in ") and len(lines) == 2  # no closing copy of the last line


def test_progress_line_is_not_wrapped():
    out = io.StringIO()
    with LineProgress(Console(file=out, force_terminal=False, width=40), every_s=3600) as bar:
        bar.update(bar.add_task("search", total=12), completed=2, info="wave 11 · 12 live · 85 tok/s · cache 94%")
    assert len(out.getvalue().splitlines()) == 1


def test_help_shows_the_config_defaults():
    text = invoke("search", "--help").stdout
    assert f"model.name: {ModelConfig().name}" in text and f"backend.name: {BackendConfig().name}" in text


def test_trainingarguments_names_are_aliases(tmp_path):
    path = tmp_path / "trl.yaml"
    path.write_text(yaml.safe_dump({"num_train_epochs": 3, "model_name_or_path": "tiny", "learning_rate": 1e-5}))
    c = load_config(TrainConfig, path)
    assert (c.epochs, c.model.name, c.learning_rate) == (3.0, "tiny", 1e-5)
    assert load_config(TrainConfig, None, ["num_train_epochs=2"]).epochs == 2.0
    path.write_text(yaml.safe_dump({"num_train_epochs": 3, "epochs": 2}))
    with pytest.raises(UserError, match=r"trl.yaml: 'num_train_epochs' and 'epochs' name the same key"):
        load_config(TrainConfig, path)
