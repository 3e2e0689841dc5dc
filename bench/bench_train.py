"""Training pairs/s: our trainer (with and without prefix sharing) against TRL's DPOTrainer, one run.

Same model weights (built from one config and seed), same reference (a second model, its log-probs
precomputed before training on both sides: our cached reference, TRL's `precompute_ref_log_probs`), same
step-level pairs, same batch size, optimizer and data order. Objective: sigmoid DPO with epsilon = 0 and the
shared reasoning prefix scored (masking off: TRL's prompt is the chat prompt, its responses are shared
prefix + suffix), so both sides minimise the same loss; the first-batch losses are checked to agree before
any timing. Aims: prefix sharing / TRL >= 1.6x, no sharing / TRL >= 1.0x.

Pairs look like MCTS step pairs: a long shared context (prompt + shared reasoning steps, --shared tokens)
and two short divergent suffixes (--suffix tokens). Text is random printable ASCII under the byte-level
tokenizer (mcts_cot.tiny), so TRL's own text tokenisation gives exactly our token ids; the model keeps a
realistic vocabulary size (its extra rows are simply never seen).

    python bench/bench_train.py                      # CPU: SmolLM2-135M-shaped Llama (fewer layers), float32, SDPA
    python bench/bench_train.py --layers 30          # the full SmolLM2-135M shape
    python bench/bench_train.py --gpu                # GPU: a Llama-3.2-1B-shaped model, bf16, FlexAttention vs TRL
    python bench/bench_train.py --gpu --toy          # the GPU path at toy size (runs on CPU: not dead code)
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

PRESETS = {
    # SmolLM2-135M's width, heads and vocabulary; --layers 30 is its full depth.
    "smollm2-135m-shape": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                               vocab_size=49152, tie_word_embeddings=True, layers=10),
    # Llama-3.2-1B's shape (1.24B parameters).
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
                     vocab_size=128256, tie_word_embeddings=True, layers=16),
    "toy": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                vocab_size=512, tie_word_embeddings=True, layers=2),
}


def build_model(preset: str, layers: int | None, attn: str, seed: int, dtype, tok):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    spec = dict(PRESETS[preset])
    n_layers = layers or spec.pop("layers")
    spec.pop("layers", None)
    config = LlamaConfig(num_hidden_layers=n_layers, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, **spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    model.config.use_cache = False
    return model


def make_rows(n: int, shared: tuple[int, int], suffix: tuple[int, int], prompt_share: float, seed: int) -> list[dict]:
    """Text pairs (prompt, shared prefix, chosen suffix, rejected suffix) of printable ASCII."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 +-*=.,\n"

    def text(k: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(k))

    rows = []
    for _ in range(n):
        s = rng.randint(*shared)
        p = max(1, round(s * prompt_share))
        rows.append({"prompt": text(p), "prefix": text(s - p), "chosen": text(rng.randint(*suffix)),
                     "rejected": text(rng.randint(*suffix))})
    return rows


def export_rows(rows: list[dict], tok, path: Path, model_name: str) -> Path:
    """The same pairs in `mcts-cot export-pairs` format (token ids; complete responses)."""
    from mcts_cot.io import append_jsonl

    def ids(t: str) -> list[int]:
        return tok.encode(t, add_special_tokens=False)

    append_jsonl(path, [{
        "problem_id": f"p{i}", "strategy": "bench", "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
        "prompt_ids": ids(r["prompt"]), "prefix_ids": ids(r["prefix"]), "chosen_ids": ids(r["chosen"]),
        "rejected_ids": ids(r["rejected"]), "chosen_complete": True, "rejected_complete": True,
        "epsilon": 0.0, "confidence": 1.0, "model": model_name, "tokenizer": model_name, "split": "train",
    } for i, r in enumerate(rows)])
    return path


class StepTimer:
    """A TrainerCallback that records each optimizer step's wall time."""

    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def as_callback(self):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer._t)

        return _CB()


