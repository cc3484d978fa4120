"""The policy network: a small Llama-style decoder-only transformer, and sampling from it.

DeepSeek-R1 starts from DeepSeek-V3-Base (a 671B mixture-of-experts model with multi-head latent
attention, described in the DeepSeek-V3 report, arXiv 2412.19437). We use the architecture of the dense models R1 was distilled into
(Llama 3, Qwen2.5; R1 paper section 2.4), at toy scale, so every stage of the recipe runs on a laptop:

    tokens -> embed_tokens -> n_layer x [ x + Attention(RMSNorm(x)) ; x + SwiGLU(RMSNorm(x)) ]
           -> RMSNorm -> lm_head -> logits

    python model.py              # print the presets and their parameter counts

Deliberate deviations from the paper:
1. Dense Llama blocks (grouped-query attention + SwiGLU), not V3's MoE + multi-head latent attention.
2. Millions of parameters, not hundreds of billions; a 520-token vocabulary (tokenizer.py: 256 bytes,
   256 BPE merges learned from the synthetic web, 8 special tokens).
3. Parameter names follow Hugging Face's Llama (q_proj, gate_proj, input_layernorm, ...), and rotary
   embeddings use HF's "rotate halves" layout, so `export_hf` / `load_hf` (a local Llama or Qwen2
   directory, read with torch alone: `read_safetensors`) are renames, not conversions.

Letters in shape comments: B batch rows, T tokens (queries), S tokens attended to (keys), V vocab,
C channels (n_embd), H query heads, K kv heads, D head dim (C // H), F MLP hidden size, L layers.
"""
import json
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from tokenizer import ANSWER_CLOSE, get_tokenizer


# ----------------------------------------------------------------------------- config


