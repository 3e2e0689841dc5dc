"""Joint (cDPO + α·NLL + masking) training of the embedded model: cached reference vs a live reference model.

Each mode runs `trainers.trainer.run` in its own process (peak RSS is a per-process high-water mark), back to
back on the same synthetic pairs of realistic MCTS lengths (~600-token prompt, ~100-token shared prefix,
~50-token suffixes, ±20%). Reports training pairs/s (the Trainer's train_samples_per_second; the cached
mode's one-off reference pass is reported apart) and peak RSS; the cached/live ratio is printed last.
A third mode, cached + prefix sharing, gives a quick CPU number for one sequence per pair vs two.

    flock /tmp/mcts-heavy.lock .venv/bin/python bench/bench_train_reference.py [--pairs 24 --steps 6 --batch 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "cached": ["reference=cached"],
    "live": ["reference=live"],
    "cached_prefix_sharing": ["reference=cached", "prefix_sharing=true"],
}


def child(args: argparse.Namespace) -> None:
    """One training run; prints its metrics as JSON on the last line."""
    sys.path.insert(0, str(ROOT))
    from mcts_cot.config import load_config
    from trainers.config import TrainConfig
    from trainers.trainer import run

    overrides = [f"data={args.data}", "objective=cdpo", "alpha=1.0", "masking=true", f"max_steps={args.steps}",
                 f"per_device_train_batch_size={args.batch}", "per_device_eval_batch_size=4", "logging_steps=1",
                 "save_steps=100000", "learning_rate=0.000001", "warmup_ratio=0.0", "max_length=1024",
                 *MODES[args.mode]]
    cfg = load_config(TrainConfig, overrides=overrides, **{"model.name": args.model})
    start = time.perf_counter()
    metrics = run(cfg, Path(args.out) / args.mode).metrics
    ref = metrics["reference"]["files"].get("pairs.jsonl", {})
    print(json.dumps({
        "mode": args.mode, "pairs_per_second": metrics["pairs_per_second"],
        "train_runtime_s": metrics["train"]["train_runtime"], "total_wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": metrics["peak_rss_mb"], "reference_cache_hit": ref.get("hit"),
        "steps": metrics["global_step"], "train_loss": metrics["train"]["train_loss"],
    }))


def parent(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from mcts_cot.models import resolve_model
    from trainers import synthetic

    model = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = synthetic.write_data_dir(work / "data", model, (100, 49000), pairs=args.pairs, val_pairs=0,
                                    prompt_len=600, prefix_len=100, suffix_len=50, jitter=0.2)
    (data / "pairs_val.jsonl").unlink(missing_ok=True)  # no evaluation: training speed only
    results = {}
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--child", "--mode", mode, "--data", str(data), "--out", str(work / "out"),
               "--model", model, "--steps", str(args.steps), "--batch", str(args.batch)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{mode} failed:\n{proc.stderr[-4000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        results[mode]["process_wall_s"] = round(time.perf_counter() - start, 2)
        print(json.dumps(results[mode]), flush=True)

    summary = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                          f"{__import__('os').cpu_count()} cores", "model": args.model, "pairs": args.pairs,
               "steps": args.steps, "batch": args.batch, "lengths": "prompt~600 prefix~100 suffixes~50 (±20%)",
               "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if "cached_prefix_sharing" in results and "cached" in results:
        summary["prefix_sharing_speedup"] = round(results["cached_prefix_sharing"]["pairs_per_second"]
                                                  / results["cached"]["pairs_per_second"], 3)
        print(f"prefix sharing vs two sequences (cached reference): x{summary['prefix_sharing_speedup']} pairs/s")
    if "cached" in results and "live" in results:
        c, live = results["cached"], results["live"]
        summary["speed_ratio_cached_over_live"] = round(c["pairs_per_second"] / live["pairs_per_second"], 3)
        summary["rss_ratio_cached_over_live"] = round(c["peak_rss_mb"] / live["peak_rss_mb"], 3)
    out = ROOT / "bench" / "results" / f"train_reference-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"written {out.relative_to(ROOT)}")
    if "speed_ratio_cached_over_live" in summary:
        print(f"cached: {c['pairs_per_second']} pairs/s, {c['peak_rss_mb']} MB peak RSS | "
              f"live: {live['pairs_per_second']} pairs/s, {live['peak_rss_mb']} MB peak RSS")
        print(f"ratio cached/live: x{summary['speed_ratio_cached_over_live']} pairs/s, "
              f"x{summary['rss_ratio_cached_over_live']} peak RSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
