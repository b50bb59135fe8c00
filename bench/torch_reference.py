#!/usr/bin/python3
"""PyTorch-eager reference for bench/compare_torch.py: the step a CPU user runs instead of affinage.

Hugging Face transformers' Llama/Mistral eager code path, written out (transformers is not packaged in Debian):
fp32 RMSNorm, rotate-half RoPE, repeat_kv, eager attention with an additive causal mask and an fp32 softmax,
SwiGLU MLP, logits cast to fp32 and the shifted cross-entropy; PEFT's LoRA layer on all seven linears
(result = base(x) + lora_B(lora_A(dropout(x))) * scaling, dropout 0 = identity; A Kaiming-uniform, B zero);
torch.optim.AdamW on the adapter weights, clip_grad_norm_, the cosine schedule without warmup - the
hyperparameters of affinage's recipe defaults. Loading is the lean form of from_pretrained
(low_cpu_mem_usage): modules built without initialisation, weights copied from the mmapped safetensors.

Modes (one JSON line on stdout; progress on stderr):
  train     N steps on the rows affinage builds from a JSONL of {"text"} rows (see rows_from_jsonl)
  generate  batch-1 greedy decoding with a KV cache (HF's: past k/v concatenated, one token per forward)
  rows      print the token rows only (to check them against affinage's tokenizer)

A benchmark tool only: affinage never runs Python. Needs Debian's python3-torch, python3-numpy,
python3-sentencepiece (run it with /usr/bin/python3)."""
import argparse
import json
import math
import mmap
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------- loading

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    """{name: torch tensor (owned copy, f32)} from one safetensors file: u64 LE header length, JSON header,
    raw little-endian data. Every offset is checked against the file size."""
    out = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        size = len(mm)
        if size < 8:
            sys.exit(f"{path}: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", mm[:8])
        if 8 + n > size:
            sys.exit(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
        header = json.loads(bytes(mm[8:8 + n]))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dt = info["dtype"]
            if dt not in ST_DTYPES:
                sys.exit(f"{path}: tensor '{name}' has dtype {dt}; this reference reads F32, F16, BF16")
            b, e = info["data_offsets"]
            count = int(np.prod(info["shape"])) if info["shape"] else 1
            if not (0 <= b <= e and 8 + n + e <= size and e - b == count * np.dtype(ST_DTYPES[dt]).itemsize):
                sys.exit(f"{path}: tensor '{name}' offsets {b}..{e} do not fit its shape or the file")
            arr = np.frombuffer(mm, dtype=ST_DTYPES[dt], count=count, offset=8 + n + b).reshape(info["shape"])
            if dt == "BF16":  # bf16 is the top half of an f32
                t = torch.from_numpy(arr.astype(np.uint32) << 16).view(torch.float32)
            else:
                t = torch.from_numpy(arr.astype(np.float32))  # astype copies: nothing points into the map
            out[name] = t
            del arr
    return out


# ---------------------------------------------------------------------------------------------- the model
# Names follow transformers' modeling_llama.py; shapes: B batch, T tokens, D hidden, H heads, d head_dim.

def linear(i, o):
    return nn.utils.skip_init(nn.Linear, i, o, bias=False)  # weights come from the file


class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def rotary_cos_sin(position_ids, head_dim, theta, dtype):
    """LlamaRotaryEmbedding.forward: [B, T, d] cos and sin, computed once per forward."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    freqs = (inv_freq_expanded @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_heads, self.num_key_value_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.num_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        h, d = c["hidden_size"], self.head_dim
        self.q_proj = linear(h, self.num_heads * d)
        self.k_proj = linear(h, self.num_key_value_heads * d)
        self.v_proj = linear(h, self.num_key_value_heads * d)
        self.o_proj = linear(self.num_heads * d, h)

    def forward(self, hidden_states, cos, sin, attention_mask, past=None):
        bsz, q_len, _ = hidden_states.size()
        q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past is not None:  # DynamicCache.update: concatenate along the sequence
            if past[0] is not None:
                k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
            past[0], past[1] = k, v
        k, v = repeat_kv(k, self.num_key_value_groups), repeat_kv(v, self.num_key_value_groups)
        attn_weights = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        attn_weights = attn_weights + attention_mask[:, :, :, : k.shape[-2]]
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(q.dtype)
        attn_output = torch.matmul(attn_weights, v)  # dropout 0: identity
        attn_output = attn_output.transpose(1, 2).contiguous().reshape(bsz, q_len, -1)
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj, self.up_proj, self.down_proj = linear(h, i), linear(h, i), linear(i, h)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn, self.mlp = LlamaAttention(c), LlamaMLP(c)
        self.input_layernorm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, hidden_states, cos, sin, attention_mask, past=None):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), cos, sin, attention_mask, past)
        hidden_states = residual + hidden_states
        residual = hidden_states
        return residual + self.mlp(self.post_attention_layernorm(hidden_states))


def causal_mask(q_len, kv_len, past_len, batch, dtype):
    """LlamaModel._update_causal_mask: an additive [B, 1, q, kv] mask of finfo.min above the diagonal."""
    min_dtype = torch.finfo(dtype).min
    mask = torch.full((q_len, kv_len), fill_value=min_dtype, dtype=dtype)
    if q_len != 1:
        mask = torch.triu(mask, diagonal=1)
    cache_position = torch.arange(past_len, past_len + q_len)
    mask *= torch.arange(kv_len) > cache_position.reshape(-1, 1)
    return mask[None, None, :, :].expand(batch, 1, -1, -1)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.utils.skip_init(nn.Embedding, c["vocab_size"], c["hidden_size"])
        self.model.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.model.norm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.tied = bool(c.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = linear(c["hidden_size"], c["vocab_size"])
        self.head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]

    def forward(self, input_ids, labels=None, past=None, last_only=False):
        bsz, q_len = input_ids.shape
        past_len = 0 if past is None or past[0][0] is None else past[0][0].shape[-2]
        hidden_states = self.model.embed_tokens(input_ids)
        position_ids = torch.arange(past_len, past_len + q_len).unsqueeze(0).expand(bsz, -1)
        cos, sin = rotary_cos_sin(position_ids, self.head_dim, self.config.get("rope_theta", 10000.0),
                                  hidden_states.dtype)
        mask = causal_mask(q_len, past_len + q_len, past_len, bsz, hidden_states.dtype)
        for i, layer in enumerate(self.model.layers):
            hidden_states = layer(hidden_states, cos, sin, mask, None if past is None else past[i])
        hidden_states = self.model.norm(hidden_states)
        if last_only:  # generate(): logits of the last position only (transformers' logits_to_keep=1)
            hidden_states = hidden_states[:, -1:, :]
        head = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        logits = F.linear(hidden_states, head).float()
        if labels is None:
            return logits, None
        shift_logits = logits[..., :-1, :].contiguous()
        shift_labels = labels[..., 1:].contiguous()
        loss = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                               ignore_index=-100)
        return logits, loss


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    model = LlamaForCausalLM(c)
    weights = read_safetensors(os.path.join(folder, "model.safetensors"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in weights:
                sys.exit(f"{folder}: tensor '{name}' is missing from model.safetensors")
            if tuple(weights[name].shape) != tuple(p.shape):
                sys.exit(f"{folder}: tensor '{name}' has shape {tuple(weights[name].shape)}, expected {tuple(p.shape)}")
            p.copy_(weights.pop(name))
    model.requires_grad_(False)
    return model, c


# ---------------------------------------------------------------------------------------------- PEFT's LoRA

class LoraLinear(nn.Module):
    """peft.tuners.lora.layer.Linear for one adapter in f32 (dropout 0 = nn.Identity)."""

    def __init__(self, base_layer, r, alpha):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
        self.scaling = alpha / r
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # reset_lora_parameters
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        result = self.base_layer(x)
        x = x.to(self.lora_A.weight.dtype)
        return result + self.lora_B(self.lora_A(x)) * self.scaling


TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def inject_lora(model, r, alpha, seed):
    """All seven linears of every layer, in module order, after torch.manual_seed(seed): the same Kaiming draws
    as affinage's inject_lora (lora/adapter.cpp), so both runs start from the same adapter."""
    torch.manual_seed(seed)
    params = []
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in TARGETS:
                if hasattr(parent, name):
                    lora = LoraLinear(getattr(parent, name), r, alpha)
                    setattr(parent, name, lora)
                    params += [lora.lora_A.weight, lora.lora_B.weight]
    return params


# ---------------------------------------------------------------------------------------------- data

def load_tokenizer(path):
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=path)


