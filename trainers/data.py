"""Exported rows → training examples → padded batches, from token ids only (nothing is re-tokenised).

An example is one pair (or one SFT path) reduced to four things:

- `shared`: tokens both responses are conditioned on and that are written once with prefix sharing
  (prompt + shared reasoning prefix; SFT: the prompt);
- `response_start`: where the scored response begins inside `shared`. Masking on: `len(shared)` (prompt
  and prefix are context only). Masking off: `len(prompt)`, so the shared prefix tokens count in BOTH
  log-probabilities, exactly as plain response-level DPO on the chat prompt;
- `chosen` / `rejected`: the divergent suffixes (SFT: the completion, no rejected).

End of a suffix (`rows.ends_turn`): one where the model ended its turn (a final answer, or a rejected path
that stopped without one) gets ONE token, the one that closes an assistant turn in the chat template
(`<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3; the tokenizer's EOS when the template has no such token),
because that is what the model emits to stop at inference; on a rejected side it is what DPO must learn not
to emit before an answer. Templates put no EOS after the end-of-turn token, so neither do we. A partial step,
or a path cut by a length or depth limit, gets nothing: the model was still writing, and teaching it to stop
there would teach it to answer nothing (Step-DPO removes the EOS for this reason).

Batches are LEFT-padded, so every row's scored tokens sit at the end: the model computes logits only for the
last `keep` positions (`logits_to_keep`), which with masking is a small share of the sequence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from mcts_cot.errors import UserError
from mcts_cot.io import iter_jsonl
from mcts_cot.rows import Example, PairRow, SFTRow, ends_turn, required_keys
from trainers import prefix_sharing

PAIR_FIELDS = required_keys(PairRow)
SFT_FIELDS = required_keys(SFTRow)


@dataclasses.dataclass
class DataStats:
    """What loading kept and changed, reported in metrics.json and on the console."""

    file: str
    rows: int = 0
    kept: int = 0
    truncated: int = 0  # suffixes cut from the end to fit max_length
    dropped: int = 0  # context alone fills max_length

    def describe(self) -> str:
        return (f"{self.file}: {self.kept}/{self.rows} rows kept, {self.truncated} truncated to max_length, "
                f"{self.dropped} dropped (context alone fills max_length)")


def end_of_turn_id(tokenizer, setting: str = "auto") -> int:
    """The single token appended to complete responses (see module docstring)."""
    if setting != "auto":
        tid = tokenizer.convert_tokens_to_ids(setting)
        if tid is None or tid == tokenizer.unk_token_id:
            raise UserError(f"eot_token {setting!r} is not a token of this tokenizer")
        return tid
    mark = "\u2063MARK\u2063"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": mark}],
                                             tokenize=False)
    except Exception:  # no template, or one that rejects this conversation: fall back to EOS
        text = ""
    after = text.split(mark, 1)[1] if mark in text else ""
    for tok in sorted(tokenizer.all_special_tokens, key=len, reverse=True):
        if tok and after.startswith(tok):
            return tokenizer.convert_tokens_to_ids(tok)
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no end-of-turn or EOS token to end complete responses with")
    return tokenizer.eos_token_id


def _check(row: dict, fields: tuple[str, ...], where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}; re-export with `mcts-cot export-pairs`")
    if not row["prompt_ids"]:
        raise UserError(f"{where}: empty prompt_ids")


def _fit(shared_len: int, suffixes: list[list[int]], max_length: int) -> tuple[list[list[int]] | None, bool]:
    """Cut suffixes so shared + suffix ≤ max_length; None when the context alone fills it."""
    room = max_length - shared_len
    if room <= 0:
        return None, False
    return [s[:room] for s in suffixes], any(len(s) > room for s in suffixes)


def load_pairs(path: str | Path, eot_id: int, masking: bool, max_length: int,
               epsilon: float | str) -> tuple[list[Example], DataStats]:
    """Read a pairs file into examples. `epsilon`: a float for every pair, or 'pairs' for the column."""
    stats, examples = DataStats(str(path)), []
    for i, (line_no, row) in enumerate(iter_jsonl(path)):  # line_no names the file's line past a skipped one
        where = f"{path}:{line_no}"
        _check(row, PAIR_FIELDS + (("epsilon",) if epsilon == "pairs" else ()), where)
        stats.rows += 1
        shared = row["prompt_ids"] + row["prefix_ids"]
        chosen = row["chosen_ids"] + ([eot_id] if ends_turn(row, "chosen") else [])
        rejected = row["rejected_ids"] + ([eot_id] if ends_turn(row, "rejected") else [])
        fitted, cut = _fit(len(shared), [chosen, rejected], max_length)
        if fitted is None:
            stats.dropped += 1
            continue
        stats.truncated += cut
        eps = float(row["epsilon"]) if epsilon == "pairs" else float(epsilon)
        if not 0.0 <= eps <= 0.5:
            raise UserError(f"{where}: epsilon {eps} outside [0, 0.5]")
        examples.append({
            "index": i, "shared": shared, "chosen": fitted[0], "rejected": fitted[1], "epsilon": eps,
            "response_start": len(shared) if masking else len(row["prompt_ids"]),
            "prefix_len": len(row["prefix_ids"]),
        })
    stats.kept = len(examples)
    return examples, stats


def load_sft(path: str | Path, eot_id: int, max_length: int) -> tuple[list[Example], DataStats]:
    """Read an SFT file into examples: loss on the completion tokens only."""
    stats, examples = DataStats(str(path)), []
    for i, (line_no, row) in enumerate(iter_jsonl(path)):
        _check(row, SFT_FIELDS, f"{path}:{line_no}")
        stats.rows += 1
        completion = row["completion_ids"] + ([eot_id] if row["complete"] else [])
        fitted, cut = _fit(len(row["prompt_ids"]), [completion], max_length)
        if fitted is None:
            stats.dropped += 1
            continue
        stats.truncated += cut
        examples.append({"index": i, "shared": row["prompt_ids"], "chosen": fitted[0], "rejected": None,
                         "epsilon": 0.0, "response_start": len(row["prompt_ids"]), "prefix_len": 0})
    stats.kept = len(examples)
    return examples, stats


class ListDataset(torch.utils.data.Dataset):
    """Examples held in memory (a few MB of token ids for thousands of pairs)."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