@dataclass
class GPTConfig:
    vocab_size: int = 520           # V: tokens in the vocabulary (tokenizer.py: 256 bytes + 256 merges + 8 special)
    n_layer: int = 4                # L: transformer blocks
    n_head: int = 4                 # H: query heads per attention layer
    n_kv_head: int = 2              # K: key/value heads (grouped-query attention; K = H is plain MHA)
    n_embd: int = 128               # C: width of the residual stream (channels)
    max_seq_len: int = 256          # longest sequence (prompt + completion), in tokens
    rope_theta: float = 10000.0     # rotary embedding base (RoFormer's 10000)
    norm_eps: float = 1e-5          # epsilon inside RMSNorm's square root
    tie_embeddings: bool = True     # lm_head shares its weight matrix with embed_tokens
    hidden_dim: int | None = None   # F: SwiGLU hidden size; None = 8/3 * C rounded up to a multiple of 32
    attention_bias: bool = False    # biases on the q, k, v projections (Qwen2 has them; Llama does not)
    rope_scaling: dict | None = None  # Llama 3.1+'s "llama3" RoPE frequency scaling: factor, low_freq_factor,
                                    # high_freq_factor, original_max_position_embeddings; None = plain RoPE

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("rope_theta", "norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GPTConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"GPTConfig.n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head dim n_embd // n_head = {self.head_dim} must be even for rotary embeddings "
                             f"(GPTConfig.n_embd={self.n_embd}, n_head={self.n_head})")
        if self.hidden_dim is None:  # Llama's rule: 2/3 of the usual 4*C, since SwiGLU has 3 matrices
            self.hidden_dim = 32 * math.ceil(8 * self.n_embd / 3 / 32)
        scaling_keys = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
        if self.rope_scaling is not None and set(self.rope_scaling) != scaling_keys:
            raise ValueError(f"GPTConfig.rope_scaling must have exactly the keys {sorted(scaling_keys)}, "
                             f"got {sorted(self.rope_scaling)}")
        if not isinstance(self.hidden_dim, int) or self.hidden_dim <= 0:
            raise ValueError(f"GPTConfig.hidden_dim must be a positive int or None, got {self.hidden_dim!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head  # D

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTConfig":
        """`GPTConfig.from_preset("tiny", max_seq_len=1024)`: a preset, with some fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
        return cls(**{**PRESETS[name], **overrides})


# Parameter counts are for the 520-token vocabulary (run `python model.py`).
PRESETS: dict[str, dict] = {
    "pico": dict(n_layer=3, n_head=4, n_kv_head=2, n_embd=96, max_seq_len=256),      # ~0.35M, distillation's student
    "nano": dict(n_layer=4, n_head=4, n_kv_head=2, n_embd=128, max_seq_len=256),     # ~0.8M, CPU in minutes
    "tiny": dict(n_layer=6, n_head=8, n_kv_head=4, n_embd=256, max_seq_len=512),     # ~4.5M, CPU
    "small": dict(n_layer=8, n_head=8, n_kv_head=4, n_embd=512, max_seq_len=1024,
                  hidden_dim=1536),                                                  # ~25M, one GPU
}


# ----------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019; no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (C,)

    def forward(self, x):
        # >>> exercise: rmsnorm
        x32 = x.float()                                                   # (..., C) in float32
        inv_rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return (x32 * inv_rms).type_as(x) * self.weight                   # (..., C)
        # <<< exercise: rmsnorm


def rotary_tables(head_dim: int, max_seq_len: int, theta: float):
    """cos and sin of angle pos * theta^(-2i/D) for every position and frequency i (RoFormer eq. 34),
    each frequency written twice ([f0..f_{D/2-1}, f0..f_{D/2-1}]) to match rotate_half below."""
    # >>> exercise: rotary
    inv_freq = theta ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (D/2,)
    pos = torch.arange(max_seq_len).float()                                 # (max_seq_len,)
    angles = torch.outer(pos, inv_freq)                                     # (max_seq_len, D/2)
    angles = torch.cat([angles, angles], dim=-1)                            # (max_seq_len, D)
    return angles.cos(), angles.sin()
    # <<< exercise: rotary


def llama3_rotary_tables(head_dim: int, max_seq_len: int, theta: float, scaling: dict):
    """rotary_tables with Llama 3.1's frequency scaling (rope_type "llama3", as transformers computes
    it): frequencies whose wavelength exceeds original_max_position_embeddings / low_freq_factor are
    divided by `factor`, those shorter than original_max_position_embeddings / high_freq_factor are
    kept, and the band between is interpolated smoothly. Llama 3.1-3.3 checkpoints need it."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (D/2,)
    old_len, factor = scaling["original_max_position_embeddings"], scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq                                        # (D/2,)
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)  # (D/2,) long waves stretched
    smooth = (old_len / wavelen - low) / (high - low)                       # (D/2,) 0..1 across the band
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    scaled = torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    angles = torch.outer(torch.arange(max_seq_len).float(), scaled)         # (max_seq_len, D/2)
    angles = torch.cat([angles, angles], dim=-1)                            # (max_seq_len, D)
    return angles.cos(), angles.sin()


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] on the last dim: pairs channel i with channel i + D/2 (HF's layout)."""
    x1, x2 = x.chunk(2, dim=-1)                                             # (..., D/2) each
    return torch.cat([-x2, x1], dim=-1)                                     # (..., D)


def apply_rotary(x, cos, sin):
    """Rotate each (x_i, x_{i+D/2}) pair by its position's angle. x (B, H, T, D); cos, sin (B|1, 1, T, D)."""
    return x * cos + rotate_half(x) * sin                                   # (B, H, T, D)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated for `max_len` tokens.
    `pos` counts the filled slots; GPT.forward advances it after all layers have written theirs."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)             # (L, B, K, max_len, D)
        self.v = torch.zeros(shape, device=device, dtype=dtype)             # (L, B, K, max_len, D)
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k, v):
        """Store this step's k, v (B, K, T, D) after the cached ones; return all of them (B, K, pos+T, D)."""
        # >>> exercise: kv_cache
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} tokens > max_len {self.max_len}")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]         # (B, K, S, D) each
        # <<< exercise: kv_cache

    def keep_rows(self, keep):
        """Keep only the batch rows where `keep` (B,) is True (generate() drops finished rows);
        copies the filled slots only."""
        for name in ("k", "v"):
            old = getattr(self, name)                                       # (L, B, K, max_len, D)
            new = old.new_empty((old.size(0), int(keep.sum())) + old.shape[2:])  # (L, n, K, max_len, D)
            new[:, :, :, :self.pos] = old[:, keep, :, :self.pos]
            setattr(self, name, new)


