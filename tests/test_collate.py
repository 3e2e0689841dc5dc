"""Rows → examples → batches: EOS rules, masking spans, truncation counts, padding, bad rows."""

from __future__ import annotations

import pytest
import torch

from mcts_cot.errors import UserError
from mcts_cot.io import append_jsonl
from mcts_cot.tiny import CHAT_TEMPLATE, byte_tokenizer
from trainers.data import PairCollator, end_of_turn_id, load_pairs, load_sft

EOT = 258  # <|im_end|> in the byte tokenizer (<|endoftext|> = 256, <|im_start|> = 257)


def pair(prompt, prefix, chosen, rejected, chosen_complete=True, rejected_complete=False, epsilon=0.25):
    return {"problem_id": "p", "strategy": "step", "prompt": "", "chosen": "", "rejected": "", "prompt_ids": prompt,
            "prefix_ids": prefix, "chosen_ids": chosen, "rejected_ids": rejected, "chosen_complete": chosen_complete,
            "rejected_complete": rejected_complete, "chosen_q": 1.0, "rejected_q": 0.0, "chosen_n": 3,
            "rejected_n": 1, "confidence": 0.75, "epsilon": epsilon, "model": "m", "tokenizer": "m", "split": "train"}


def write(tmp_path, rows, name="pairs.jsonl"):
    append_jsonl(tmp_path / name, rows)
    return tmp_path / name


def test_end_of_turn_token_rules():
    tok = byte_tokenizer()
    assert end_of_turn_id(tok) == EOT  # ChatML closes the assistant turn with <|im_end|>
    tok.eos_token = "<|endoftext|>"  # distinct EOS: the template's end-of-turn still wins, nothing after it
    assert tok.eos_token_id == 256 and end_of_turn_id(tok) == EOT
    assert end_of_turn_id(tok, "<|endoftext|>") == 256
    tok.chat_template = None  # no template: EOS
    assert end_of_turn_id(tok) == 256
    tok.chat_template = CHAT_TEMPLATE
    with pytest.raises(UserError):
        end_of_turn_id(tok, "<|nope|>")


def test_complete_suffixes_get_end_of_turn_partial_get_nothing(tmp_path):
    path = write(tmp_path, [pair([1, 2, 3], [4, 5], [6, 7], [8], chosen_complete=True, rejected_complete=False),
                            pair([1, 2], [], [9], [10, 11], chosen_complete=False, rejected_complete=True)])
    (a, b), stats = load_pairs(path, EOT, masking=True, max_length=100, epsilon="pairs")
    assert a["shared"] == [1, 2, 3, 4, 5] and a["chosen"] == [6, 7, EOT] and a["rejected"] == [8]
    assert b["chosen"] == [9] and b["rejected"] == [10, 11, EOT]
    assert stats.kept == 2 and stats.truncated == stats.dropped == 0
    sft = write(tmp_path, [{"prompt_ids": [1, 2], "completion_ids": [3, 4], "complete": True},
                           {"prompt_ids": [1, 2], "completion_ids": [5], "complete": False}], "sft.jsonl")
    (c, d), _ = load_sft(sft, EOT, max_length=100)
    assert c["chosen"] == [3, 4, EOT] and d["chosen"] == [5] and c["rejected"] is None


def test_end_of_turn_follows_how_each_side_ended_and_old_rows_keep_their_rule(tmp_path):
    ends = ["answer", "eos", "length", "max_depth", "max_tokens", "step"]
    rows = [pair([1], [], [6], [8], chosen_complete=False, rejected_complete=False) | {"chosen_end": end, "rejected_end": end}
            for end in ends]
    old = pair([1], [], [6], [8], chosen_complete=True, rejected_complete=False)  # exported before *_end
    examples, _ = load_pairs(write(tmp_path, [*rows, old]), EOT, masking=True, max_length=100, epsilon=0.1)
    # the model ended its turn (an answer, or an eos without one): the end-of-turn is trained; a cut or a step: not
    assert [e["rejected"] for e in examples] == [[8, EOT], [8, EOT], [8], [8], [8], [8], [8]]
    assert [e["chosen"] for e in examples] == [[6, EOT], [6, EOT], [6], [6], [6], [6], [6, EOT]]


def test_epsilon_per_pair_or_fixed(tmp_path):
    path = write(tmp_path, [pair([1], [2], [3], [4], epsilon=0.1), pair([1], [2], [3], [4], epsilon=0.4)])
    per_pair, _ = load_pairs(path, EOT, True, 100, "pairs")
    fixed, _ = load_pairs(path, EOT, True, 100, 0.2)
    assert [e["epsilon"] for e in per_pair] == [0.1, 0.4]
    assert [e["epsilon"] for e in fixed] == [0.2, 0.2]
    assert PairCollator(0)(per_pair)["epsilon"].tolist() == pytest.approx([0.1, 0.4])


