"""TRL on a real data dir: how many pairs TRL's text route (DPOTrainer tokenising `prompt` / `chosen` /
`rejected`) trains on the exported token ids, against trainers/trl_tokens.py (TokenDPOTrainer on `dpo_dataset`).

    python bench/trl_ids.py DATA_DIR [--model smollm2-135m]

A pair counts as exact when TRL's `prompt_ids + chosen_ids` and `prompt_ids + rejected_ids` equal ours (prompt
+ shared prefix + suffix + end-of-turn where the model ended its turn) and its prompt / completion seam is at
the same place. Light: the tokenizer and a 2-layer random model (TRL needs one to build the trainer).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import command, machine, write_result  # noqa: E402


def trl_datasets(data_dir: str, model: str):
    from datasets import load_dataset
    from trl import DPOConfig

    from mcts_cot.models import load_tokenizer
    from mcts_cot.tiny import tiny_llama
    from trainers.trl_tokens import TokenDPOTrainer, dpo_dataset

    tok = load_tokenizer(model)
    pairs = load_dataset(data_dir, "pairs", split="train")
    text = pairs.select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir="/tmp/trl-ids", use_cpu=True, report_to=[], max_length=None, disable_tqdm=True)
    built = {}
    for name, ds in (("text", text), ("tokens", dpo_dataset(pairs, tok))):
        trainer = TokenDPOTrainer(model=tiny_llama(tok), ref_model=tiny_llama(tok), args=args, train_dataset=ds,
                                  processing_class=tok)
        built[name] = trainer.train_dataset
    return tok, pairs, dpo_dataset(pairs, tok), built


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--model", default="smollm2-135m")
    a = ap.parse_args()
    tok, pairs, ours, built = trl_datasets(a.data_dir, a.model)
    result = {}
    for name, theirs in built.items():
        counts = Counter()
        for row, want, got in zip(pairs, ours, theirs, strict=True):
            strategy = row["strategy"]
            counts[f"{strategy}: pairs"] += 1
            same = all(got["prompt_ids"] + got[s] == want["prompt_ids"] + want[s] for s in ("chosen_ids", "rejected_ids"))
            counts[f"{strategy}: same ids"] += same
            counts[f"{strategy}: same ids and seam"] += same and got["prompt_ids"] == want["prompt_ids"]
            partial = [s for s in ("chosen", "rejected") if row[f"{s}_end"] not in ("answer", "eos")]
            counts[f"{strategy}: partial sides"] += len(partial)
            counts[f"{strategy}: partial sides ending in EOS"] += sum(
                got[f"{s}_ids"][-1:] == [tok.eos_token_id] for s in partial)
        result[name] = dict(sorted(counts.items()))
        print(name, json.dumps(result[name], indent=1))
    write_result("trl_ids", {"data_dir": a.data_dir, "model": a.model, "results": result, "machine": machine(),
                             "command": command()})


if __name__ == "__main__":
    main()