class Attention(nn.Module):
    """Causal grouped-query self-attention (Ainslie et al. 2023) with rotary position embeddings:
    H query heads share K key/value heads, query head h reads kv head h // (H / K)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        C, D = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(C, config.n_head * D, bias=config.attention_bias)
        self.k_proj = nn.Linear(C, config.n_kv_head * D, bias=config.attention_bias)
        self.v_proj = nn.Linear(C, config.n_kv_head * D, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.n_head * D, C, bias=False)

    def forward(self, x, cos, sin, mask=None, kv_cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)                 # (B, H, T, D)
        k = self.k_proj(x).view(B, T, K, D).transpose(1, 2)                 # (B, K, T, D)
        v = self.v_proj(x).view(B, T, K, D).transpose(1, 2)                 # (B, K, T, D)
        q = apply_rotary(q, cos, sin)                                       # (B, H, T, D)
        k = apply_rotary(k, cos, sin)                                       # (B, K, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)                             # (B, K, S, D) each
        # >>> exercise: attention
        # softmax(q k^T / sqrt(D) + mask) v; mask None = plain causal (or, for one new token, see all S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                           enable_gqa=True)                 # (B, H, T, D)
        # <<< exercise: attention
        y = y.transpose(1, 2).reshape(B, T, H * D)                          # (B, T, C)
        return self.o_proj(y)                                               # (B, T, C)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down( silu(gate(x)) * up(x) )."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.hidden_dim, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.hidden_dim, bias=False)
        self.down_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=False)

    def forward(self, x):
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)                     # (B, T, F)
        return self.down_proj(h)                                            # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, layer)  # (B, T, C)
        x = x + self.mlp(self.post_attention_layernorm(x))                               # (B, T, C)
        return x


# ----------------------------------------------------------------------------- the model


def autocast_for(device: torch.device):
    """Mixed precision where it pays: on CUDA, bf16 autocast of the blocks (matmuls and attention in
    bfloat16 on tensor cores; weights, optimizer state, RMSNorm, the final norm and lm_head, so the
    logits and every log-prob, stay float32). Off on
    CPUs and MPS: float32 throughout (bf16 autocast made a nano training step only 12% faster on the
    2-core dev box, docs/LOG.md, and many laptop CPUs have no bf16 units). GPT.cuda_bf16 = False
    turns it off on CUDA too."""
    if device.type == "cuda" and GPT.cuda_bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class GPT(nn.Module):
    cuda_bf16 = True  # autocast_for: bf16 autocast when the input is on a CUDA device

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight  # one (V, C) matrix reads and writes tokens
        if config.rope_scaling:
            cos, sin = llama3_rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling)
        else:
            cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)            # (max_seq_len, D)
        self.register_buffer("rope_sin", sin, persistent=False)            # (max_seq_len, D)
        # init: N(0, 0.02) everywhere; the two projections that write into the residual stream are
        # scaled by 1/sqrt(2 L) so the stream's variance does not grow with depth (GPT-2 paper, 2.3).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                residual_out = name.endswith(("o_proj.weight", "down_proj.weight"))
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer) if residual_out else 0.02)

    def forward(self, idx, positions=None, mask=None, kv_cache: KVCache | None = None, last_only: bool = False):
        """idx (B, T) token ids -> logits (B, T, V), float32.
        positions (B, T): rotary position of each token; default 0..T-1 (after any cached tokens).
        mask (B, 1, T, S) bool, True = may attend; default causal. generate() passes both for ragged
        batches. kv_cache: keys/values of earlier tokens; this call appends T more. last_only: the
        logits of the last position only, (B, 1, V): what sampling needs (a prompt's B x T x V
        logits would be 10 GiB for 128 prompts of 160 tokens in a 151,936-token vocabulary).
        On CUDA the blocks run under bf16 autocast (autocast_for); the final norm and lm_head do not."""
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.pos
        if positions is None:
            if start + T > self.config.max_seq_len:
                raise ValueError(f"sequence of {start + T} tokens > max_seq_len {self.config.max_seq_len}")
            positions = torch.arange(start, start + T, device=idx.device)[None]  # (1, T)
        if mask is None and start > 0 and T > 1:  # causal over cached + new tokens
            q_col = torch.arange(start, start + T, device=idx.device)[:, None]  # (T, 1)
            mask = torch.arange(start + T, device=idx.device)[None] <= q_col     # (T, S)
        cos = self.rope_cos[positions].unsqueeze(1)                         # (B|1, 1, T, D)
        sin = self.rope_sin[positions].unsqueeze(1)                         # (B|1, 1, T, D)
        with autocast_for(idx.device):
            x = self.embed_tokens(idx)                                      # (B, T, C)
            for i, block in enumerate(self.layers):
                x = block(x, cos, sin, mask, kv_cache, i)                   # (B, T, C)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.norm((x[:, -1:] if last_only else x).float())             # (B, T or 1, C) float32
        return self.lm_head(x).float()  # (B, T, V); .float() for a caller's own autocast, else a no-op

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module's, but a state dict from a differently shaped model names the config field."""
        check_config_match(self.config, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix counts once


def check_config_match(config: GPTConfig, state_dict) -> None:
    """Raise a ValueError naming each GPTConfig field the weights' shapes disagree with."""
    found = {}
    if "embed_tokens.weight" in state_dict:
        found["vocab_size"], found["n_embd"] = state_dict["embed_tokens.weight"].shape
    layer_ids = {int(k.split(".")[1]) for k in state_dict if k.startswith("layers.")}
    if layer_ids:
        found["n_layer"] = max(layer_ids) + 1
    if "layers.0.mlp.gate_proj.weight" in state_dict:
        found["hidden_dim"] = state_dict["layers.0.mlp.gate_proj.weight"].shape[0]
    if "layers.0.self_attn.k_proj.weight" in state_dict and found.get("n_embd", config.n_embd) == config.n_embd:
        found["n_kv_head"] = state_dict["layers.0.self_attn.k_proj.weight"].shape[0] // config.head_dim
    diffs = [f"{k}: weights have {v}, config has {getattr(config, k)}"
             for k, v in found.items() if v != getattr(config, k)]
    if diffs:
        raise ValueError("state dict does not match GPTConfig: " + "; ".join(diffs))


# ----------------------------------------------------------------------------- log-probs


def token_logprobs(model, tokens, temperature: float = 1.0, entropy: bool = False):
    """log p(tokens[:, t+1] | tokens[:, :t+1]) for t = 0..T-2, shape (B, T-1), under the policy
    softmax(logits / temperature): the quantity behind SFT's loss and GRPO's ratio pi_theta / pi_old
    and KL to pi_ref (docs/PAPER.md). Rollouts sampled at temperature T come from the tempered
    policy, so GRPO scores them at the same T (as verl and nano-aha-moment do).
    Equals log_softmax(logits).gather(targets) without materialising a second (B, T-1, V) tensor
    (entropy=True does: the probabilities, under no_grad). entropy=True also returns the policy's entropy at each position, H = logsumexp(z) - sum_v p_v z_v
    (nats, no gradient): (logp, H), both (B, T-1). A collapsing policy shows it as H -> 0."""
    if tokens.dim() != 2 or tokens.size(1) < 2:
        raise ValueError(f"tokens must have shape (B, T) with T >= 2, got {tuple(tokens.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # >>> exercise: token_logprobs
    logits = model(tokens[:, :-1]).float() / temperature                    # (B, T-1, V)
    targets = tokens[:, 1:].unsqueeze(-1)                                   # (B, T-1, 1)
    target_logits = logits.gather(-1, targets).squeeze(-1)                  # (B, T-1)
    log_norm = torch.logsumexp(logits, dim=-1)                              # (B, T-1)
    logp = target_logits - log_norm                                         # (B, T-1)
    if not entropy:
        return logp
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)                               # (B, T-1, V)
        H = log_norm - (probs * logits).sum(dim=-1)                         # (B, T-1)
    return logp, H
    # <<< exercise: token_logprobs


# ----------------------------------------------------------------------------- sampling


def sample_next(logits, temperature: float, top_k=None, top_p=None, generator=None, noise=None):
    """logits (B, V) -> next token ids (B,). temperature 0 = greedy; top_k keeps the k likeliest;
    top_p keeps the smallest set of likeliest tokens whose probability reaches p (nucleus sampling).
    The draw is the exponential race: with E_i ~ Exp(1) independent, argmax_i p_i / E_i is token i
    with probability p_i (what torch.multinomial does for one sample, bit for bit). `noise` (B, V)
    gives the E's; None draws them from `generator`. generate() draws them for the whole batch, so
    a row's draw does not depend on which other rows are still running."""
    if temperature == 0:
        return logits.argmax(dim=-1)                                        # (B,)
    logits = logits / temperature                                           # (B, V)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]              # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))            # (B, V)
    if top_p is not None and top_p < 1.0:
        # >>> exercise: top_p
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
        probs = sorted_logits.softmax(dim=-1)                               # (B, V)
        mass_before = probs.cumsum(dim=-1) - probs                          # (B, V) mass of likelier tokens
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))  # keeps >= 1 token
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)  # (B, V)
        # <<< exercise: top_p
    probs = logits.softmax(dim=-1)                                          # (B, V)
    if noise is None:
        noise = torch.empty_like(probs).exponential_(1, generator=generator)  # (B, V) E ~ Exp(1)
    return (probs / noise).argmax(dim=-1)                                   # (B,)