def ours(args, tok, rows_file: Path, ref_model, prefix_sharing: bool, attn: str, out: Path):
    """Our MCTSTrainer on the exported pairs, cached reference attached; returns (trainer, first batch)."""
    import torch

    from trainers import losses, reference
    from trainers.config import TrainConfig
    from trainers.data import ListDataset, PairCollator, end_of_turn_id, load_pairs
    from trainers.trainer import MCTSTrainer, forward_token_logps, training_arguments

    cfg = TrainConfig(objective="dpo", beta=args.beta, epsilon=0.0, alpha=0.0, masking=False, prefix_sharing=prefix_sharing,
                      per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps, learning_rate=args.lr,
                      logging_steps=10_000, save_steps=10_000, warmup_ratio=0.0, lr_scheduler_type="constant",
                      bf16=args.bf16, attn_implementation=attn, max_length=args.max_length, seed=args.seed,
                      pad_to_multiple_of=128 if attn == "flex_attention" else None,
                      trainer_kwargs={"optim": "adamw_torch", "save_strategy": "no", "disable_tqdm": True})
    eot = end_of_turn_id(tok, cfg.eot_token)
    examples, _ = load_pairs(rows_file, eot, cfg.masking, cfg.max_length, cfg.epsilon)
    collator = PairCollator(tok.pad_token_id, prefix_sharing, cfg.pad_to_multiple_of)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref_model.to(device)
    before = ref_model.config._attn_implementation
    ref_model.set_attn_implementation(attn)  # the reference scores the same layout with the same kernel
    values = reference.compute(ref_model, examples, collator, args.batch,
                               lambda m, b: forward_token_logps(m, b, attn))
    ref_model.set_attn_implementation(before)
    for ex, (c, r) in zip(examples, values, strict=True):
        ex["ref_chosen_logps"], ex["ref_rejected_logps"] = c, r
    model = build_model(args.preset, args.layers, attn, args.seed, args.dtype, tok)
    targs = training_arguments(cfg, out, has_eval=False)
    trainer = MCTSTrainer(model=model, args=targs, train_dataset=ListDataset(examples), data_collator=collator,
                          processing_class=tok, loss_settings=losses.LossSettings("dpo", args.beta, 0.0),
                          attn_implementation=attn)
    return trainer, collator(examples[: args.batch])


def trl(args, tok, rows: list[dict], ref_model, attn: str, out: Path):
    """TRL 1.x DPOTrainer (sigmoid loss) on the same pairs as text: prompt, prefix + suffix (+ EOS by TRL)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["prefix"] + r["chosen"],
                               "rejected": r["prefix"] + r["rejected"]} for r in rows])
    cfg = DPOConfig(output_dir=str(out), beta=args.beta, loss_type=["sigmoid"], bf16=args.bf16, use_cpu=not args.cuda,
                    report_to="none", gradient_checkpointing=False, max_length=None, disable_dropout=True,
                    precompute_ref_log_probs=True, precompute_ref_batch_size=args.batch,
                    per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps, learning_rate=args.lr,
                    logging_steps=10_000, save_strategy="no", warmup_steps=0, lr_scheduler_type="constant",
                    optim="adamw_torch", seed=args.seed, disable_tqdm=True)
    model = build_model(args.preset, args.layers, attn, args.seed, args.dtype, tok)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=cfg, processing_class=tok, train_dataset=data)
    first = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch)])
    return trainer, first


def first_loss(trainer, batch) -> float:
    import torch

    trainer.model.eval()
    batch = trainer._prepare_inputs(batch)
    with torch.no_grad(), trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(trainer.model, batch)
    trainer.model.train()
    return float(loss)


def report_arm(label: str, result: dict, tail: str) -> None:
    steps = ", ".join(f"{s:.2f}" for s in result["step_s"])
    print(f"{label}: {result['pairs_per_s']:.3f} pairs/s (steps {steps} s); {tail}", flush=True)


def release_memory(cuda: bool) -> None:
    """Free a finished arm's trainer (deleted by the caller) before the next arm is timed."""
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


