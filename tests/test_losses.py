"""Losses against TRL and against hand computations, on a tiny random Llama."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcts_cot.tiny import byte_tokenizer, tiny_llama
from trainers import losses
from trainers.data import PairCollator
from trainers.trainer import forward_token_logps

TEXTS = [  # (prompt, shared prefix, chosen suffix, rejected suffix): suffixes differ in length
    ("What is 2+3?", "Step 1: add. ", "2+3=5.", "2+3=6, so the answer is 6."),
    ("Tom has 4 pens and buys 2.", "Step 1: ", "4+2=6 pens.", "4*2=8."),
    ("Compute 7-5.", "", "7-5=2.", "7-5 is 3."),
]

pytestmark = pytest.mark.usefixtures("one_thread")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def example(tok, i, p, x, c, r, masking, eot, eps=0.0):
    shared = ids(tok, p) + ids(tok, x)
    return {"index": i, "shared": shared, "chosen": ids(tok, c) + [eot], "rejected": ids(tok, r) + [eot],
            "epsilon": eps, "response_start": len(shared) if masking else len(ids(tok, p)),
            "prefix_len": len(ids(tok, x))}


@pytest.fixture(scope="module")
def setup():
    tok = byte_tokenizer()
    return tok, tiny_llama(tok, seed=0), tiny_llama(tok, seed=1)


def our_loss(setup, masking, objective="cdpo", alpha=0.0, eps=0.0, beta=0.1):
    tok, policy, ref = setup
    exs = [example(tok, i, *t, masking=masking, eot=tok.eos_token_id, eps=eps) for i, t in enumerate(TEXTS)]
    batch = PairCollator(tok.pad_token_id)(exs)
    with torch.no_grad():
        r = losses.sequence_logps(forward_token_logps(ref, batch), batch["chosen_mask"], batch["rejected_mask"], len(exs))
    loss, metrics = losses.compute(losses.LossSettings(objective, beta, alpha), forward_token_logps(policy, batch),
                                   batch, (r.chosen, r.rejected))
    return loss, metrics, batch


def test_cdpo_eps0_unmasked_equals_trl_sigmoid_dpo(setup, tmp_path):
    """ε = 0, masking off: TRL 1.16 DPOTrainer's own sigmoid loss on the same model, reference and pairs.

    TRL's responses are prefix + suffix with its EOS (<|im_end|>, which is also our end-of-turn token here)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok, policy, ref = setup
    rows = [{"prompt": p, "chosen": x + c, "rejected": x + r} for p, x, c, r in TEXTS]
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, loss_type=["sigmoid"], bf16=False, use_cpu=True,
                     report_to="none", gradient_checkpointing=False, max_length=None, disable_dropout=True)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list(rows))
    trl_batch = trainer.data_collator([{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                                       for row in trainer.train_dataset])
    trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    ours, metrics, _ = our_loss(setup, masking=False)
    assert abs(trl_loss.item() - ours.item()) < 1e-5
    assert abs(trainer._metrics["train"]["rewards/margins"][-1] - metrics["rewards/margins"].item()) < 1e-5


@pytest.mark.parametrize("masking", [True, False])
def test_sequence_logps_are_hand_sums_over_scored_tokens(setup, masking):
    tok, policy, _ = setup
    p, x, c, r = TEXTS[0]
    ex = example(tok, 0, p, x, c, r, masking=masking, eot=tok.eos_token_id)
    batch = PairCollator(tok.pad_token_id)([ex])
    got = losses.sequence_logps(forward_token_logps(policy, batch), batch["chosen_mask"], batch["rejected_mask"], 1)
    for suffix, value in ((ex["chosen"], got.chosen), (ex["rejected"], got.rejected)):
        seq = torch.tensor([ex["shared"] + suffix])
        logp = F.log_softmax(policy(seq).logits[0].float(), -1)
        start = ex["response_start"]  # first scored token; masking on: the first suffix token
        hand = sum(logp[t - 1, seq[0, t]] for t in range(start, seq.shape[1]))
        assert start == (len(ex["shared"]) if masking else len(ids(tok, p)))
        assert abs(hand.item() - value.item()) < 1e-4


def test_per_pair_epsilon_applies_row_by_row():
    policy = losses.Logps(torch.tensor([-3.0, -5.0, -2.0]), torch.tensor([-4.0, -4.5, -6.0]), torch.ones(3), torch.ones(3))
    ref_c, ref_r = torch.tensor([-3.5, -5.0, -2.5]), torch.tensor([-3.0, -4.0, -5.0])
    eps = torch.tensor([0.0, 0.2, 0.5])
    loss, chosen_r, rejected_r = losses.dpo(policy, ref_c, ref_r, beta=0.5, epsilon=eps)
    for i in range(3):
        h = (policy.chosen[i] - ref_c[i]) - (policy.rejected[i] - ref_r[i])
        z = 0.5 * h.item()
        hand = -(1 - eps[i].item()) * math.log(1 / (1 + math.exp(-z))) - eps[i].item() * math.log(1 / (1 + math.exp(z)))
        assert abs(loss[i].item() - hand) < 1e-6
    assert torch.allclose(chosen_r - rejected_r, 0.5 * ((policy.chosen - ref_c) - (policy.rejected - ref_r)))


def test_dpo_objective_ignores_epsilon_cdpo_uses_it(setup):
    dpo_loss, _, _ = our_loss(setup, masking=True, objective="dpo", eps=0.3)
    cdpo0, _, _ = our_loss(setup, masking=True, objective="cdpo", eps=0.0)
    cdpo3, metrics, _ = our_loss(setup, masking=True, objective="cdpo", eps=0.3)
    assert abs(dpo_loss.item() - cdpo0.item()) < 1e-7
    assert abs(cdpo3.item() - cdpo0.item()) > 1e-4
    assert abs(metrics["epsilon"].item() - 0.3) < 1e-6


@pytest.mark.parametrize("masking", [True, False])
def test_alpha_term_is_mean_token_nll_of_chosen(setup, masking):
    tok, policy, _ = setup
    with_nll, metrics, _ = our_loss(setup, masking=masking, alpha=1.0)
    without, _, _ = our_loss(setup, masking=masking, alpha=0.0)
    total, count = 0.0, 0
    for i, t in enumerate(TEXTS):
        ex = example(tok, i, *t, masking=masking, eot=tok.eos_token_id)
        seq = torch.tensor([ex["shared"] + ex["chosen"]])
        logp = F.log_softmax(policy(seq).logits[0].float(), -1)
        for pos in range(ex["response_start"], seq.shape[1]):
            total -= logp[pos - 1, seq[0, pos]].item()
            count += 1
    assert abs((with_nll - without).item() - total / count) < 1e-4
    assert abs(metrics["nll"].item() - total / count) < 1e-4


def test_simpo_against_hand_computation(setup):
    tok, policy, _ = setup
    exs = [example(tok, i, *t, masking=True, eot=tok.eos_token_id, eps=0.1) for i, t in enumerate(TEXTS)]
    batch = PairCollator(tok.pad_token_id)(exs)
    loss, metrics = losses.compute(losses.LossSettings("simpo", beta=2.0, simpo_gamma=0.5),
                                   forward_token_logps(policy, batch), batch, None)
    hand = []
    for ex in exs:
        avg = []
        for suffix in (ex["chosen"], ex["rejected"]):
            seq = torch.tensor([ex["shared"] + suffix])
            logp = F.log_softmax(policy(seq).logits[0].float(), -1)
            total = sum(logp[t - 1, seq[0, t]].item() for t in range(len(ex["shared"]), seq.shape[1]))
            avg.append(total / len(suffix))
        z = 2.0 * (avg[0] - avg[1]) - 0.5
        hand.append(-0.9 * math.log(1 / (1 + math.exp(-z))) - 0.1 * math.log(1 / (1 + math.exp(z))))
    assert abs(loss.item() - sum(hand) / len(hand)) < 1e-5
    assert "rewards/margins" in metrics