def _check_generate_args(config: GPTConfig, prompts, max_new_tokens, temperature, top_k, top_p,
                         stop_tokens, pad_id):
    V = config.vocab_size
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    for i, p in enumerate(prompts):
        if isinstance(p, int) or (torch.is_tensor(p) and p.dim() != 1):
            raise ValueError(f"prompts must be a list of token-id lists; prompts[{i}] is {p!r}")
        if len(p) == 0:
            raise ValueError(f"prompts[{i}] is empty: every prompt needs at least one token")
        if len(p) > config.max_seq_len:
            raise ValueError(f"prompts[{i}] has {len(p)} tokens > max_seq_len {config.max_seq_len}")
        if min(p) < 0 or max(p) >= V:
            raise ValueError(f"prompts[{i}] has token ids outside [0, vocab_size={V})")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > config.max_seq_len:
        raise ValueError(f"longest prompt ({longest}) + max_new_tokens ({max_new_tokens}) = "
                         f"{longest + max_new_tokens} tokens > max_seq_len {config.max_seq_len}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    if any(not 0 <= int(s) < V for s in stop_tokens):
        raise ValueError(f"stop_tokens {list(stop_tokens)} has ids outside [0, vocab_size={V})")
    if not 0 <= pad_id < V:
        raise ValueError(f"pad_id {pad_id} is outside [0, vocab_size={V})")


@torch.no_grad()
def generate(model, prompts, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, stop_tokens=(), generator: torch.Generator | None = None,
             use_cache: bool = True, pad_id: int = 0, return_logprobs: bool = False, compact: bool = True):
    """Sample continuations of a batch of prompts (lists of token ids, of any lengths).

    Returns (new_tokens (B, max_new_tokens) long, lengths (B,) long). Row b generated
    new_tokens[b, :lengths[b]]; if it stopped early, that INCLUDES the stop token that ended it, and the
    rest of the row is pad_id. Rows stop independently; the loop ends when all have stopped.
    With return_logprobs, a third (B, max_new_tokens) float tensor: the log-prob of each sampled
    token under softmax(logits / temperature) (the tempered policy before top-k/top-p truncation,
    which is what token_logprobs(..., temperature) scores; temperature 0 scores at 1), 0 after a
    row's end. No command asks for them (GRPO scores its rollouts with token_logprobs); they are how
    tests/test_model.py checks that the sampler and the trainer agree on the policy's log-probs.

    Ragged batches: prompts are left-padded to the longest one, P tokens. Each row's rotary positions
    start at 0 at its first real token, and the mask hides pad keys, so a prompt samples the same
    continuation alone or in any batch. With use_cache, the prompt is run once (prefill) and then one
    token per step through the KVCache; use_cache=False recomputes the whole sequence every step
    (slow; the reference the cache is tested against).

    compact: rows that have stopped leave the batch (and the cache), so the compute goes to the rows
    still running. RL rollouts have very uneven lengths (20 to 250 tokens), and without this every
    finished row rides along until the longest one ends. The random draws are made for every row of
    the original batch either way (sample_next's noise), so compact=True and compact=False sample
    the same tokens. Runs without autograd; restores model.train().
    """
    config = model.config
    _check_generate_args(config, prompts, max_new_tokens, temperature, top_k, top_p, stop_tokens, pad_id)
    device = next(model.parameters()).device
    B, P, V = len(prompts), max(len(p) for p in prompts), config.vocab_size
    S_max = P + max_new_tokens
    lens = torch.tensor([len(p) for p in prompts], device=device)          # (B,)
    n_pad = P - lens                                                        # (B,) left padding per row
    tokens = torch.full((B, S_max), pad_id, dtype=torch.long, device=device)  # (B, S_max)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p):P] = torch.as_tensor(p, dtype=torch.long, device=device)
    col = torch.arange(S_max, device=device)                                # (S_max,)
    positions = (col[None] - n_pad[:, None]).clamp(min=0)                   # (B, S_max)
    is_real = col[None] >= n_pad[:, None]                                   # (B, S_max) False at pads

    def attn_mask(rows, q_start, q_end):
        """May query column i (q_start <= i < q_end) of each row in `rows` attend key column j
        (j < q_end)? (n, 1, Tq, S)"""
        q = torch.arange(q_start, q_end, device=device)[:, None]            # (Tq, 1)
        k = torch.arange(q_end, device=device)[None]                        # (1, S)
        allowed = (k <= q)[None] & is_real[rows, None, :q_end]              # (n, Tq, S) causal, no pad keys
        allowed = allowed | (k == q)[None]  # a pad query sees itself, so no softmax row is empty (NaN)
        return allowed.unsqueeze(1)                                         # (n, 1, Tq, S)

    stop = torch.tensor(sorted({int(s) for s in stop_tokens}), dtype=torch.long, device=device)  # (n_stop,)
    new_tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, max_new)
    new_logprobs = torch.zeros((B, max_new_tokens), device=device)         # (B, max_new)
    lengths = torch.zeros(B, dtype=torch.long, device=device)               # (B,)
    done = torch.zeros(B, dtype=torch.bool, device=device)                  # (B,)
    rows = torch.arange(B, device=device)  # the original row of each row in the batch (and the cache)
    dtype = next(model.parameters()).dtype
    cache = KVCache(config, B, S_max, device, dtype) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        cur = P  # tokens[:, :cur] is known; sample column cur
        for step in range(max_new_tokens):
            start = cur - 1 if (use_cache and step > 0) else 0  # cache: only feed the newest token
            logits = model(tokens[rows, start:cur], positions[rows, start:cur], attn_mask(rows, start, cur), cache,
                           last_only=True)                                  # (n, 1, V)
            last = logits[:, -1].float()                                    # (n, V)
            noise = None
            if temperature > 0:  # every original row's draw, running or not (see the docstring)
                noise = torch.empty((B, V), device=device).exponential_(1, generator=generator)[rows]  # (n, V)
            next_tok = sample_next(last, temperature, top_k, top_p, noise=noise)  # (n,)
            next_tok = torch.where(done[rows], pad_id, next_tok)            # (n,) finished rows: pad
            new_tokens[rows, step] = next_tok
            if return_logprobs:
                logp = torch.log_softmax(last / (temperature or 1.0), dim=-1)   # (n, V)
                picked = logp.gather(-1, next_tok[:, None]).squeeze(-1)        # (n,)
                new_logprobs[rows, step] = torch.where(done[rows], 0.0, picked)
            lengths[rows] += (~done[rows]).long()
            done[rows] |= torch.isin(next_tok, stop)
            tokens[rows, cur] = next_tok
            cur += 1
            if done.all():
                break
            running = ~done[rows]                                           # (n,)
            if compact and not running.all():  # rows that stopped leave the batch
                rows = rows[running]
                if cache is not None:
                    cache.keep_rows(running)
    finally:
        model.train(was_training)
    return (new_tokens, lengths, new_logprobs) if return_logprobs else (new_tokens, lengths)


