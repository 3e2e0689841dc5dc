"""Training pairs/s: tree packing vs pairwise prefix sharing vs TRL's DPOTrainer, one run, two data shapes.

Same model weights, reference, pairs, batch size, optimizer and objective as bench/bench_train.py (whose
helpers this reuses: sigmoid DPO, epsilon = 0, shared prefix scored so TRL minimises the same loss; first-batch
losses checked to agree before timing). Two data shapes, text under the byte-level tokenizer:

- demo: the demo's prompt (a shared few-shot header of two worked examples, ~560 tokens, then a ~40-token
  question), 2 path pairs per problem with the SAME chosen path (the demo exports 2 rejected per chosen),
  each sharing a 0-60-token prefix with its rejected path; paths 80-160 tokens, rejected 40-120. The demo's
  SFT row is not in this bench: a run trains pairs.jsonl or sft.jsonl, never both in one batch.
- deep: step pairs from one deeper tree: 4 pairs per problem at depths 1-4 along one path of ~50-token steps
  (prefix = the steps above, chosen = the next step, rejected = a ~50-token sibling).

A batch holds whole problems (tree packing's sampler; the first batch, checked and counted, is the same
examples in every arm). Tokens per batch: the first batch's input_ids, padded and not.

    python bench/bench_tree_packing.py                  # CPU: SmolLM2-135M-shaped Llama (10 layers), float32, SDPA
    python bench/bench_tree_packing.py --toy            # smoke run
    python bench/bench_tree_packing.py --gpu            # GPU: Llama-3.2-1B shape, bf16, FlexAttention (TRL arm if installed)
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train as bt  # noqa: E402
from _common import cpu_flags, write_result  # noqa: E402

HEADER_LEN, QUESTION_LEN = 560, 40


def _texts(rng: random.Random):
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 +-*=.,\n"
    return lambda k: "".join(rng.choice(alphabet) for _ in range(k))


def demo_rows(problems: int, seed: int, scale: float = 1.0) -> list[dict]:
    """2 path pairs per problem, one chosen path, prompts sharing the few-shot header."""
    rng = random.Random(seed)
    text, n = _texts(rng), (lambda k: max(1, round(k * scale)))
    header, rows = text(n(HEADER_LEN)), []
    for _ in range(problems):
        prompt, path = header + text(n(QUESTION_LEN)), text(n(rng.randint(80, 160)))
        for _ in range(2):
            k = rng.randint(0, n(60))
            rows.append({"prompt": prompt, "prefix": path[:k], "chosen": path[k:],
                         "rejected": text(n(rng.randint(40, 120)))})
    return rows


def deep_rows(problems: int, seed: int, scale: float = 1.0) -> list[dict]:
    """4 step pairs per problem at depths 1-4 along one path of ~50-token steps."""
    rng = random.Random(seed)
    text, n = _texts(rng), (lambda k: max(1, round(k * scale)))
    header, rows = text(n(HEADER_LEN)), []
    for _ in range(problems):
        prompt, steps = header + text(n(QUESTION_LEN)), [text(n(rng.randint(40, 60))) for _ in range(5)]
        for d in range(1, 5):
            rows.append({"prompt": prompt, "prefix": "".join(steps[:d]), "chosen": steps[d],
                         "rejected": text(n(rng.randint(40, 60)))})
    return rows


def tree_arm(args, tok, rows_file: Path, ref, out: Path):
    """bench_train's own trainer (prefix-sharing config) with the tree-packing collator swapped in, so the
    reference, optimizer and loss are the other arms'; the trainer then samples whole problems."""
    from trainers.tree_packing import TreeCollator

    trainer, _ = bt.ours(args, tok, rows_file, ref, True, args.attn, out)
    trainer.data_collator = TreeCollator(tok.pad_token_id, args.budget, 128 if args.attn == "flex_attention" else None)
    return trainer, trainer.data_collator(trainer.train_dataset.examples[:args.batch])


