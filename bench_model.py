"""Benchmark model.py on this machine: training throughput against the machine's matmul speed, and
batched sampling with and without the KV cache.

    python bench_model.py                 # nano and tiny (about 2 minutes on 2 CPU cores)
    python bench_model.py --all           # also "small" (meant for a GPU)
    python bench_model.py --presets nano --train-steps 5

What it prints, per preset:
1. training tokens/s: forward + backward + AdamW step on a (batch_size, seq_len) batch of random tokens;
2. model FLOPs per token = 6 N + 12 L C T: N = weights used in matmuls (every Linear, lm_head included;
   the embedding lookup is not a matmul), 2 N per token forward and 4 N backward; 12 L C T is the
   attention scores and weighted sum (q k^T and att v: 2 T C each forward, x3 with backward), counting
   the full T x T matrix as in the PaLM paper (appendix B), though causal masking could skip half;
3. achieved training FLOP/s as a fraction of a big float32 matmul's measured FLOP/s (an MFU-like ratio
   against what this machine really does, not against a datasheet);
4. sampling tokens/s for n_prompts ragged prompts x new_tokens new tokens, with the cache and with
   full recomputation, and their ratio.
"""
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import config_from_args, get_device
from model import GPT, GPTConfig, generate


@dataclass
class BenchConfig:
    presets: str = "nano,tiny"      # comma-separated model presets to benchmark (model.PRESETS)
    all: bool = False               # also benchmark "small" (slow on CPU)
    batch_size: int = 16            # training rows per step
    seq_len: int = 256              # training tokens per row
    train_steps: int = 3            # timed training steps (after one untimed warm-up step)
    n_prompts: int = 64             # prompts sampled together in one batch
    new_tokens: int = 128           # tokens generated per prompt
    prompt_len: int = 32            # longest prompt; prompts are ragged, between half this and this
    no_cache_presets: str = "nano"  # presets also timed WITHOUT the cache (slow: O(T^2) per sequence)
    matmul_size: int = 2048         # side of the square float32 matmul that measures the machine
    device: str = ""                # "" = auto (cuda, mps, cpu)
    threads: int = 1                # CPU threads for torch (0 = one per core; 1 is steadier on a shared CPU)
    seed: int = 0                   # seed for weights and tokens


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops_per_s(n: int, device, reps: int = 5) -> float:
    """FLOP/s of an n x n float32 matmul (2 n^3 FLOPs each): the machine's practical peak."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def flops_per_token(model: GPT, seq_len: int) -> int:
    """6 N + 12 L C T (see the module docstring)."""
    c = model.config
    n_matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * n_matmul + 12 * c.n_layer * c.n_embd * seq_len


def bench_train(model: GPT, cfg: BenchConfig, device) -> float:
    """Training tokens/s: forward + backward + AdamW step."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (cfg.batch_size, cfg.seq_len + 1), device=device)  # (B, T+1)

    def step():
        logits = model(x[:, :-1])                                            # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocations, kernel selection
    sync(device)
    t0 = time.perf_counter()
    for _ in range(cfg.train_steps):
        step()
    sync(device)
    return cfg.batch_size * cfg.seq_len * cfg.train_steps / (time.perf_counter() - t0)


def bench_sample(model: GPT, cfg: BenchConfig, device, use_cache: bool) -> float:
    """Generated tokens/s for n_prompts ragged prompts x new_tokens (no stop tokens: every row runs)."""
    g = torch.Generator().manual_seed(cfg.seed)
    lengths = torch.randint(cfg.prompt_len // 2, cfg.prompt_len + 1, (cfg.n_prompts,), generator=g)
    prompts = [torch.randint(0, 256, (int(n),), generator=g).tolist() for n in lengths]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    generate(model, prompts[:2], 2, use_cache=use_cache, generator=gen)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    new, _ = generate(model, prompts, cfg.new_tokens, temperature=1.0, use_cache=use_cache, generator=gen)
    sync(device)
    return new.numel() / (time.perf_counter() - t0)


def main(argv=None):
    cfg = config_from_args(BenchConfig, argv, description=__doc__.split("\n")[0])
    device = get_device(cfg.device or None)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    presets = [p for p in cfg.presets.split(",") if p]
    if cfg.all and "small" not in presets:
        presets.append("small")
    no_cache = set(cfg.no_cache_presets.split(","))
    peak = matmul_flops_per_s(cfg.matmul_size, device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"float32 matmul {cfg.matmul_size}^3: {peak / 1e9:.1f} GFLOP/s (the reference for 'fraction')")
    print(f"training batch {cfg.batch_size}x{cfg.seq_len}; sampling {cfg.n_prompts} prompts "
          f"({cfg.prompt_len // 2}-{cfg.prompt_len} tokens) x {cfg.new_tokens} new tokens, temperature 1")
    for name in presets:
        torch.manual_seed(cfg.seed)
        max_len = max(cfg.seq_len, cfg.prompt_len + cfg.new_tokens)
        model = GPT(GPTConfig.from_preset(name, max_seq_len=max_len)).to(device)
        fpt = flops_per_token(model, cfg.seq_len)
        train_tps = bench_train(model, cfg, device)
        print(f"--- {name}: {model.num_params() / 1e6:.2f}M params, {fpt / 1e6:.2f} MFLOP/token (6N + 12LCT)")
        print(f"train: {train_tps:,.0f} tokens/s, {train_tps * fpt / 1e9:.1f} GFLOP/s = "
              f"{train_tps * fpt / peak:.1%} of matmul peak")
        cached = bench_sample(model, cfg, device, use_cache=True)
        line = f"sample: KV cache {cached:,.0f} tokens/s"
        if name in no_cache:
            uncached = bench_sample(model, cfg, device, use_cache=False)
            line += f", no cache {uncached:,.0f} tokens/s, ratio {cached / uncached:.1f}x"
        print(line)


if __name__ == "__main__":
    main()
