#!/usr/bin/python3
"""Writes a Hugging Face Llama/Mistral model folder with seeded random f32 weights, for bench/compare_torch.py.

Sizes (dimensions from the issue's table):
  100m  LlamaForCausalLM: hidden 768, 12 layers, 12 heads (no GQA), intermediate 2048, vocab 32000, untied head
        (LlamaConfig's default), the Mistral v1 tokenizer (tests/data/tokenizers/mistral_v1)
  7b2   MistralForCausalLM: 2 layers of Mistral-7B-v0.3 width (hidden 4096, 32 heads, 8 KV heads, intermediate
        14336, vocab 32768, rope_theta 1e6, no sliding window, untied head), the v3 tokenizer
stories260k is not made here: the benchmark uses the real bundled weights (models/stories260K).

Weights: normal(0, 0.02) for matrices and embeddings, ones for norms (as affinage's init_random), drawn with
numpy's PCG64 from --seed, written as one f32 model.safetensors by the small writer below (no safetensors
package). A benchmark tool only: affinage never runs Python.

Usage: /usr/bin/python3 bench/make_random_model.py SIZE OUT_DIR [--seed 0]"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZES = {
    "100m": dict(arch="LlamaForCausalLM", model_type="llama", hidden=768, layers=12, heads=12, kv_heads=12,
                 inter=2048, vocab=32000, rope_theta=10000.0, max_pos=2048,
                 tokenizer="tests/data/tokenizers/mistral_v1/tokenizer.model"),
    "7b2": dict(arch="MistralForCausalLM", model_type="mistral", hidden=4096, layers=2, heads=32, kv_heads=8,
                inter=14336, vocab=32768, rope_theta=1000000.0, max_pos=32768,
                tokenizer="tests/data/tokenizers/mistral_v3/tokenizer.model"),
}


def config_json(s):
    return {
        "architectures": [s["arch"]], "model_type": s["model_type"], "vocab_size": s["vocab"],
        "hidden_size": s["hidden"], "intermediate_size": s["inter"], "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"], "num_key_value_heads": s["kv_heads"],
        "head_dim": s["hidden"] // s["heads"], "max_position_embeddings": s["max_pos"], "rms_norm_eps": 1e-05,
        "rope_theta": s["rope_theta"], "rope_scaling": None, "sliding_window": None, "hidden_act": "silu",
        "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32", "use_cache": True,
    }


def tensor_shapes(s):
    """HF names and [out, in] shapes, in the order the file stores them."""
    h, d = s["hidden"], s["hidden"] // s["heads"]
    out = [("model.embed_tokens.weight", (s["vocab"], h))]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (s["heads"] * d, h)),
                (p + "self_attn.k_proj.weight", (s["kv_heads"] * d, h)),
                (p + "self_attn.v_proj.weight", (s["kv_heads"] * d, h)),
                (p + "self_attn.o_proj.weight", (h, s["heads"] * d)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (s["inter"], h)),
                (p + "mlp.up_proj.weight", (s["inter"], h)),
                (p + "mlp.down_proj.weight", (h, s["inter"]))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (s["vocab"], h))]
    return out


def write_safetensors(path, shapes, make):
    """safetensors: u64 little-endian header length, JSON header (offsets relative to the data), raw f32 LE data.
    Tensors are made one at a time by make(name, shape) so at most one is in memory."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # data 8-byte aligned, as the reference writer pads
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape in shapes:
            f.write(np.ascontiguousarray(make(name, shape), dtype="<f4").tobytes())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size", choices=sorted(SIZES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = SIZES[a.size]
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(a.seed))

    def make(name, shape):
        if "norm" in name:
            return np.ones(shape, np.float32)
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    write_safetensors(os.path.join(a.out, "model.safetensors"), tensor_shapes(s), make)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config_json(s), f, indent=2)
    shutil.copyfile(os.path.join(ROOT, s["tokenizer"]), os.path.join(a.out, "tokenizer.model"))
    n = sum(int(np.prod(sh)) for _, sh in tensor_shapes(s))
    print(f"make_random_model: {a.size} -> {a.out} ({n / 1e6:.1f}M parameters, f32, seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
