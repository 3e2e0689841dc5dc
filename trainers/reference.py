"""Reference log-probs, computed once per (model, data file, layout) and cached in the data dir.

DPO needs log π_ref of both responses of every pair. They never change during training, so one pass of the
frozen model before training, saved to disk, lets the run hold ONE model in memory and skip the reference
forward at every step (TRL can precompute them too, but only in memory and per run, trl#3985).

The cache file name carries a hash of everything its values depend on: the model's identity (config.json
and the size plus first and last 4 MiB of each weight file, so a re-trained model in the same folder is a
miss without hashing gigabytes), the data file's bytes, and the settings that change which tokens are scored
(masking, max_length, the end-of-turn token) or their values (weight dtype, autocast, attention kernel:
`numerics`). A second run with the same inputs is a hit; anything else computes a new file beside the old one.

The values are computed under the same autocast as the training forward of the policy (the trainer passes
its accelerator's), so with dropout off and identical batches the step-0 margins are exactly 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import torch

from mcts_cot.io import write_json

LAYOUT_VERSION = 1  # bump when the scored tokens of a pair change meaning
_EDGE = 4 << 20


def _file_digest(path: Path, h: hashlib._Hash, edges_only: bool) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as fh:
        if not edges_only or size <= 2 * _EDGE:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return
        h.update(fh.read(_EDGE))
        fh.seek(size - _EDGE)
        h.update(fh.read(_EDGE))


def model_identity(model_path: str) -> str:
    """A hash of a model folder's config and weights (or the name, for a hub id not on disk)."""
    h = hashlib.sha256()
    path = Path(model_path)
    if not path.is_dir():
        h.update(model_path.encode())
        return h.hexdigest()
    for f in sorted(path.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".gguf"):
            _file_digest(f, h, edges_only=f.name != "config.json")
    return h.hexdigest()


def numerics(model, autocast_bf16: bool, attn_implementation: str) -> dict[str, Any]:
    """The cache-key part that sets the values' rounding: weight dtype, autocast and attention kernel."""
    dtype = next(model.parameters()).dtype
    return {"dtype": str(dtype).removeprefix("torch."), "autocast": "bfloat16" if autocast_bf16 else None,
            "attn_implementation": attn_implementation}


def cache_path(data_file: str | Path, model_path: str, settings: dict[str, Any]) -> Path:
    """Where the reference log-probs of `data_file` under `model_path` and `settings` live."""
    data_file = Path(data_file)
    h = hashlib.sha256()
    h.update(model_identity(model_path).encode())
    _file_digest(data_file, h, edges_only=False)
    h.update(orjson.dumps({**settings, "layout": LAYOUT_VERSION}, option=orjson.OPT_SORT_KEYS))
    return data_file.parent / "ref_logps" / f"{data_file.stem}-{h.hexdigest()[:16]}.json"


@torch.no_grad()
def compute(model, examples: list[dict[str, Any]], collator, batch_size: int, forward) -> list[tuple[float, float]]:
    """(chosen, rejected) summed reference log-probs per example, in order. `forward(model, batch)` returns
    per-token log-probs (the trainer's own, so the scored tokens are exactly the training ones)."""
    from trainers.losses import sequence_logps

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, float]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(chunk).items()}
        logps = sequence_logps(forward(model, batch), batch["chosen_mask"], batch["rejected_mask"], len(chunk))
        out += list(zip(logps.chosen.double().tolist(), logps.rejected.double().tolist(), strict=True))
    model.train(was_training)
    return out


def attach(examples: list[dict[str, Any]], path: Path, compute_fn) -> bool:
    """Put `ref_chosen_logps` / `ref_rejected_logps` on every example, from `path` or by computing and
    saving it. Returns True on a cache hit."""
    hit = path.is_file()
    if hit:
        saved = orjson.loads(path.read_bytes())
        table = dict(zip(saved["index"], zip(saved["chosen"], saved["rejected"], strict=True), strict=True))
        hit = all(ex["index"] in table for ex in examples)
    if not hit:
        values = compute_fn(examples)
        table = {ex["index"]: v for ex, v in zip(examples, values, strict=True)}
        write_json(path, {"index": list(table), "chosen": [v[0] for v in table.values()],
                          "rejected": [v[1] for v in table.values()]})
    for ex in examples:
        ex["ref_chosen_logps"], ex["ref_rejected_logps"] = table[ex["index"]]
    return hit
