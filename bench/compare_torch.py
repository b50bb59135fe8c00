#!/usr/bin/python3
"""affinage vs PyTorch eager (HF-style Llama + PEFT-style LoRA, bench/torch_reference.py) on a CPU, side by side.

For each size: makes the model folder (cached under --scratch), a JSONL of identical {"text"} rows (identical
rows make the step-0 loss independent of the order each side draws rows in), a recipe for `affinage run`
(LoRA r16 alpha 32 on all seven linears, f32, no eval, a checkpoint only at the end, log_every 1), checks that
both sides build the same token ids, then runs affinage and the reference interleaved A B A B (--rounds), each
as its own process, and prints: steady-state training tokens/s (first step excluded) of each and their ratio,
the median whole-process wall time, the step-0 loss of both (must agree to 1e-4, else exit 1), peak RSS
(wait4's ru_maxrss of the child). Then batch-1 greedy generation: `affinage generate --temperature 0` against
the reference's generate mode, the generated ids compared, tokens/s from whole-process wall times
((median wall with N new tokens - median wall with 1) / (N - 1) per token: affinage prints no timing).

Same settings on both sides: --threads intra-op threads (recipe "threads" / torch.set_num_threads),
OMP_WAIT_POLICY=passive (what affinage sets for itself), OPENBLAS_NUM_THREADS as in the caller's environment
(unset = OpenBLAS's default, one thread per core, as `affinage run` uses it) or --openblas-threads.

Usage: /usr/bin/python3 bench/compare_torch.py [--sizes stories260k,100m,7b2] [--rounds 3] [--affinage build/affinage]
A benchmark tool only; needs python3-torch, python3-numpy, python3-sentencepiece (Debian)."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "bench")
TOL = 1e-4

# batch x seq and steps from the table; gen = new tokens for the generation comparison (0 = none)
SIZES = {
    "stories260k": dict(batch=8, seq=256, steps=12, gen=400, prompt="Once upon a time"),
    "100m": dict(batch=4, seq=512, steps=4, gen=64, prompt="Once upon a time"),
    "7b2": dict(batch=1, seq=512, steps=4, gen=0, prompt="Once upon a time"),
}


def die(msg):
    print(f"compare_torch: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run_child(cmd, env, log):
    """Runs cmd as its own process; returns (wall s, peak RSS MiB of that child, stdout text, load before,
    CPU s = user + system time of the child)."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        die(f"{' '.join(cmd)} exited {p.returncode}; see {log}.err")
    with open(log + ".out") as f:
        return wall, ru.ru_maxrss / 1024.0, f.read(), load, ru.ru_utime + ru.ru_stime


def model_dir(size, a):
    if size == "stories260k":
        return os.path.join(ROOT, "models/stories260K")
    d = os.path.join(a.scratch, "models", size)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        subprocess.run([a.python, os.path.join(HERE, "make_random_model.py"), size, d], check=True)
    return d


def make_text(sp, seq):
    """Shakespeare passages joined until the text alone has at least seq tokens (so each row is cut to seq)."""
    parts, text = [], ""
    with open(os.path.join(ROOT, "datasets/data/shakespeare_train.jsonl")) as f:
        for line in f:
            parts.append(json.loads(line)["text"])
            text = "\n\n".join(parts)
            if len(sp.encode(text)) >= seq:
                return text
    die("datasets/data/shakespeare_train.jsonl has too little text for seq_len %d" % seq)


def check_ids(a, tok, text, sp, seq):
    """Our [BOS] + sp(text) against `affinage tokenize --bos` (affinage's own SentencePiece)."""
    got = subprocess.run([a.affinage, "tokenize", "--tokenizer", tok, "--text", text, "--bos"], check=True,
                         capture_output=True, text=True).stdout.split()
    ours = [sp.bos_id()] + sp.encode(text)
    if [int(x) for x in got] != ours:
        die(f"token ids differ between python3-sentencepiece and `affinage tokenize` for {tok}")
    return ours + [sp.eos_id()]