def stop_tokens(tok) -> tuple[int, ...]:
    """The ids a completion ends at: </answer> (a token of ours) and <|endoftext|>. A real model's
    tokenizer has no </answer> token: only its end of text stops generation, and
    sample_completions cuts the completion after the text "</answer>" (cut_after_answer)."""
    if ANSWER_CLOSE in tok.special_ids:
        return tok.special_ids[ANSWER_CLOSE], tok.eot_id
    return (tok.eot_id,)


def cut_after_answer(tok, ids: list[int]) -> list[int]:
    """ids up to and including the token that completes the first "</answer>" of their bytes (all of
    them if there is none): where a completion ends when </answer> is several tokens of a real
    model's vocabulary. What follows it was sampled but is no part of the completion (never judged,
    never trained on)."""
    data, close = tok.decode_bytes(ids), ANSWER_CLOSE.encode()
    if close not in data:
        return ids
    end, n_bytes = data.index(close) + len(close), 0
    for n, i in enumerate(ids, 1):
        n_bytes += len(tok.decode_bytes([i]))
        if n_bytes >= end:
            return ids[:n]
    return ids


def completion_text(tok, ids: list[int]) -> str:
    """A completion's text: its ids decoded, and for a real model's tokenizer ended at its first
    "</answer>" (the token that completes it may spell a few more characters, e.g. ">."; they are
    trained on with the token, never judged)."""
    text = tok.decode(ids)
    if ANSWER_CLOSE in tok.special_ids or ANSWER_CLOSE not in text:
        return text
    return text[:text.index(ANSWER_CLOSE) + len(ANSWER_CLOSE)]