@dataclasses.dataclass
class Row:
    """One model row before padding, with the span of positions whose logits are scored."""

    ids: list[int]
    positions: list[int]
    chosen: tuple[int, int] | None  # [start, end) logits positions scored for the chosen response
    rejected: tuple[int, int] | None
    segments: tuple[int, int] = (0, 0)  # (S, C) for the prefix-sharing mask


def two_sequence_rows(ex: Example) -> list[Row]:
    """Chosen row (and rejected row): shared + suffix. Logits at t predict token t+1."""
    rows = []
    for name in ("chosen", "rejected"):
        if ex[name] is None:
            continue
        ids = ex["shared"] + ex[name]
        span = (ex["response_start"] - 1, len(ids) - 1)
        rows.append(Row(ids, list(range(len(ids))), span if name == "chosen" else None,
                        span if name == "rejected" else None))
    return rows


def shared_row(ex: Example) -> Row:
    """One prefix-sharing row; the scored shared-prefix span (masking off) counts for both responses.

    Chosen scores positions [response_start-1, S+C-1): the shared response tokens then c. Rejected scores the
    same shared span then [S+C, S+C+R): the duplicate predicts r[0]. The two rejected ranges are joined by
    masking out the chosen span in between (see `_span_mask`).
    """
    S, C = len(ex["shared"]), len(ex["chosen"])
    ids, positions = prefix_sharing.layout(ex["shared"], ex["chosen"], ex["rejected"])
    return Row(ids, positions, (ex["response_start"] - 1, S + C - 1), (ex["response_start"] - 1, len(ids) - 1),
               segments=(S, C))


