#!/usr/bin/env python3
"""Hugging Face parity of our logits: loads a model folder + PEFT adapter with transformers + peft (fp32, CPU)
and compares their logits with the ones build/bench_logits wrote for the same token ids, with the adapter on and
off. For the GPU machine's check (bench/gpu_check.sh), where transformers and peft are installed; the product
itself never needs Python.

Usage: python3 bench/peft_compare.py --model models/stories260K --adapter RUN/adapter --ours ours.safetensors
Prints one line with the worst |difference| and exits 1 when it is over --tol."""
import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder (config.json + safetensors)")
    ap.add_argument("--adapter", required=True, help="PEFT adapter folder written by affinage")
    ap.add_argument("--ours", required=True, help="safetensors from build/bench_logits (input_ids, logits, logits_base)")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest |difference| of fp32 logits that passes")
    a = ap.parse_args()

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ours = load_file(a.ours)
    ids = ours["input_ids"].to(torch.long)
    try:  # transformers >= 4.56 names it dtype; older ones torch_dtype
        base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    except TypeError:
        base = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, a.adapter)
    model.eval()
    with torch.no_grad():
        theirs = model(input_ids=ids).logits.float()
        with model.disable_adapter():
            theirs_base = model(input_ids=ids).logits.float()

    if theirs.shape != ours["logits"].shape:
        print(f"peft_compare: shape mismatch: ours {tuple(ours['logits'].shape)}, HF {tuple(theirs.shape)}")
        return 1
    d_adapter = (theirs - ours["logits"]).abs().max().item()
    d_base = (theirs_base - ours["logits_base"]).abs().max().item()
    effect = (theirs - theirs_base).abs().max().item()
    ok = d_adapter <= a.tol and d_base <= a.tol and effect > 10 * a.tol
    print(f"peft_compare: {ids.shape[1]} tokens; max |ours - transformers+peft| logits: with adapter {d_adapter:.3g}, "
          f"base {d_base:.3g} (tol {a.tol:g}); adapter effect {effect:.3g}; "
          f"torch {torch.__version__}; {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