def ended(tok, ids: list[int]) -> bool:
    """Whether a completion ended by itself (at a stop token, or, for a real model's tokenizer, at
    the text "</answer>": cut_after_answer) rather than at its token cap."""
    if not ids:
        return False
    if ids[-1] in stop_tokens(tok):
        return True
    return ANSWER_CLOSE not in tok.special_ids and ANSWER_CLOSE.encode() in tok.decode_bytes(ids[-len(ANSWER_CLOSE):])


def sample_completions(model, tok, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
                       top_p: float | None = None, generator: torch.Generator | None = None,
                       batch_size: int = 128, progress: bool = False):
    """Sample one completion per prompt string (repeat a prompt G times for a group). Returns
    (prompt_ids, completion_ids, texts): token lists and the decoded completion texts. Sampling
    stops at </answer> or <|endoftext|>; the stop token is part of the completion (a real model's
    completion ends with the token that completes "</answer>": cut_after_answer)."""
    stop = stop_tokens(tok)
    prompt_ids = [tok.encode(p, allow_special=True) for p in prompts]
    completion_ids: list[list[int]] = []
    starts = range(0, len(prompts), batch_size)
    for s in tqdm(starts, desc="sampling", disable=not progress, leave=False):
        chunk = prompt_ids[s:s + batch_size]
        new, lengths = generate(model, chunk, max_new_tokens, temperature=temperature, top_p=top_p,
                                stop_tokens=stop, generator=generator, pad_id=tok.pad_id)
        completion_ids += [row[:n].tolist() for row, n in zip(new, lengths)]
    if ANSWER_CLOSE not in tok.special_ids:  # a real model's tokenizer: end at the text "</answer>"
        completion_ids = [cut_after_answer(tok, ids) for ids in completion_ids]
    texts = [completion_text(tok, ids) for ids in completion_ids]
    return prompt_ids, completion_ids, texts