def run_shape(args, tok, name: str, rows: list[dict], tmp: Path) -> dict:
    """The three arms on one data shape; returns per-arm figures and the ratios."""

    lengths = [len(r["prompt"]) + len(r["prefix"]) + max(len(r["chosen"]), len(r["rejected"])) for r in rows]
    args.max_length = max(lengths) + 8
    rows_file = bt.export_rows(rows, tok, tmp / f"{name}.jsonl", args.preset)
    ref = bt.build_model(args.preset, args.layers, "sdpa", args.seed + 1, args.dtype, tok).eval()
    arms = ["pairwise", "tree"] + (["trl"] if args.with_trl else [])
    results, losses = {}, {}
    for arm in arms:
        out = tmp / f"{name}-{arm}"
        if arm == "trl":
            trainer, batch = bt.trl(args, tok, rows, ref, "sdpa", out)
        elif arm == "pairwise":
            trainer, batch = bt.ours(args, tok, rows_file, ref, True, args.attn, out)
        else:
            trainer, batch = tree_arm(args, tok, rows_file, ref, out)
        losses[arm] = bt.first_loss(trainer, batch)
        ids = batch["input_ids"]
        pad = tok.pad_token_id
        real = batch["attention_mask"].sum() if "attention_mask" in batch else (ids != pad).sum()
        tokens = {"padded": int(ids.numel()), "real": int(real), "rows": int(ids.shape[0])}
        results[arm] = {**bt.timed_train(trainer, args), "first_batch_loss": losses[arm], "first_batch_tokens": tokens}
        bt.report_arm(f"{name:>5} {arm:>9}", results[arm],
                      f"loss {losses[arm]:.6f}; {tokens['padded']} padded tokens in {tokens['rows']} rows per batch")
        del trainer
        bt.release_memory(args.cuda)
    diff = max(abs(losses[a] - losses["pairwise"]) for a in losses)
    figures = {"arms": results, "max_loss_diff": diff, "losses_agree": diff <= args.tolerance,
               "tree_vs_pairwise": results["tree"]["pairs_per_s"] / results["pairwise"]["pairs_per_s"]}
    if "trl" in results:
        figures["tree_vs_trl"] = results["tree"]["pairs_per_s"] / results["trl"]["pairs_per_s"]
        figures["pairwise_vs_trl"] = results["pairwise"]["pairs_per_s"] / results["trl"]["pairs_per_s"]
    return figures


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="Llama-1B shape, bf16 autocast, FlexAttention for both of ours")
    p.add_argument("--toy", action="store_true", help="toy model and 1/8-length text (a smoke run)")
    p.add_argument("--layers", type=int, default=None, help="override the preset's layer count")
    p.add_argument("--batch", type=int, default=4, help="pairs per step (every arm): 2 demo problems, 1 deep one")
    p.add_argument("--steps", type=int, default=3, help="timed steps per arm")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument("--budget", type=int, default=8192, help="tree packing: tokens per packed sequence")
    p.add_argument("--shapes", default="demo,deep")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest first-batch loss difference accepted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch

    from mcts_cot.tiny import byte_tokenizer

    args.cuda = torch.cuda.is_available()
    if args.gpu and not args.cuda:
        sys.exit("--gpu needs a CUDA device")
    args.preset = "toy" if args.toy else ("llama-1b" if args.gpu else "smollm2-135m-shape")
    args.attn = "flex_attention" if args.gpu else "sdpa"
    args.bf16, args.dtype = args.gpu, torch.float32
    args.with_trl = importlib.util.find_spec("trl") is not None  # a GPU machine may lack TRL: time ours anyway
    scale = 0.125 if args.toy else 1.0
    tok = byte_tokenizer()
    problems = {"demo": args.batch // 2, "deep": args.batch // 4}
    makers = {"demo": demo_rows, "deep": deep_rows}
    tmp = Path(tempfile.mkdtemp(prefix="bench-tree-"))
    print(f"model {args.preset} ({args.layers or bt.PRESETS[args.preset]['layers']} layers), batch {args.batch} pairs, "
          f"{args.steps} timed steps, attention {args.attn}, device {'cuda' if args.cuda else 'cpu'}, "
          f"CPU flags {' '.join(cpu_flags())}", flush=True)
    shapes = {}
    for name in args.shapes.split(","):
        n = max(1, problems[name]) * (args.warmup + args.steps)
        shapes[name] = run_shape(args, tok, name, makers[name](n, args.seed, scale), tmp)
    figures = {"sizes": {k: str(v) for k, v in vars(args).items() if k != "out"}, "cpu_flags": cpu_flags(),
               "shapes": shapes}
    path = write_result("bench_tree_packing" + ("_gpu" if args.gpu else "") + ("_toy" if args.toy else ""),
                        figures, args.out)
    print(f"results: {path}")
    bad = [n for n, f in shapes.items() if not f["losses_agree"]]
    for name, f in shapes.items():
        extra = f", tree / TRL = {f['tree_vs_trl']:.2f}x, pairwise / TRL = {f['pairwise_vs_trl']:.2f}x" if "tree_vs_trl" in f else ""
        print(f"ratio ({name}): tree packing / pairwise prefix sharing = {f['tree_vs_pairwise']:.2f}x (aim >= 1.5){extra}")
    if bad:
        sys.exit(f"first-batch losses differ beyond {args.tolerance:g} on {', '.join(bad)}")
    return figures


if __name__ == "__main__":
    main()
