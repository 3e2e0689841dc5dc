"""TRL's DPOTrainer and SFTTrainer, fed by trainers/trl_tokens.py from the Hub-ready data dir, train on exactly
the token ids and endings our own trainer builds (trainers/data.py): same sequences, same scored positions."""

from __future__ import annotations

import pytest
import torch
from datasets import load_dataset
from test_export import cfg, run_dir, tree_a, tree_sft

from mcts_cot.export import build, write
from mcts_cot.tiny import byte_tokenizer, tiny_llama
from trainers.data import end_of_turn_id, load_pairs, load_sft
from trainers.trl_tokens import TokenDPOTrainer, dpo_dataset, sft_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
TOK = byte_tokenizer()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trl")
    runs = run_dir(tmp / "run", [tree_a(f"p{i}") for i in range(3)] + [tree_sft("s")])
    c = cfg("strategies=[path, step, length]", "length.min_ratio=1", "val_fraction=0",
            "sft.select=[shortest, medium, longest]")
    write(build(c, [runs]), c, tmp / "data")
    return tmp / "data"


def _rows(batch: dict, key: str) -> list[list[int]]:
    """Each row's kept tokens (attention mask), or the positions of its scored tokens (completion mask)."""
    mask = batch["attention_mask"].bool()
    if key == "positions":
        return [torch.nonzero(m[a]).flatten().tolist() for m, a in zip(batch["completion_mask"], mask, strict=True)]
    return [ids[a].tolist() for ids, a in zip(batch[key], mask, strict=True)]


def test_dpo_trains_on_our_ids_and_endings(data_dir, tmp_path):
    from trl import DPOConfig

    pairs = load_dataset(str(data_dir), "pairs", split="train", cache_dir=str(tmp_path / "hf"))
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=1, bf16=False,
                     report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, max_length=None)
    trainer = TokenDPOTrainer(model=tiny_llama(TOK), ref_model=tiny_llama(TOK), args=args,
                              train_dataset=dpo_dataset(pairs, TOK), processing_class=TOK)
    batch = trainer.data_collator(list(trainer.train_dataset))
    ours, _ = load_pairs(data_dir / "pairs.jsonl", end_of_turn_id(TOK), masking=True, max_length=10**6, epsilon=0.1)
    n = len(ours)
    assert n == len(pairs) > 10 and {r["chosen_end"] for r in pairs} >= {"answer", "step"}
    expected = [ex["shared"] + ex["chosen"] for ex in ours] + [ex["shared"] + ex["rejected"] for ex in ours]
    assert _rows(batch, "input_ids") == expected
    scored = [ex["chosen"] for ex in ours] + [ex["rejected"] for ex in ours]
    assert _rows(batch, "positions") == [list(range(len(s) - len(r), len(s))) for s, r in zip(expected, scored, strict=True)]
    assert trainer.train().global_step == 1


def test_sft_trains_on_our_ids_and_endings(data_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    sft = load_dataset(str(data_dir), "sft", split="train", cache_dir=str(tmp_path / "hf"))
    args = SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=2, max_steps=1, bf16=False,
                     report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, max_length=None)
    trainer = SFTTrainer(model=tiny_llama(TOK), args=args, train_dataset=sft_dataset(sft, TOK), processing_class=TOK)
    batch = trainer.data_collator(list(trainer.train_dataset))
    ours, _ = load_sft(data_dir / "sft.jsonl", end_of_turn_id(TOK), max_length=10**6)
    assert len(ours) == len(sft) > 3
    assert _rows(batch, "input_ids") == [ex["shared"] + ex["chosen"] for ex in ours]
    assert _rows(batch, "labels") == [[-100] * len(ex["shared"]) + ex["chosen"] for ex in ours]
    assert trainer.train().global_step == 1


def test_masking_off_scores_the_shared_prefix_in_both_sides(data_dir, tmp_path):
    pairs = load_dataset(str(data_dir), "pairs", split="train", cache_dir=str(tmp_path / "hf"))
    i = next(i for i, r in enumerate(pairs) if r["prefix_ids"])
    row = pairs[i]
    on, off = (dpo_dataset(pairs.select([i]), TOK, masking=m)[0] for m in (True, False))
    assert on["prompt_ids"] == off["prompt_ids"] + row["prefix_ids"]
    assert off["chosen_ids"][:len(row["prefix_ids"])] == row["prefix_ids"] == off["rejected_ids"][:len(row["prefix_ids"])]