# ----------------------------------------------------------------------------- Hugging Face export


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of one .safetensors file, with torch alone. The format: an 8-byte little-endian
    header size N; N bytes of JSON, {name: {"dtype", "shape", "data_offsets": [begin, end]}} with
    offsets into the bytes after the header (and an optional "__metadata__"); then the raw
    little-endian data. A truncated or malformed file is a ValueError naming it."""
    with open(path, "rb") as f:
        blob = bytearray(f.read())  # the tensors below are views into this one buffer: no second copy
    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    if not 0 < n <= len(blob) - 8:
        raise ValueError(f"{path}: not a safetensors file, or truncated (header of {n} bytes, file of {len(blob)})")
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError:
        raise ValueError(f"{path}: the safetensors header is not valid JSON (a truncated or corrupt file?)")
    header.pop("__metadata__", None)
    start, tensors = 8 + n, {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, which this reader does not know")
        dtype = _ST_DTYPES[info["dtype"]]
        if start + end > len(blob) or end - begin != math.prod(info["shape"]) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} lies outside the file or has the wrong size (truncated?)")
        count = (end - begin) // dtype.itemsize
        flat = torch.frombuffer(blob, dtype=dtype, count=count, offset=start + begin) if count else \
            torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def write_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Write `tensors` as one .safetensors file (read_safetensors's format; the header padded with
    spaces to a multiple of 8 bytes, as the reference writer does)."""
    names = {v: k for k, v in _ST_DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for data in chunks:
            f.write(data)


def export_hf(model: GPT, out_dir: str) -> None:
    """Write a Hugging Face checkpoint (config.json + model.safetensors) that transformers'
    `AutoModelForCausalLM.from_pretrained(out_dir)` loads: Llama, or Qwen2 when the model has
    attention biases. Our parameter names are HF's without the leading "model." and our rotary
    layout is HF's, so this is a rename. A model trained from a real one gets its tokenizer files too."""
    c = model.config
    tok = get_tokenizer()
    eos = tok.eot_id if tok.eot_id < c.vocab_size else None
    pad = tok.pad_id if tok.pad_id < c.vocab_size else None
    arch = "qwen2" if c.attention_bias else "llama"
    hf_config = {
        "architectures": ["Qwen2ForCausalLM" if c.attention_bias else "LlamaForCausalLM"], "model_type": arch,
        "vocab_size": c.vocab_size, "hidden_size": c.n_embd, "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim, "max_position_embeddings": c.max_seq_len, "rope_theta": c.rope_theta,
        "rope_scaling": {"rope_type": "llama3", **c.rope_scaling} if c.rope_scaling else None,
        "rms_norm_eps": c.norm_eps, "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": "silu", "attention_dropout": 0.0, "initializer_range": 0.02, "torch_dtype": "float32",
        "use_cache": True, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad,
        **({} if c.attention_bias else {"attention_bias": False, "mlp_bias": False}),
    }
    weights = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            if not c.tie_embeddings:  # tied: HF re-ties lm_head to embed_tokens when loading
                weights[name] = t.detach().float().cpu()
        else:
            weights["model." + name] = t.detach().float().cpu()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    write_safetensors(weights, os.path.join(out_dir, "model.safetensors"))
    if hasattr(tok, "save"):  # a model trained from a real one: its tokenizer goes with it
        tok.save(out_dir)


def hf_config_to_gpt(hf: dict, where: str) -> GPTConfig:
    """A Hugging Face config.json (Llama or Qwen2) as a GPTConfig; anything GPT cannot represent is a
    ValueError naming `where` and the field."""
    arch = hf.get("model_type")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"{where}: model_type {arch!r} is not supported (supported: llama, qwen2)")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{where}: hidden_act {hf.get('hidden_act')!r} is not supported (only silu)")
    rope = hf.get("rope_scaling") or {k: v for k, v in (hf.get("rope_parameters") or {}).items() if k != "rope_theta"}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"{where}: rope scaling {rope_type!r} is not supported (only none and Llama 3.1's 'llama3')")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    if rope_type == "llama3" and not set(keys) <= set(rope):
        raise ValueError(f"{where}: llama3 rope scaling needs {', '.join(keys)}; it has {', '.join(sorted(rope))}")
    scaling = {k: rope[k] for k in keys} if rope_type == "llama3" else None
    if hf.get("mlp_bias"):
        raise ValueError(f"{where}: mlp_bias is not supported")
    bias = arch == "qwen2" or bool(hf.get("attention_bias"))
    rope_theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    config = GPTConfig(vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"],
                       n_head=hf["num_attention_heads"],
                       n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                       n_embd=hf["hidden_size"], max_seq_len=hf["max_position_embeddings"],
                       rope_theta=float(rope_theta), norm_eps=hf["rms_norm_eps"],
                       tie_embeddings=hf.get("tie_word_embeddings", False), hidden_dim=hf["intermediate_size"],
                       attention_bias=bias, rope_scaling=scaling)
    if (hf.get("head_dim") or config.head_dim) != config.head_dim:
        raise ValueError(f"{where}: head_dim {hf['head_dim']} != hidden_size / num_attention_heads "
                         f"= {config.head_dim}; GPT needs them equal")
    return config


