"""The data dir as a Hugging Face dataset: parquet beside the JSONL, a dataset card, and the push to the Hub.

`load_dataset(DATA_DIR, NAME)` reads the card's YAML header (`configs:` names each config's parquet files per
split; a split or config without rows is left out, as `datasets` cannot read an empty parquet file), so the SFT rows, the pairs, their chat-message forms and the trees (one row per node) load as separate
configs from one folder; without a card `datasets` would merge every JSONL file there into one table. The
parquet files carry the types of `columns.py`, so a column is typed the same whatever the strategies made.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mcts_cot import columns
from mcts_cot.config import to_dict
from mcts_cot.errors import UserError
from mcts_cot.io import write_atomic
from mcts_cot.versions import package_versions

if TYPE_CHECKING:
    from mcts_cot.export import Export, ExportConfig

SPLITS = {"train": "", "validation": "_val"}  # split → file suffix, as the JSONL files are named
# What `push` uploads besides the parquet files: the export's own outputs, never a trainer's cache in the dir.
EXTRA_FILES = ("sft.jsonl", "sft_val.jsonl", "pairs.jsonl", "pairs_val.jsonl", "report.json", "manifest.json",
               "config.yaml", "lengths.png")


def parquet_name(config: str, split: str) -> str:
    return f"{config}{SPLITS[split]}.parquet"


def tables(result: Export) -> dict[str, list[dict[str, Any]]]:
    """Every config's rows (both splits, each row says its own): the export's rows, their chat forms, and
    the tree nodes when the export kept them."""
    out = {"sft": result.sft, "pairs": result.pairs,
           "sft_chat": [_sft_chat(r, result.prompts) for r in result.sft],
           "pairs_chat": [_pair_chat(r, result.prompts) for r in result.pairs]}
    if result.nodes is not None:
        out["nodes"] = result.nodes
    return out


def _sft_chat(row: dict, prompts: dict[str, tuple[list, str]]) -> dict[str, Any]:
    return {"problem_id": row["problem_id"], "prompt": prompts[str(row["problem_id"])][0],
            "completion": [{"role": "assistant", "content": row["completion"]}], "split": row["split"]}


def _pair_chat(row: dict, prompts: dict[str, tuple[list, str]]) -> dict[str, Any]:
    """The shared prefix opens both assistant messages: in a chat the prompt ends where the turn opens, and
    a pair's text `prompt` is the rendered chat prompt followed by the prefix."""
    messages, rendered = prompts[str(row["problem_id"])]
    prefix = row["prompt"][len(rendered):]
    return {"problem_id": row["problem_id"], "strategy": row["strategy"], "prompt": messages,
            "chosen": [{"role": "assistant", "content": prefix + row["chosen"]}],
            "rejected": [{"role": "assistant", "content": prefix + row["rejected"]}],
            "chosen_end": row["chosen_end"], "rejected_end": row["rejected_end"], "split": row["split"]}


def write_dataset(result: Export, cfg: ExportConfig, out: Path) -> dict[str, dict[str, int]]:
    """Parquet files of every config and split, and the card; returns the row counts per config and split."""
    import pyarrow.parquet as pq

    counts = {}
    for config, rows in tables(result).items():
        feats = columns.features(config)
        counts[config] = {}
        for split in SPLITS:
            part = columns.conform(config, [r for r in rows if r["split"] == split], f"{config}/{split}")
            path = out / parquet_name(config, split)
            path.unlink(missing_ok=True)  # an earlier export's file must not outlive its split
            if part:  # `datasets` cannot read a parquet file without rows: an empty split is left out
                buf = io.BytesIO()
                pq.write_table(_arrow(part, feats), buf)
                write_atomic(path, buf.getvalue())
                counts[config][split] = len(part)
    counts = {config: n for config, n in counts.items() if n}
    write_atomic(out / "README.md", card(result, cfg, counts))
    return counts


def _arrow(rows: list[dict], feats):
    """A pyarrow table with the features' schema (which carries them as metadata, so `datasets` reads them)."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=feats.arrow_schema)


# --------------------------------------------------------------------------------------------- card


def card(result: Export, cfg: ExportConfig, counts: dict[str, dict[str, int]]) -> str:
    """The dataset card: the YAML header the Hub and `load_dataset` read, then what each config and column is,
    the counts, and the configs and package versions that made the data."""
    header = {"license": cfg.license, "pretty_name": "mcts-cot reasoning-tree data",
              "task_categories": ["text-generation"], "tags": ["mcts", "dpo", "sft", "reasoning", "math", "trl"],
              "configs": [_config_entry(c, counts[c]) for c in counts], "dataset_info": [_info(c) for c in counts]}
    parts = [f"---\n{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---\n", _INTRO]
    parts.append(_counts_table(counts))
    for config in counts:
        parts.append(_columns_table(config))
    parts.append(_provenance(result, cfg))
    return "\n".join(parts)


def _config_entry(config: str, counts: dict[str, int]) -> dict[str, Any]:
    files = [{"split": s, "path": parquet_name(config, s)} for s in counts]
    return {"config_name": config, "data_files": files, **({"default": True} if config == "pairs" else {})}


def _info(config: str) -> dict[str, Any]:
    """The config's features (row counts are in the card's text: the header's `splits` also wants byte sizes)."""
    return {"config_name": config, "features": columns.features(config)._to_yaml_list()}


