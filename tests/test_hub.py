"""The data dir as a Hugging Face dataset: named configs with splits from one folder, column types that do not
depend on the strategies, a card that documents every column, normal file modes, and what `push` uploads."""

from __future__ import annotations

import stat

import pytest
import yaml
from datasets import load_dataset
from test_export import ANSWER5, cfg, make_tree, run_dir, tree_a, tree_sft

from mcts_cot import columns
from mcts_cot.errors import UserError
from mcts_cot.export import build, write
from mcts_cot.hub import push, upload_files


def export(tmp_path, *overrides, name="data", overwrite=False):
    runs = tmp_path / "run"
    if not runs.exists():
        run_dir(runs, [tree_a(f"p{i}") for i in range(6)] + [tree_sft("s")])
    c = cfg(*overrides)
    write(build(c, [runs]), c, tmp_path / name, overwrite=overwrite)
    return tmp_path / name


def test_every_config_loads_by_name_with_splits(tmp_path):
    data = export(tmp_path, "strategies=[path, step]", "val_fraction=0.3", "nodes=true")
    hf = str(tmp_path / "hf")
    for config in columns.CONFIGS:
        ds = load_dataset(str(data), config, cache_dir=hf)
        assert set(ds) == {"train", "validation"} and list(ds["train"].features) == list(columns.CONFIGS[config])
        assert set(ds["validation"]["split"]) == {"validation"}
    assert load_dataset(str(data), cache_dir=hf)["train"].num_rows == len((data / "pairs.jsonl").read_text().splitlines())
    nodes = load_dataset(str(data), "nodes", split="train", cache_dir=hf)
    train_ids = set(load_dataset(str(data), "sft", split="train", cache_dir=hf)["problem_id"])
    assert nodes["id"].count(0) == len(set(nodes["problem_id"])) and train_ids <= set(nodes["problem_id"])


def test_column_types_do_not_depend_on_the_strategy(tmp_path):
    """Path pairs alone have only empty shared prefixes: still a list of int64, so they mix with step pairs."""
    from datasets import concatenate_datasets

    hf = str(tmp_path / "hf")
    runs = run_dir(tmp_path / "apart", [make_tree(f"q{i}", [(ANSWER5, 1, 1, "ok", []), ("No.", 1, 0, "none", [])])
                                        for i in range(3)])
    c = cfg("val_fraction=0")
    write(build(c, [runs]), c, tmp_path / "path")
    path = load_dataset(str(tmp_path / "path"), "pairs", split="train", cache_dir=hf)
    step = load_dataset(str(export(tmp_path, "strategies=[step]", "val_fraction=0", name="step")), "pairs",
                        split="train", cache_dir=hf)
    assert not any(path["prefix_ids"]) and any(step["prefix_ids"])
    assert path.features == step.features == columns.features("pairs")
    assert concatenate_datasets([path, step]).num_rows == path.num_rows + step.num_rows


def test_card_documents_every_column_and_names_what_made_it(tmp_path):
    data = export(tmp_path, "val_fraction=0.3", "license=cc-by-4.0")
    text = (data / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "cc-by-4.0"
    assert [c["config_name"] for c in header["configs"]] == ["sft", "pairs", "sft_chat", "pairs_chat"]
    for config in header["configs"]:
        for column in columns.CONFIGS[config["config_name"]]:
            assert f"| `{column}` |" in text
    assert "## Rows" in text and "transformers:" in text and "strategies:" in text and "model:" in text


def test_empty_split_is_left_out_and_a_stale_file_removed(tmp_path):
    export(tmp_path, "val_fraction=0.3")
    data = export(tmp_path, "val_fraction=0", overwrite=True)  # the same dir, now without validation
    header = yaml.safe_load((data / "README.md").read_text().split("---\n")[1])
    assert {f["split"] for c in header["configs"] for f in c["data_files"]} == {"train"}
    assert not (data / "pairs_val.parquet").exists()


def test_outputs_have_normal_file_modes(tmp_path):
    data = export(tmp_path)
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path.name  # group and others may read


def test_unknown_column_is_refused_naming_it():
    with pytest.raises(ValueError, match="row 1 has columns the dataset card does not document: extra"):
        columns.conform("sft_chat", [{}, {"extra": 1}], "sft_chat/train")


class RecordingApi:
    """Stands in for huggingface_hub.HfApi at the boundary: records what would go to the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, [(op.path_in_repo, op.path_or_fileobj) for op in operations], kwargs))


def test_push_uploads_the_card_parquet_and_outputs_only(tmp_path):
    data = export(tmp_path, "val_fraction=0.3")
    (data / "ref_logps.pt").write_bytes(b"a trainer's cache")
    api = RecordingApi()
    files = push(data, "me/mcts-data", api, private=True)
    assert files == upload_files(data) and files[0] == "README.md" and "ref_logps.pt" not in files
    assert {"pairs.parquet", "pairs_val.parquet", "sft_chat.parquet", "pairs.jsonl", "report.json"} <= set(files)
    (create, repo, kwargs), (commit, repo2, ops, ckw) = api.calls
    assert (create, repo, kwargs) == ("create_repo", "me/mcts-data", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert commit == "create_commit" and repo2 == repo and ckw["repo_type"] == "dataset"
    assert ops == [(name, str(data / name)) for name in files]


def test_push_refuses_a_folder_without_card(tmp_path):
    with pytest.raises(UserError, match="no README.md dataset card"):
        push(tmp_path, "me/x", RecordingApi())