def hf_weights(path: str) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face model directory: model.safetensors, the shards its
    model.safetensors.index.json names, or pytorch_model.bin. A missing file names itself."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for shard in shards:
            if not os.path.exists(os.path.join(path, shard)):
                raise FileNotFoundError(f"{os.path.join(path, shard)}: a shard named by {index} is missing")
            weights.update(read_safetensors(os.path.join(path, shard)))
        return weights
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(path, name)):
            full = os.path.join(path, name)
            return read_safetensors(full) if name.endswith(".safetensors") else \
                torch.load(full, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_hf(path: str, device="cpu") -> GPT:
    """A GPT with the weights of a local Hugging Face directory (config.json + *.safetensors, one file
    or sharded with its index): Llama (SmolLM2; Llama 3.x, with its "llama3" rope scaling) or Qwen2 (q/k/v
    biases, its rope theta, tied or untied embeddings), in float32 on `device`. Everything is read
    from the directory: nothing is downloaded. A missing file, an unknown architecture or a tensor
    of the wrong shape is a ValueError / FileNotFoundError naming the file."""
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: missing (a Hugging Face model directory holds config.json "
                                f"and *.safetensors)")
    with open(config_path) as f:
        config = hf_config_to_gpt(json.load(f), config_path)
    state = {k.removeprefix("model."): v.float() for k, v in hf_weights(path).items()
             if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_embeddings and "embed_tokens.weight" in state:
        state.setdefault("lm_head.weight", state["embed_tokens.weight"])
    try:
        check_config_match(config, state)
    except ValueError as e:
        raise ValueError(f"{path}: the weights do not match config.json: {e}")
    model = GPT(config)
    expected = model.state_dict()
    for name, t in state.items():
        if name in expected and expected[name].shape != t.shape:
            raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}, config.json implies "
                             f"{tuple(expected[name].shape)}")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: weights missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    model.load_state_dict(state)
    return model.to(device)


def main():
    print(f"{'preset':<8} {'params':>10}  config")
    for name in PRESETS:
        config = GPTConfig.from_preset(name)
        print(f"{name:<8} {GPT(config).num_params():>10,}  {asdict(config)}")


if __name__ == "__main__":
    main()