def rows_from_jsonl(path, sp, seq_len):
    """affinage's SFT rows for {"text"} rows without packing (datasets/sft_data.cpp): [BOS] + sp(text) + [EOS],
    cut at the right to seq_len; every next token is a target (the shifted loss over the row)."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                ids = [sp.bos_id()] + sp.encode(json.loads(line)["text"]) + [sp.eos_id()]
                rows.append(ids[:seq_len])
    if not rows:
        sys.exit(f"{path}: no rows")
    if any(len(r) != seq_len for r in rows):
        sys.exit(f"{path}: a row is shorter than seq_len {seq_len}; this benchmark needs full rows (no padding)")
    return rows


# ---------------------------------------------------------------------------------------------- modes

def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cosine_lr(lr, step, total):
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))  # warmup 0, floor 0


def train(a, t_start):
    model, _ = load_model(a.model)
    params = inject_lora(model, a.lora_r, a.lora_alpha, a.seed)
    sp = load_tokenizer(a.tokenizer)
    rows = rows_from_jsonl(a.data, sp, a.seq_len)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(1.0, s, a.steps))
    load_s = time.perf_counter() - t_start
    model.train()
    steps = []
    for step in range(a.steps):
        batch = [rows[(step * a.batch + i) % len(rows)] for i in range(a.batch)]
        t0 = time.perf_counter()
        ids = torch.tensor(batch, dtype=torch.long)
        loss = model(ids, labels=ids)[1]  # the logits are dropped here, as the Trainer drops its outputs
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_v = loss.item()
        dt = time.perf_counter() - t0
        steps.append({"step": step + 1, "loss": loss_v, "lr": lr, "grad_norm": float(gnorm), "seconds": dt,
                      "tokens": ids.numel()})
        print(f"step {step + 1}/{a.steps}  loss {loss_v:.6f}  {ids.numel() / dt:.1f} tok/s", file=sys.stderr)
    later = steps[1:]
    steady = sum(s["tokens"] for s in later) / sum(s["seconds"] for s in later) if later else float("nan")
    return {"mode": "train", "loss0": steps[0]["loss"], "tokens_per_s_steady": steady, "steps": steps,
            "load_s": load_s, "first_row": rows[0]}


def generate(a, t_start):
    model, c = load_model(a.model)
    sp = load_tokenizer(a.tokenizer)
    eos = c.get("eos_token_id", sp.eos_id())
    prompt = [sp.bos_id()] + (sp.encode(a.prompt) if a.prompt else [])
    load_s = time.perf_counter() - t_start
    model.eval()
    out, times = [], []
    with torch.no_grad():
        past = [[None, None] for _ in model.model.layers]
        t0 = time.perf_counter()
        logits, _ = model(torch.tensor([prompt]), past=past, last_only=True)
        prefill_s = time.perf_counter() - t0
        while True:
            tok = int(logits[0, -1].argmax())
            out.append(tok)
            if tok == eos or len(out) == a.max_new_tokens:
                break
            t0 = time.perf_counter()
            logits, _ = model(torch.tensor([[tok]]), past=past, last_only=True)
            times.append(time.perf_counter() - t0)
    decode = len(times) / sum(times) if times else float("nan")
    return {"mode": "generate", "prompt_ids": prompt, "token_ids": out, "text": sp.decode(out),
            "prefill_s": prefill_s, "decode_forwards": len(times), "decode_tokens_per_s": decode, "load_s": load_s}


def main():
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["train", "generate", "rows"])
    ap.add_argument("--model", help="HF model folder: config.json + model.safetensors (f32, bf16 or f16)")
    ap.add_argument("--tokenizer", required=True, help="SentencePiece tokenizer.model")
    ap.add_argument("--data", help="train/rows: JSONL of {\"text\"} rows")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32.0)
    ap.add_argument("--seed", type=int, default=42, help="torch.manual_seed before the LoRA init (recipe seed)")
    ap.add_argument("--prompt", default="", help="generate: text after BOS")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (intra-op)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "rows":
        print(json.dumps(rows_from_jsonl(a.data, load_tokenizer(a.tokenizer), a.seq_len)))
        return 0
    res = train(a, t_start) if a.mode == "train" else generate(a, t_start)
    res.update({"threads": torch.get_num_threads(), "torch": torch.__version__, "peak_rss_mib": peak_rss_mib(),
                "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
                "wall_s": time.perf_counter() - t_start})
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