def timed_train(trainer, args) -> dict:
    timer = StepTimer()
    trainer.add_callback(timer.as_callback())
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    timed = timer.times[args.warmup:]
    median = statistics.median(timed) if timed else 0.0
    # The median step, not the mean: one step slowed by another job on a shared machine does not move it.
    return {"step_s": timed, "first_step_s": timer.times[:args.warmup], "train_wall_s": wall,
            "median_step_s": median, "mean_step_s": sum(timed) / max(1, len(timed)),
            "pairs_per_s": args.batch / median if median else 0.0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="GPU preset: Llama-1B shape, bf16, FlexAttention for prefix sharing")
    p.add_argument("--toy", action="store_true", help="toy sizes (a smoke run; with --gpu it runs the GPU path on CPU)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--layers", type=int, default=None, help="override the preset's layer count")
    p.add_argument("--batch", type=int, default=None, help="pairs per step (both trainers)")
    p.add_argument("--steps", type=int, default=None, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps (pairs/s = batch / median timed step)")
    p.add_argument("--shared", default=None, help="shared context length range in tokens, e.g. 600-800")
    p.add_argument("--suffix", default=None, help="suffix length range in tokens, e.g. 40-120")
    p.add_argument("--prompt-share", type=float, default=0.4, help="share of the shared context that is the chat prompt")
    p.add_argument("--attn", default=None, help="attention for prefix sharing: sdpa (CPU default) or flex_attention (GPU default)")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest first-batch loss difference accepted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default bench/results/bench_train[_gpu].json)")
    args = p.parse_args(argv)

    import torch

    from mcts_cot.tiny import byte_tokenizer

    args.cuda = torch.cuda.is_available()
    if args.gpu and not args.cuda and not args.toy:
        sys.exit("--gpu needs a CUDA device (use --gpu --toy to run the GPU path at toy size on CPU)")
    defaults = (dict(preset="llama-1b", batch=8, steps=10, shared="600-800", suffix="40-120", attn="flex_attention")
                if args.gpu else
                dict(preset="smollm2-135m-shape", batch=4, steps=4, shared="600-800", suffix="40-120", attn="sdpa"))
    if args.toy:
        defaults.update(preset="toy", batch=2, steps=2, shared="48-64", suffix="6-12")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.bf16 = args.gpu and args.cuda
    note = None
    if args.attn == "flex_attention" and not args.cuda:
        # Inductor's CPU lowering of flex_attention rejects mask_mods that index per-row tensors ("All the buffers
        # in the score and mask subgraph should be in kernel_group.args.input_buffers"), so on CPU the toy run
        # builds the BlockMask (checked below) but trains the prefix-sharing arm with the SDPA dense mask.
        note = "CPU: FlexAttention BlockMask built and checked; prefix-sharing arm trained with SDPA (inductor CPU cannot lower this mask_mod)"
        args.attn = "sdpa"
        check_block_mask = True
    else:
        check_block_mask = False
    args.dtype = torch.float32  # master weights; bf16 = autocast (TrainingArguments), the same on both sides
    shared = tuple(int(x) for x in args.shared.split("-"))
    suffix = tuple(int(x) for x in args.suffix.split("-"))
    args.max_length = shared[1] + suffix[1] + 8
    name = "bench_train_gpu" if args.gpu else "bench_train"
    if args.toy:
        name += "_toy"

    tok = byte_tokenizer()
    n_pairs = args.batch * (args.warmup + args.steps)
    rows = make_rows(n_pairs, shared, suffix, args.prompt_share, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    rows_file = export_rows(rows, tok, tmp / "pairs.jsonl", args.preset)
    base_attn = "sdpa"  # TRL and our two-sequence layout
    # The reference is a differently seeded model, so the first-batch losses are not trivially log 2.
    ref = build_model(args.preset, args.layers, base_attn, args.seed + 1, args.dtype, tok).eval()
    n_params = sum(p.numel() for p in ref.parameters())
    print(f"model: {args.preset} ({args.layers or PRESETS[args.preset]['layers']} layers, {n_params / 1e6:.0f}M params), "
          f"{'bf16 autocast, ' if args.bf16 else 'float32, '}batch {args.batch} pairs, {args.steps} timed steps; "
          f"shared {args.shared} tokens, suffixes {args.suffix}; device {'cuda' if args.cuda else 'cpu'}", flush=True)

    arms = [("trl", None), ("ours_two_sequences", False), ("ours_prefix_sharing", True)]
    results: dict = {}
    losses: dict = {}
    for arm, sharing in arms:
        out = tmp / arm
        if arm == "trl":
            trainer, batch = trl(args, tok, rows, ref, base_attn, out)
        else:
            trainer, batch = ours(args, tok, rows_file, ref, sharing, args.attn if sharing else base_attn, out)
        if sharing and check_block_mask:
            from trainers import prefix_sharing

            block = prefix_sharing.block_mask(batch["segments"], batch["input_ids"].shape[1])
            print(f"{arm:>22}: FlexAttention BlockMask {tuple(block.shape)} built on CPU ({note})", flush=True)
        losses[arm] = first_loss(trainer, batch)
        tokens = int(batch["input_ids"].numel())
        results[arm] = {**timed_train(trainer, args), "first_batch_loss": losses[arm], "first_batch_tokens": tokens}
        report_arm(f"{arm:>22}", results[arm], f"first-batch loss {losses[arm]:.6f}; {tokens} padded tokens per batch")
        del trainer
        release_memory(args.cuda)

    diff = max(abs(losses[a] - losses["trl"]) for a in losses)
    ok = diff <= args.tolerance
    r_share = results["ours_prefix_sharing"]["pairs_per_s"] / results["trl"]["pairs_per_s"]
    r_plain = results["ours_two_sequences"]["pairs_per_s"] / results["trl"]["pairs_per_s"]
    figures = {"sizes": {k: (str(v) if k == "dtype" else v) for k, v in vars(args).items() if k != "out"},
               "params_m": n_params / 1e6, "note": note, "arms": results, "max_loss_diff": diff, "losses_agree": ok,
               "ratio_prefix_sharing_vs_trl": r_share, "ratio_two_sequences_vs_trl": r_plain}
    path = write_result(name, figures, args.out)
    print(f"first-batch losses agree within {args.tolerance:g}: {'yes' if ok else 'NO'} (max difference {diff:.2e})")
    print(f"results: {path}")
    print(f"ratio: ours without prefix sharing / TRL DPOTrainer = {r_plain:.2f}x (aim >= 1.0)")
    print(f"ratio: ours with prefix sharing / TRL DPOTrainer = {r_share:.2f}x (aim >= 1.6)")
    if not ok:
        sys.exit(f"first-batch losses differ by {diff:.2e} > {args.tolerance:g}: the objectives are not the same")
    return figures


if __name__ == "__main__":
    main()