@dataclasses.dataclass
class PairCollator:
    """Pads examples into a batch for `trainers.losses`.

    Output (N rows: 2B for the two-sequence layout, chosen rows first; B with prefix sharing; B for SFT):
    input_ids, position_ids [N, T]; attention_mask [N, T] (two-sequence) or segments [B, 3] = (pad, S, C)
    from which the trainer builds the 4-D / block mask; targets, chosen_mask, rejected_mask [N, keep] for
    the last `keep` positions (the only ones with scored logits); per pair: epsilon and, when cached,
    ref_chosen_logps / ref_rejected_logps; counts for the masked-token share.
    """

    pad_token_id: int
    prefix_sharing: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        paired = examples[0]["rejected"] is not None
        if self.prefix_sharing and paired:
            rows = [shared_row(ex) for ex in examples]
        else:
            rows = [r for ex in examples for r in two_sequence_rows(ex)]
            if paired:  # chosen rows first, then rejected rows
                rows = rows[0::2] + rows[1::2]
        T = max(len(r.ids) for r in rows)
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        keep = max(len(r.ids) - span[0] for r in rows for span in (r.chosen, r.rejected) if span)
        batch = self._pad(rows, T, keep)
        if self.prefix_sharing and paired:
            batch["segments"] = torch.tensor([[T - len(r.ids), *r.segments] for r in rows])
        else:
            batch["attention_mask"] = (torch.arange(T) >= torch.tensor([[T - len(r.ids)] for r in rows])).long()
        batch.update(per_pair_fields(examples))
        return batch

    def _pad(self, rows: list[Row], T: int, keep: int) -> dict[str, torch.Tensor]:
        N = len(rows)
        input_ids = torch.full((N, T), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((N, T), dtype=torch.long)
        targets = torch.zeros((N, T), dtype=torch.long)
        chosen_mask = torch.zeros((N, T))
        rejected_mask = torch.zeros((N, T))
        for i, r in enumerate(rows):
            pad = T - len(r.ids)
            input_ids[i, pad:] = torch.tensor(r.ids)
            position_ids[i, pad:] = torch.tensor(r.positions)
            targets[i, pad:T - 1] = input_ids[i, pad + 1:]
            for span, mask in ((r.chosen, chosen_mask), (r.rejected, rejected_mask)):
                if span:
                    mask[i, pad + span[0]:pad + span[1]] = 1.0
            if r.chosen and r.rejected:  # prefix sharing: the rejected side skips the chosen span
                S, C = r.segments
                rejected_mask[i, pad + S - 1:pad + S + C] = 0.0
        return {"input_ids": input_ids, "position_ids": position_ids, "keep": keep,
                "targets": targets[:, T - keep:], "chosen_mask": chosen_mask[:, T - keep:],
                "rejected_mask": rejected_mask[:, T - keep:]}


def per_pair_fields(examples: list[Example]) -> dict[str, torch.Tensor]:
    """What a batch carries besides the rows, whatever their layout: epsilon and the cached reference
    log-probs per pair, and the token counts behind the masked-token share."""
    out = {"epsilon": torch.tensor([ex["epsilon"] for ex in examples], dtype=torch.float32)}
    if "ref_chosen_logps" in examples[0]:
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            out[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.float64)
    out["masked_tokens"] = torch.tensor(float(_masked(examples)))
    out["response_tokens"] = torch.tensor(float(_response_tokens(examples)))
    return out


def _masked(examples: list[Example]) -> int:
    """Response tokens left out of the log-probs by masking: the shared prefix, once per response."""
    per_response = 2 if examples[0]["rejected"] is not None else 1
    return sum(ex["prefix_len"] * per_response for ex in examples if ex["response_start"] == len(ex["shared"]))


def _response_tokens(examples: list[Example]) -> int:
    """All response tokens of the batch (shared prefix counted once per response), masked or not."""
    return sum(ex["prefix_len"] + len(ex["chosen"])
               + (ex["prefix_len"] + len(ex["rejected"]) if ex["rejected"] is not None else 0) for ex in examples)