def test_truncation_and_drops_are_counted(tmp_path):
    path = write(tmp_path, [pair([1] * 4, [2] * 2, [3] * 5, [4] * 2), pair([1] * 9, [2] * 2, [3], [4]),
                            pair([1] * 2, [], [3], [4])])
    examples, stats = load_pairs(path, EOT, True, max_length=10, epsilon=0.0)
    assert (stats.rows, stats.kept, stats.truncated, stats.dropped) == (3, 2, 1, 1)
    assert examples[0]["chosen"] == [3] * 4 and examples[0]["rejected"] == [4] * 2  # cut to 10 - 6 tokens
    assert "1 truncated" in stats.describe() and "1 dropped" in stats.describe()


@pytest.mark.parametrize("masking", [True, False])
def test_two_sequence_batch_left_padded_with_scored_spans(tmp_path, masking):
    path = write(tmp_path, [pair([11, 12, 13], [14, 15], [16, 17], [18]), pair([21, 22], [23], [24], [25, 26, 27])])
    examples, _ = load_pairs(path, EOT, masking, 100, 0.0)
    b = PairCollator(pad_token_id=0)(examples)
    # rows: chosen of pair 0, chosen of pair 1, rejected of pair 0, rejected of pair 1
    assert b["input_ids"].tolist() == [[11, 12, 13, 14, 15, 16, 17, EOT], [0, 0, 0, 21, 22, 23, 24, EOT],
                                       [0, 0, 11, 12, 13, 14, 15, 18], [0, 0, 21, 22, 23, 25, 26, 27]]
    assert b["attention_mask"][1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert b["position_ids"][1].tolist() == [0, 0, 0, 0, 1, 2, 3, 4]
    T, keep = 8, b["keep"]
    scored = {}
    for name in ("chosen_mask", "rejected_mask"):
        for row in range(4):
            positions = (b[name][row] > 0).nonzero().flatten() + T - keep
            if len(positions):
                targets = b["targets"][row][positions - (T - keep)]
                scored[name, row] = targets.tolist()
                # the target at position t is the token at t + 1
                assert targets.tolist() == b["input_ids"][row][positions + 1].tolist()
    if masking:
        assert scored["chosen_mask", 0] == [16, 17, EOT] and scored["rejected_mask", 3] == [25, 26, 27]
        assert b["masked_tokens"].item() == 2 * 2 + 2 * 1
    else:
        assert scored["chosen_mask", 0] == [14, 15, 16, 17, EOT] and scored["rejected_mask", 3] == [23, 25, 26, 27]
        assert b["masked_tokens"].item() == 0
    assert set(scored) == {("chosen_mask", 0), ("chosen_mask", 1), ("rejected_mask", 2), ("rejected_mask", 3)}
    assert b["response_tokens"].item() == (2 + 3) + (2 + 1) + (1 + 2) + (1 + 3)


def test_sft_batch_scores_completion_only(tmp_path):
    path = write(tmp_path, [{"prompt_ids": [1, 2, 3], "completion_ids": [4, 5], "complete": True}], "sft.jsonl")
    examples, _ = load_sft(path, EOT, 100)
    b = PairCollator(0, prefix_sharing=True)(examples)  # SFT ignores prefix sharing
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5, EOT]]
    assert b["targets"][b["chosen_mask"] > 0].tolist() == [4, 5, EOT]
    assert b["rejected_mask"].sum() == 0


def test_pad_to_multiple_of(tmp_path):
    path = write(tmp_path, [pair([1, 2, 3], [4], [5], [6])])
    examples, _ = load_pairs(path, EOT, True, 100, 0.0)
    assert PairCollator(0, pad_to_multiple_of=8)(examples)["input_ids"].shape == (2, 8)
    assert PairCollator(0, prefix_sharing=True, pad_to_multiple_of=8)(examples)["input_ids"].shape == (1, 8)


def test_missing_field_names_file_and_row(tmp_path):
    bad = pair([1], [2], [3], [4])
    del bad["chosen_complete"]
    path = write(tmp_path, [pair([1], [2], [3], [4]), bad])
    with pytest.raises(UserError, match=r"pairs.jsonl:2: missing field\(s\) chosen_complete"):
        load_pairs(path, EOT, True, 100, "pairs")
    assert torch.is_tensor(PairCollator(0)(load_pairs(write(tmp_path, [pair([1], [], [3], [4])], "ok.jsonl"),
                                                      EOT, True, 100, 0.0)[0])["input_ids"])