_INTRO = """# mcts-cot reasoning-tree data

Written by `mcts-cot export-pairs` from verified Monte Carlo tree search over reasoning steps: a model grew one
tree of steps per problem, every final answer was checked against the ground truth, and the rewards were backed
up the tree. Each config is one table with a train and a validation split (split by problem, never by row):

- `sft`: correct paths (Thoughts Length Balance), prompt-completion format, text and token ids.
- `pairs`: preference pairs (path, step, length strategies); the shared reasoning prefix is kept apart from the
  two divergent suffixes as token ids, and `prompt` / `chosen` / `rejected` hold the same as text.
- `sft_chat`, `pairs_chat`: the same rows in TRL's conversational format (lists of chat messages).
- `nodes` (when exported with `nodes: true`): every node of every tree, one row each.

```python
from datasets import load_dataset
pairs = load_dataset("DATA_DIR_OR_REPO_ID", "pairs")  # DatasetDict with train and validation
```

Token ids are the model's own (no re-tokenising): a side that ends the model's turn (`*_end` answer or eos,
SFT `complete`) takes the chat template's end-of-turn token when trained; a partial step or a path cut by a limit
takes none. The `*_chat` configs are text: TRL renders them through the chat template, which closes every
assistant message, partial steps included. `mcts-cot`'s docs/TRL.md shows how TRL trains on the exact ids.
"""


def _counts_table(counts: dict[str, dict[str, int]]) -> str:
    lines = ["## Rows\n", "| config | train | validation |", "|---|---:|---:|"]
    lines += [f"| {c} | {n.get('train', 0)} | {n.get('validation', 0)} |" for c, n in counts.items()]
    return "\n".join(lines) + "\n"


def _columns_table(config: str) -> str:
    lines = [f"## Columns of `{config}`\n", "| column | type | meaning |", "|---|---|---|"]
    for name, (kind, text) in columns.CONFIGS[config].items():
        kind = {columns.IDS: "list of int64", columns.MESSAGES: "list of {role, content}"}.get(kind, kind)
        lines.append(f"| `{name}` | {kind} | {text} |")
    return "\n".join(lines) + "\n"


def _provenance(result: Export, cfg: ExportConfig) -> str:
    parts = ["## How it was made\n", f"Exported {time.strftime('%Y-%m-%d')}. Package versions:\n",
             _yaml_block(package_versions()), "Export config:\n", _yaml_block(to_dict(cfg))]
    for src in result.sources:
        parts += [f"Search config of `{Path(src.run_dir).name}` ({src.trees} trees, model `{src.model}`):\n",
                  _yaml_block(_run_config(src.run_dir))]
    return "\n".join(parts)


def _run_config(run_dir: str) -> Any:
    path = Path(run_dir) / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _yaml_block(obj: Any) -> str:
    return f"```yaml\n{yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)}```\n"


# --------------------------------------------------------------------------------------------- push


def upload_files(data_dir: str | Path) -> list[str]:
    """The files `push` uploads: the card, every parquet file the card names, and the export's own outputs."""
    data_dir = Path(data_dir)
    readme = data_dir / "README.md"
    if not readme.is_file():
        raise UserError(f"{data_dir}: no README.md dataset card; write the data dir with `mcts-cot export-pairs`")
    header = yaml.safe_load(readme.read_text().split("---\n")[1])
    named = [f["path"] for c in header["configs"] for f in c["data_files"]]
    missing = [name for name in named if not (data_dir / name).is_file()]
    if missing:
        raise UserError(f"{readme}: names files the folder lacks: {', '.join(missing)}")
    return ["README.md", *named, *(name for name in EXTRA_FILES if (data_dir / name).is_file())]


def push(data_dir: str | Path, repo_id: str, api, private: bool = False) -> list[str]:
    """Create the dataset repo if needed and upload the files of `upload_files` in one commit; returns them.
    `api` is a `huggingface_hub.HfApi` (its token: `hf auth login` or HF_TOKEN)."""
    from huggingface_hub import CommitOperationAdd

    files = upload_files(data_dir)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(data_dir) / name)) for name in files]
    api.create_commit(repo_id, operations=ops, repo_type="dataset",
                      commit_message=f"mcts-cot export-pairs data ({len(files)} files)")
    return files