def write_recipe(path, size, model, data, out, a, c):
    recipe = {
        "name": f"torch_compare_{size}", "stage": "sft", "model": model, "output_dir": out, "device": "cpu",
        "dtype": "f32", "seed": 42, "threads": a.threads, "log_every": 1,
        "data": {"train": data, "seq_len": c["seq"], "packing": False, "truncation": "right"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "optim": {"lr": a.lr, "weight_decay": 0.0, "grad_clip": 1.0},
        "schedule": {"type": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.0},
        "train": {"batch_size": c["batch"], "grad_accum": 1, "max_steps": c["steps"]},
        "checkpoint": {"every": 0, "keep": 1},
        "eval": {"every": 0},
    }
    with open(path, "w") as f:
        json.dump(recipe, f, indent=2)


def steady(steps):
    """tokens / seconds over steps 2..N (the first step warms allocators and caches)."""
    later = steps[1:]
    return sum(s["tokens"] for s in later) / sum(s["seconds"] for s in later)


def read_affinage_metrics(out):
    steps = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if "loss" in j and j.get("step", 0) >= 1:
                steps.append({"step": j["step"], "loss": j["loss"], "tokens": j["tokens"],
                              "seconds": j["tokens"] / j["tokens_per_s"]})
    return steps


def compare_train(size, a, env, results):
    import sentencepiece as spm
    c = dict(SIZES[size])
    if a.steps:
        c["steps"] = a.steps
    model = model_dir(size, a)
    tok = os.path.join(model, "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=tok)
    text = make_text(sp, c["seq"])
    full = check_ids(a, tok, text, sp, c["seq"])
    data = os.path.join(a.scratch, f"data_{size}.jsonl")
    with open(data, "w") as f:
        for _ in range(c["batch"]):
            f.write(json.dumps({"text": text}) + "\n")
    ref_cmd = [a.python, os.path.join(HERE, "torch_reference.py"), "train", "--model", model, "--tokenizer", tok,
               "--data", data, "--seq-len", str(c["seq"]), "--batch", str(c["batch"]), "--steps", str(c["steps"]),
               "--lr", str(a.lr), "--lora-r", "16", "--lora-alpha", "32", "--seed", "42", "--threads", str(a.threads)]
    runs = {"affinage": [], "torch": []}
    for k in range(a.rounds):
        out = os.path.join(a.scratch, f"run_{size}_{k}")
        recipe = os.path.join(a.scratch, f"recipe_{size}_{k}.json")
        write_recipe(recipe, size, model, data, out, a, c)
        subprocess.run(["rm", "-rf", out], check=True)
        cmd = [a.affinage, "run", recipe]
        wall, rss, _, load, cpu = run_child(cmd, env, os.path.join(a.scratch, f"log_{size}_aff_{k}"))
        steps = read_affinage_metrics(out)
        with open(os.path.join(out, "data_stats.json")) as f:
            st = json.load(f)["train"]
        if st["tokens"] != c["batch"] * c["seq"] or st["truncated_tokens"] != c["batch"] * (len(full) - c["seq"]):
            die(f"affinage built other rows than expected: data_stats {st}, expected {c['batch']} rows of "
                f"{c['seq']} cut from {len(full)} tokens")
        runs["affinage"].append({"wall": wall, "cpu": cpu, "rss": rss, "load": load, "steps": steps, "cmd": cmd})
        print(f"  {size} round {k + 1}: affinage {wall:.1f} s, {steady(steps):.1f} tok/s, load {load:.1f}",
              file=sys.stderr)
        wall, rss, stdout, load, cpu = run_child(ref_cmd, env, os.path.join(a.scratch, f"log_{size}_torch_{k}"))
        j = json.loads(stdout.strip().splitlines()[-1])
        if j["first_row"] != full[: c["seq"]]:
            die(f"{size}: the reference trained on other ids than affinage's row construction")
        runs["torch"].append({"wall": wall, "cpu": cpu, "rss": rss, "load": load, "steps": j["steps"], "cmd": ref_cmd,
                              "self_rss": j["peak_rss_mib"], "load_s": j["load_s"]})
        print(f"  {size} round {k + 1}: torch    {wall:.1f} s, {steady(j['steps']):.1f} tok/s, load {load:.1f}",
              file=sys.stderr)
    results["train"][size] = {"config": c, "runs": runs}


def compare_generate(size, a, env, results):
    c = SIZES[size]
    n = a.gen_tokens or c["gen"]
    model = model_dir(size, a)
    tok = os.path.join(model, "tokenizer.model")
    runs = {"affinage": {n: [], 1: []}, "torch": {n: [], 1: []}}
    for k in range(a.rounds):
        for m in (n, 1):
            acmd = [a.affinage, "generate", "--model", model, "--prompt", c["prompt"], "--max-new-tokens", str(m),
                    "--temperature", "0", "--dtype", "f32", "--threads", str(a.threads), "--json"]
            wall, rss, out, load, cpu = run_child(acmd, env, os.path.join(a.scratch, f"log_gen_{size}_aff_{m}_{k}"))
            runs["affinage"][m].append({"wall": wall, "cpu": cpu, "rss": rss, "load": load, "ids": json.loads(out)["token_ids"],
                                        "cmd": acmd})
            tcmd = [a.python, os.path.join(HERE, "torch_reference.py"), "generate", "--model", model,
                    "--tokenizer", tok, "--prompt", c["prompt"], "--max-new-tokens", str(m), "--threads", str(a.threads)]
            wall, rss, out, load, cpu = run_child(tcmd, env, os.path.join(a.scratch, f"log_gen_{size}_torch_{m}_{k}"))
            j = json.loads(out.strip().splitlines()[-1])
            runs["torch"][m].append({"wall": wall, "cpu": cpu, "rss": rss, "load": load, "ids": j["token_ids"], "cmd": tcmd,
                                     "decode_tokens_per_s": j["decode_tokens_per_s"], "prefill_s": j["prefill_s"]})
        print(f"  generate {size} round {k + 1}: affinage {runs['affinage'][n][-1]['wall']:.1f} s, "
              f"torch {runs['torch'][n][-1]['wall']:.1f} s", file=sys.stderr)
    results["generate"][size] = {"new_tokens": n, "runs": {s: {str(m): v for m, v in r.items()} for s, r in runs.items()}}


def med(xs):
    return statistics.median(xs)


def report_train(results):
    bad = []
    print("\n### Training: LoRA r16 alpha 32 on all linears, f32, AdamW (medians over rounds)\n")
    print("| model | B x T, steps | tok/s affinage / PyTorch | ratio | ratio per round | best tok/s affinage / PyTorch "
          "(ratio) | wall s affinage / PyTorch (ratio) | CPU s affinage / PyTorch | step-0 loss affinage / PyTorch, "
          "|diff| | max |loss diff| later steps | peak RSS MiB affinage / PyTorch | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, r in results["train"].items():
        c, A, T = r["config"], r["runs"]["affinage"], r["runs"]["torch"]
        ta, tt = med([steady(x["steps"]) for x in A]), med([steady(x["steps"]) for x in T])
        wa, wt = med([x["wall"] for x in A]), med([x["wall"] for x in T])
        ca, ct = med([x["cpu"] for x in A]), med([x["cpu"] for x in T])
        la, lt = A[0]["steps"][0]["loss"], T[0]["steps"][0]["loss"]
        d0 = max(abs(x["steps"][0]["loss"] - y["steps"][0]["loss"]) for x in A for y in T)
        dl = max(abs(p["loss"] - q["loss"]) for x, y in zip(A, T) for p, q in zip(x["steps"][1:], y["steps"][1:]))
        loads = [x["load"] for x in A + T]
        per_round = ", ".join(f"{steady(x['steps']) / steady(y['steps']):.2f}" for x, y in zip(A, T))
        ba, bt = max(steady(x["steps"]) for x in A), max(steady(x["steps"]) for x in T)
        print(f"| {size} | {c['batch']}x{c['seq']}, {c['steps']} | {ta:,.1f} / {tt:,.1f} | {ta / tt:.2f} | {per_round} "
              f"| {ba:,.1f} / {bt:,.1f} ({ba / bt:.2f}) "
              f"| {wa:.1f} / {wt:.1f} ({wa / wt:.2f}) | {ca:.1f} / {ct:.1f} | {la:.6f} / {lt:.6f}, {d0:.1e} | {dl:.1e} "
              f"| {med([x['rss'] for x in A]):,.0f} / {med([x['rss'] for x in T]):,.0f} "
              f"| {min(loads):.1f}-{max(loads):.1f} |")
        if not d0 <= TOL:
            bad.append(f"{size}: step-0 loss differs by {d0:.3g} (> {TOL:g})")
    return bad


def first_divergence(x, y):
    for i, (p, q) in enumerate(zip(x, y)):
        if p != q:
            return i
    return None if len(x) == len(y) else min(len(x), len(y))


def report_generate(results):
    if not results["generate"]:
        return
    print("\n### Batch-1 greedy generation with a KV cache, f32 (medians over rounds)\n")
    print("| model | new tokens | affinage tok/s | PyTorch tok/s | affinage / PyTorch | PyTorch in-process decode tok/s "
          "| ids | wall s N / 1 token affinage | wall s N / 1 token PyTorch | peak RSS MiB affinage / PyTorch | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, r in results["generate"].items():
        n = str(r["new_tokens"])
        A, T = r["runs"]["affinage"], r["runs"]["torch"]
        ia, it = A[n][0]["ids"], T[n][0]["ids"]
        div = first_divergence(ia, it)
        same = "same" if div is None else f"differ from new token {div} (affinage {ia[div:div + 3]}, PyTorch {it[div:div + 3]})"
        got = len(ia)

        def rate(runs):
            wn, w1 = med([x["wall"] for x in runs[n]]), med([x["wall"] for x in runs["1"]])
            return (got - 1) / (wn - w1) if wn > w1 and got > 1 else float("nan"), wn, w1

        ra, wan, wa1 = rate(A)
        rt, wtn, wt1 = rate(T)
        loads = [x["load"] for m in (n, "1") for x in A[m] + T[m]]
        print(f"| {size} | {got} | {ra:,.1f} | {rt:,.1f} | {ra / rt:.2f} | {med([x['decode_tokens_per_s'] for x in T[n]]):,.1f} "
              f"| {same} | {wan:.2f} / {wa1:.2f} | {wtn:.2f} / {wt1:.2f} "
              f"| {med([x['rss'] for x in A[n]]):,.0f} / {med([x['rss'] for x in T[n]]):,.0f} | {min(loads):.1f}-{max(loads):.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="stories260k,100m,7b2")
    ap.add_argument("--gen-sizes", default="stories260k,100m", help="sizes for the generation comparison ('' = none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="training steps (0 = the size's default)")
    ap.add_argument("--gen-tokens", type=int, default=0, help="new tokens (0 = the size's default)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--openblas-threads", type=int, default=0, help="set OPENBLAS_NUM_THREADS for both (0 = leave)")
    ap.add_argument("--affinage", default=os.path.join(ROOT, "build/affinage"))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--scratch", default=os.path.join(ROOT, "runs/torch_baseline"))
    ap.add_argument("--json", help="also write every run's raw figures here")
    ap.add_argument("--report", help="print the tables of a --json file written before, run nothing")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            results = json.load(f)
        print(f"threads {results['threads']}, env {results['env']}")
        bad = report_train(results)
        report_generate(results)
        return 1 if bad else 0
    a.affinage = os.path.abspath(a.affinage)
    os.makedirs(a.scratch, exist_ok=True)
    a.scratch = os.path.abspath(a.scratch)
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    if a.openblas_threads:
        env["OPENBLAS_NUM_THREADS"] = str(a.openblas_threads)
    results = {"train": {}, "generate": {}, "threads": a.threads,
               "env": {k: env.get(k) for k in ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}
    for size in [s for s in a.sizes.split(",") if s]:
        compare_train(size, a, env, results)
    for size in [s for s in a.gen_sizes.split(",") if s]:
        compare_generate(size, a, env, results)
    print(f"threads {a.threads}, env {results['env']}, rounds {a.rounds} (A B A B), lr {a.lr}")
    bad = report_train(results)
    report_generate(results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    for b in bad:
        print(f"compare_torch: FAIL: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
