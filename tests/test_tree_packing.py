"""Tree packing: exact layout and mask, and the same losses AND gradients as pairwise prefix sharing
(float32, 1e-4), including padding, a problem split across packed rows and the cached reference."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.tiny import byte_tokenizer, tiny_llama
from trainers import losses, reference, synthetic, tree_packing
from trainers.config import TrainConfig
from trainers.data import PairCollator
from trainers.trainer import forward_token_logps, run

pytestmark = pytest.mark.usefixtures("one_thread")

REF = (torch.tensor([-20.0, -9.0, -30.0, -12.0, -18.0, -7.0]), torch.tensor([-25.0, -8.0, -28.0, -15.0, -11.0, -9.0]))


def test_layout_writes_shared_tokens_once_with_their_own_positions():
    ex = {"shared": [1, 2], "chosen": [3, 4], "rejected": [3, 5], "response_start": 2, "prefix_len": 0, "epsilon": 0.0}
    batch = tree_packing.TreeCollator(pad_token_id=0)([ex])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 3]]
    m = tree_packing.dense_mask(batch["tree_end"])[0, 0]
    assert m[3].tolist() == [True, True, True, True, False]  # 4: its own sequence 1 2 3 4
    assert m[4].tolist() == [True, True, True, False, True]  # 5: blind to its sibling 4
    # chosen 3, 4 read from nodes 2 (index 1) and 3 (index 2); rejected 3, 5 from nodes 2 and 3 as well
    keep = batch["keep"]
    assert (batch["score_pos"][:, :2] + 5 - keep).tolist() == [[1, 2], [1, 2]]
    assert batch["score_target"][:, :2].tolist() == [[3, 4], [3, 5]]
    assert batch["chosen_mask"].tolist() == [[1, 1], [0, 0]] and batch["rejected_mask"].tolist() == [[0, 0], [1, 1]]


def test_padding_sees_itself_only_and_nobody_sees_padding():
    exs = [{"shared": [1, 2, 3], "chosen": [4], "rejected": [5], "response_start": 3, "prefix_len": 0, "epsilon": 0.0},
           {"shared": [9], "chosen": [4], "rejected": [5], "response_start": 1, "prefix_len": 0, "epsilon": 0.0}]
    batch = tree_packing.TreeCollator(pad_token_id=0, budget=5)(exs)  # two rows: 5 and 3 tokens
    assert batch["input_ids"].shape == (2, 5)
    m = tree_packing.dense_mask(batch["tree_end"])[1, 0]
    assert m[0].tolist() == [True, False, False, False, False] and m[1].tolist() == [False, True] + [False] * 3
    assert not m[2:, :2].any()


def make_examples(masking: bool, seed: int = 0) -> list[dict]:
    """Two problems whose prompts share a header (few-shot examples); problem 0 is a tree: two path pairs with
    the SAME chosen path, and step pairs at depth 1 and 2 along it; suffixes of unequal length."""
    rng = random.Random(seed)

    def toks(n):
        return [rng.randrange(3, 256) for _ in range(n)]

    header = toks(6)
    prompts = [header + toks(4), header + toks(3)]
    s1, s2, s3 = toks(4), toks(3), toks(2)
    specs = [  # (problem, prefix, chosen, rejected)
        (0, [], s1 + s2 + s3, toks(5)), (0, [], s1 + s2 + s3, s1[:2] + toks(4)),
        (0, s1, s2, toks(3)), (0, s1 + s2, s3, toks(6)),
        (1, [], toks(3), toks(7)), (1, toks(2), toks(1), toks(2)),
    ]
    return [{"index": i, "shared": prompts[p] + x, "prefix_len": len(x), "chosen": c, "rejected": r,
             "epsilon": [0.0, 0.2, 0.45, 0.1, 0.0, 0.3][i],
             "response_start": len(prompts[p]) + len(x) if masking else len(prompts[p])}
            for i, (p, x, c, r) in enumerate(specs)]


@pytest.fixture(scope="module")
def tok_model():
    tok = byte_tokenizer()
    return tok, tiny_llama(tok, seed=3)


def loss_and_grads(model, batch, settings, ref=REF):
    model.zero_grad()
    loss, metrics = losses.compute(settings, forward_token_logps(model, batch), batch, ref)
    loss.backward()
    return loss.detach(), metrics, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b):
    (loss_a, metrics_a, grads_a), (loss_b, metrics_b, grads_b) = a, b
    assert abs(loss_a.item() - loss_b.item()) < 1e-4
    for key in ("logps/chosen", "logps/rejected", "nll"):
        if key in metrics_a:
            assert abs(metrics_a[key].item() - metrics_b[key].item()) < 1e-4
    assert max((grads_a[n] - grads_b[n]).abs().max().item() for n in grads_a) < 1e-4


@pytest.mark.parametrize("masking", [True, False])
def test_same_loss_and_gradients_as_prefix_sharing(tok_model, masking, loss_settings):
    tok, model, settings = *tok_model, loss_settings
    examples = make_examples(masking)
    pairwise = PairCollator(tok.pad_token_id, prefix_sharing=True)(examples)
    tree = tree_packing.TreeCollator(tok.pad_token_id)(examples)
    assert tree["input_ids"].shape[0] == 1  # the whole batch in one packed row
    assert tree["input_ids"].numel() < (pairwise["input_ids"] != tok.pad_token_id).sum()
    assert_same(loss_and_grads(model, pairwise, settings), loss_and_grads(model, tree, settings))
    assert tree["masked_tokens"] == pairwise["masked_tokens"]


@pytest.mark.parametrize("budget,multiple", [(25, None), (30, 16)])
def test_problem_split_across_packed_rows_with_padding(tok_model, budget, multiple):
    tok, model = tok_model
    examples = make_examples(masking=True)
    settings = losses.LossSettings("cdpo", alpha=1.0)
    tree = tree_packing.TreeCollator(tok.pad_token_id, budget=budget, pad_to_multiple_of=multiple)(examples)
    packs = tree_packing.pack(examples, budget)
    assert {0, 1, 2, 3} - set(packs[0][1])  # problem 0 spans two rows
    assert all(len(trie.tokens) <= budget for trie, _ in packs)
    assert (tree["input_ids"] == tok.pad_token_id).any()  # rows are padded
    pairwise = PairCollator(tok.pad_token_id, prefix_sharing=True)(examples)
    assert_same(loss_and_grads(model, pairwise, settings), loss_and_grads(model, tree, settings))


def test_sft_rows_same_nll_as_separate_rows(tok_model):
    tok, model = tok_model
    examples = [dict(ex, rejected=None, response_start=len(ex["shared"]), prefix_len=0) for ex in make_examples(True)]
    settings = losses.LossSettings("sft")
    assert_same(loss_and_grads(model, PairCollator(tok.pad_token_id)(examples), settings),
                loss_and_grads(model, tree_packing.TreeCollator(tok.pad_token_id)(examples), settings))


def test_cached_reference_on_packed_rows_is_the_pairwise_one(tok_model):
    tok, model = tok_model
    examples = make_examples(masking=False)
    values = {}
    for name, collator in (("pairwise", PairCollator(tok.pad_token_id, prefix_sharing=True)),
                           ("tree", tree_packing.TreeCollator(tok.pad_token_id, budget=40))):
        values[name] = reference.compute(model, examples, collator, 4, forward_token_logps)
    assert (torch.tensor(values["pairwise"]) - torch.tensor(values["tree"])).abs().max() < 1e-4
    settings = losses.LossSettings("cdpo", alpha=1.0)
    for name in values:
        for ex, (c, r) in zip(examples, values[name], strict=True):
            ex["ref_chosen_logps"], ex["ref_rejected_logps"] = c, r
        batch = tree_packing.TreeCollator(tok.pad_token_id)(examples)
        values[name] = loss_and_grads(model, batch, settings, (batch["ref_chosen_logps"], batch["ref_rejected_logps"]))
    assert_same(values["pairwise"], values["tree"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_block_mask_is_the_dense_mask(tok_model):
    """The BlockMask's mask_mod against the dense mask, through eager (uncompiled) flex_attention on CPU."""
    from torch.nn.attention.flex_attention import flex_attention

    tree_end = tree_packing.TreeCollator(0, budget=40)(make_examples(True))["tree_end"]
    P, T = tree_end.shape
    q, k, v = (torch.randn(P, 2, T, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    with torch.no_grad():
        flex = flex_attention(q, k, v, block_mask=tree_packing.block_mask(tree_end))
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=tree_packing.dense_mask(tree_end))
    assert (flex - dense).abs().max() < 1e-5


def test_sampler_keeps_each_problem_together():
    examples = make_examples(masking=True)
    random.Random(1).shuffle(examples)
    sampler = tree_packing.ProblemSampler(examples, seed=0)
    problem = [0 if ex["index"] < 4 else 1 for ex in examples]
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
        assert list(sampler) == orders[-1]  # the same epoch, the same order (resume, DDP ranks)
        by_problem = [problem[i] for i in orders[-1]]
        assert sorted(by_problem) == sorted(problem) and sum(a != b for a, b in itertools.pairwise(by_problem)) == 1
    assert len({tuple(o) for o in orders}) > 1  # problems are shuffled across epochs


def test_switch_is_off_by_default_and_trains_to_the_same_loss(tiny_model_dir, tmp_path):
    data = synthetic.write_data_dir(tmp_path / "data", str(tiny_model_dir), (0, 256), pairs=8, val_pairs=8)
    fast = [f"data={data}", "max_steps=1", "learning_rate=0.0", "per_device_train_batch_size=4", "save_steps=1000"]
    assert TrainConfig().tree_packing is False
    losses_ = [run(load_config(TrainConfig, overrides=fast + extra), tmp_path / str(i)).metrics["eval"]["eval_loss"]
               for i, extra in enumerate(([], ["tree_packing=true", "packing_budget=64"]))]
    assert losses_[1] == pytest.approx(losses_[0], abs=1e-4)
    with pytest.raises(UserError, match="prefix_sharing"):
        load_config(TrainConfig, overrides=fast + ["tree_packing=true", "prefix_sharing=true"]).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled FlexAttention with backward needs a GPU")
def test_flex_attention_model_matches_sdpa_on_gpu(gpu_loss_and_grads):
    pad = byte_tokenizer().pad_token_id
    results = [gpu_loss_and_grads(make_examples(masking=True), impl, collator, REF)
               for impl, collator in (("sdpa", PairCollator(pad, True)),
                                      ("flex_attention", tree_packing.TreeCollator(pad, 40, pad_to_multiple_of=128)))]
    assert abs(results[0][0] - results[1][0]) < 1e-3
    assert (results[0][1] - results[1][1]).abs().max() < 1e-3
