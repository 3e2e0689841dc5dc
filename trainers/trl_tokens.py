"""TRL's DPOTrainer and SFTTrainer on the exported token ids, with our endings (docs/TRL.md).

TRL re-tokenises the text columns: token boundaries at the prompt / response seam drift from the ones the model
generated ("\\n\\n" one token against two), and it appends EOS to every side, partial steps included. These
functions turn the `pairs` and `sft` rows into TRL's own pre-tokenised columns, built by the same rules as our
trainer (trainers/data.py): prompt + shared prefix is context, a side gets the end-of-turn token only where the
model ended its turn. `SFTTrainer` takes `input_ids` / `labels` as they are; `DPOTrainer` always tokenises, so
`TokenDPOTrainer` is the smallest subclass that passes a tokenised dataset through.
"""

from __future__ import annotations

from datasets import Dataset
from trl import DPOTrainer
from trl.data_utils import get_dataset_column_names

from mcts_cot.rows import ends_turn
from trainers.data import end_of_turn_id


def dpo_dataset(pairs: Dataset, tokenizer, eot_token: str = "auto", masking: bool = True) -> Dataset:
    """`pairs` rows → TRL's `prompt_ids` / `chosen_ids` / `rejected_ids`. Masking on (our default): prompt and
    shared prefix are the prompt; off: the prefix is scored in both completions, as response-level DPO."""
    eot = end_of_turn_id(tokenizer, eot_token)

    def convert(row: dict) -> dict:
        prompt, prefix = row["prompt_ids"], row["prefix_ids"]
        context, shared = (prompt + prefix, []) if masking else (prompt, prefix)
        return {"prompt_ids": context,
                "chosen_ids": shared + row["chosen_ids"] + ([eot] if ends_turn(row, "chosen") else []),
                "rejected_ids": shared + row["rejected_ids"] + ([eot] if ends_turn(row, "rejected") else [])}

    return pairs.map(convert, remove_columns=pairs.column_names)


def sft_dataset(sft: Dataset, tokenizer, eot_token: str = "auto") -> Dataset:
    """`sft` rows → `input_ids` and `labels` (-100 on the prompt), which SFTTrainer trains on as they are."""
    eot = end_of_turn_id(tokenizer, eot_token)

    def convert(row: dict) -> dict:
        completion = row["completion_ids"] + ([eot] if row["complete"] else [])
        return {"input_ids": row["prompt_ids"] + completion,
                "labels": [-100] * len(row["prompt_ids"]) + completion}

    return sft.map(convert, remove_columns=sft.column_names)


class TokenDPOTrainer(DPOTrainer):
    """DPOTrainer that trains on a dataset already holding `prompt_ids` / `chosen_ids` / `rejected_ids` (as
    `dpo_dataset` makes) instead of tokenising `prompt` / `chosen` / `rejected`; text datasets go the usual way."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in get_dataset_column_names(dataset):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
