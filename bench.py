"""Benchmarks of the sampler and the trainer on this machine, each comparison a ratio of two numbers
measured in the same run.

    python bench.py                          # every section (about 6 minutes on 2 CPU cores)
    python bench.py --sections hf,rollout    # some of them
    pip install -r requirements-bench.txt    # transformers: only the `hf` section needs it

Sections:
  hf       generation, ours vs Hugging Face transformers `generate` on the SAME weights (export_hf):
           n_prompts ragged prompts x new_tokens new tokens, no stop token, greedy (the outputs must
           match, and the table says whether they do) and sampled at temperature 1.
  rollout  the RL rollout workload as it really is: --rollout-batches steps of 16 questions x 8
           samples at temperature 1, up to 256 new tokens, from a policy early in a run (--early, the
           base model) and late (--late, after R1-Zero). Useful tokens/s (tokens that belong to a completion) with finished rows
           leaving the batch (generate's default) against the old path where they ride along until
           the longest row ends (compact=False); both sample the same tokens.
  step     one GRPO step of the default run from the --late policy, broken down: rollout, reward,
           log-probs (pi_ref), update (seconds and share of the step).
  train    training tokens/s (forward + backward + AdamW) per preset, and the FLOP/s that is as a
           fraction of a big float32 matmul's measured FLOP/s on this machine (not a datasheet).
  memory   peak memory of one training step per preset: CUDA's max allocated bytes, or on a CPU
           (Linux) how far a fresh child process's peak resident set grows over its size before the
           model is built: weights, AdamW state, gradients, activations.
  compile  torch.compile against eager on the training step (nano), the opt-in --compile flag.
  gpu      estimated GPU memory of `grpo.py --init-from hf:DIR --preset gpu-24gb / gpu-80gb` per
           real model size (grpo.memory_estimate on the models' published config.json shapes;
           nothing is downloaded or allocated, so it runs anywhere in a second).

Model FLOPs per token = 6 N + 12 L C T: N = weights used in matmuls (every Linear, lm_head included;
the embedding lookup is not a matmul), 2 N per token forward and 4 N backward; 12 L C T is the
attention scores and weighted sum (q k^T and att v: 2 T C each forward, x3 with backward), counting
the full T x T matrix as in the PaLM paper (appendix B), though causal masking could skip half.
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import config_from_args, get_device, load_checkpoint, load_model, make_optimizer
from model import GPT, GPTConfig, export_hf, generate, stop_tokens

SECTIONS = ("hf", "rollout", "step", "train", "memory", "compile", "gpu")


@dataclass
class BenchConfig:
    sections: str = ",".join(SECTIONS)  # comma-separated sections to run (see above)
    presets: str = "nano,tiny"      # comma-separated model presets for hf, train, memory (model.PRESETS)
    hf_ckpt: str = "out/base"       # trained weights for the nano row of `hf` (random weights if missing or another preset)
    early: str = "out/base"         # `rollout`: a policy at the start of an RL run
    late: str = "out/grpo"          # `rollout` and `step`: a policy at the end of an RL run
    n_prompts: int = 64             # `hf`: prompts sampled together in one batch
    new_tokens: int = 128           # `hf`: tokens generated per prompt
    prompt_len: int = 32            # `hf`: longest prompt; prompts are ragged, between half this and this
    rollout_batches: int = 4        # `rollout`: RL steps' worth of questions sampled per policy
    batch_size: int = 16            # `train`, `memory`, `compile`: rows per training step
    seq_len: int = 256              # `train`, `memory`, `compile`: tokens per row
    train_steps: int = 3            # `train`, `compile`: timed steps (after untimed warm-up steps)
    matmul_size: int = 2048         # side of the square float32 matmul that measures the machine
    device: str = ""                # "" = auto (cuda, mps, cpu)
    seed: int = 0                   # seed for weights, prompts and sampling


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """(result, seconds) of fn()."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def matmul_flops_per_s(n: int, device, reps: int = 5, dtype=torch.float32) -> float:
    """FLOP/s of an n x n matmul (2 n^3 FLOPs each) in `dtype`: the machine's practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    _, dt = timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n ** 3 * reps / dt


def flops_per_token(model: GPT, seq_len: int) -> int:
    """6 N + 12 L C T (see the module docstring)."""
    c = model.config
    n_matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * n_matmul + 12 * c.n_layer * c.n_embd * seq_len


def preset_model(name: str, cfg: BenchConfig, device, max_seq_len: int) -> GPT:
    torch.manual_seed(cfg.seed)
    return GPT(GPTConfig.from_preset(name, max_seq_len=max_seq_len)).to(device)


def table(header: list[str], rows: list[list]) -> None:
    """Print a Markdown table (pastes into README.md / docs/LOG.md as it is)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:,.0f}" if isinstance(v, float) and v >= 100 else
                                f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")


# ----------------------------------------------------------------------------- hf


def bench_hf(cfg: BenchConfig, device) -> None:
    try:
        import transformers
    except ImportError:
        print("hf: skipped, transformers is not installed (pip install -r requirements-bench.txt)")
        return
    transformers.logging.set_verbosity_error()
    GPT.cuda_bf16 = False  # both sides in float32 (main turned TF32 off), so greedy outputs can match
    g = torch.Generator().manual_seed(cfg.seed)
    lengths = torch.randint(cfg.prompt_len // 2, cfg.prompt_len + 1, (cfg.n_prompts,), generator=g)
    prompts = [torch.randint(0, 256, (int(n),), generator=g).tolist() for n in lengths]
    P = max(map(len, prompts))
    pad = 0
    input_ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts], device=device)   # (B, P) left-padded
    attention_mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], device=device)
    n_new = cfg.n_prompts * cfg.new_tokens
    print(f"hf: {cfg.n_prompts} ragged prompts ({cfg.prompt_len // 2}-{cfg.prompt_len} tokens) x {cfg.new_tokens} "
          f"new tokens, no stop token; transformers {transformers.__version__}, its default attention (sdpa) and cache")
    rows = []
    for name in cfg.presets.split(","):
        model = preset_model(name, cfg, device, max(256, P + cfg.new_tokens))
        weights = "random"
        if name == "nano" and os.path.exists(os.path.join(cfg.hf_ckpt, "ckpt.pt")):
            model, _ = load_model(cfg.hf_ckpt, device)
            weights = cfg.hf_ckpt
        model.eval()
        with tempfile.TemporaryDirectory() as tmp:
            export_hf(model, tmp)
            hf = transformers.LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32).to(device).eval()
        hf.generation_config.eos_token_id = None  # no stop token on either side: every row runs new_tokens
        for mode in ("greedy", "sampled"):
            temperature = 0.0 if mode == "greedy" else 1.0
            gen_cfg = transformers.GenerationConfig(
                max_new_tokens=cfg.new_tokens, do_sample=mode == "sampled",
                temperature=1.0, top_k=0, top_p=1.0, pad_token_id=pad, eos_token_id=None, bos_token_id=None)

            def ours():
                gen = torch.Generator(device=device).manual_seed(cfg.seed)
                return generate(model, prompts, cfg.new_tokens, temperature=temperature, generator=gen)[0]

            def theirs():
                torch.manual_seed(cfg.seed)
                with torch.no_grad():
                    out = hf.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_cfg)
                return out[:, P:]

            ours(), theirs()  # warm-up: allocations, kernel selection
            a, t_ours = timed(ours, device)
            b, t_hf = timed(theirs, device)
            match = f"{(a == b).float().mean().item():.1%} of tokens" if mode == "greedy" else "n/a (different RNG)"
            rows.append([name, weights, mode, n_new / t_ours, n_new / t_hf, f"{t_hf / t_ours:.2f}x", match])
    table(["preset", "weights", "mode", "ours tokens/s", "HF tokens/s", "ours / HF", "outputs equal"], rows)
    GPT.cuda_bf16 = True


# ----------------------------------------------------------------------------- rollout


def rollout_prompts(path: str, tok, n_questions: int = 16, group_size: int = 8, seed: int = 0):
    """The prompts of one RL step of the checkpoint's task: n_questions x group_size token lists."""
    from tasks import format_prompt, sample_problems, task_from_config
    task = task_from_config(load_checkpoint(path)["config"])
    problems = sample_problems(task, n_questions, "train", seed=seed)
    return [tok.encode(format_prompt(p.question), allow_special=True) for p in problems for _ in range(group_size)]


def bench_rollout(cfg: BenchConfig, device) -> None:
    from tokenizer import get_tokenizer
    tok = get_tokenizer()
    stop = stop_tokens(tok)
    print(f"rollout: {cfg.rollout_batches} RL steps' sampling from each policy, 16 questions x 8 samples, "
          f"temperature 1, up to 256 new tokens")
    rows = []
    for label, path in (("early", cfg.early), ("late", cfg.late)):
        if not os.path.exists(os.path.join(path, "ckpt.pt")):
            print(f"rollout {label}: skipped, no checkpoint in {path}/ (python grpo.py makes out/base and out/grpo)")
            continue
        model, _ = load_model(path, device)
        generate(model, [[1, 2, 3]] * 4, 8)  # warm-up: allocations, kernel selection
        seconds, useful, lengths, same = {False: 0.0, True: 0.0}, 0, [], True
        for batch in range(cfg.rollout_batches):
            prompts = rollout_prompts(path, tok, seed=cfg.seed + batch)
            out = {}
            for compact in ((False, True) if batch % 2 == 0 else (True, False)):  # neither always first
                def run():
                    gen = torch.Generator(device=device).manual_seed(cfg.seed + batch)
                    return generate(model, prompts, 256, temperature=1.0, stop_tokens=stop, generator=gen,
                                    pad_id=tok.pad_id, compact=compact)
                out[compact], dt = timed(run, device)
                seconds[compact] += dt
            same = same and all(torch.equal(a, b) for a, b in zip(out[False], out[True]))
            useful += out[True][1].sum().item()
            lengths += out[True][1].tolist()
        rows.append([label, path, f"{sum(lengths) / len(lengths):.0f} / {max(lengths)}", useful / seconds[False],
                     useful / seconds[True], f"{seconds[False] / seconds[True]:.2f}x", "yes" if same else "NO"])
    if rows:
        table(["policy", "checkpoint", "mean / max length", "riding along: useful tokens/s",
               "rows leave: useful tokens/s", "speed-up", "same tokens"], rows)


# ----------------------------------------------------------------------------- step


def bench_step(cfg: BenchConfig, device) -> None:
    import grpo
    from rewards import parse_reward_spec
    from tasks import task_from_config
    from tokenizer import get_tokenizer
    if not os.path.exists(os.path.join(cfg.late, "ckpt.pt")):
        print(f"step: skipped, no checkpoint in {cfg.late}/ (python grpo.py makes out/grpo)")
        return
    task = load_checkpoint(cfg.late)["config"].get("task", "pairsum")
    gcfg = grpo.GRPOConfig(task=task, init_from=cfg.late, out_dir=os.path.join(tempfile.gettempdir(), "bench-step"))
    model, _ = load_model(cfg.late, device)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = make_optimizer(model, gcfg.lr, gcfg.weight_decay, betas=(0.9, 0.99))
    state = grpo.RunState(gcfg, get_tokenizer(), model, ref, optimizer, parse_reward_spec(gcfg.reward).score_batch)
    problems, gen = grpo.step_inputs(gcfg, task_from_config(gcfg), 0, 0, device)
    _, (info,) = grpo.grpo_step(state, 0, problems, gen)   # its record: the step's info and the update's timings
    parts = {"rollout": info["t_rollout"], "reward": info["t_reward"], "log-probs (pi_ref)": info["t_logprobs"],
             "update": info["t_update"]}
    total = sum(parts.values())
    print(f"step: one GRPO step of the default run ({gcfg.prompts_per_step} x {gcfg.group_size}, task {task}) "
          f"from {cfg.late}; mean completion {info['len']:.0f} tokens")
    table(["part", "seconds", "share"], [[k, v, f"{v / total:.0%}"] for k, v in parts.items()] + [["total", total, "100%"]])


# ----------------------------------------------------------------------------- train, memory, compile


def train_step_fn(model: GPT, cfg: BenchConfig, device):
    """One training step (forward + backward + AdamW) on a fixed random batch, as a function."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (cfg.batch_size, cfg.seq_len + 1), device=device)  # (B, T+1)

    def step(forward=model):
        logits = forward(x[:, :-1])                                          # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def train_tokens_per_s(step, cfg: BenchConfig, device, warmup: int = 1) -> float:
    for _ in range(warmup):
        step()  # allocations, kernel selection (and compilation)
    _, dt = timed(lambda: [step() for _ in range(cfg.train_steps)], device)
    return cfg.batch_size * cfg.seq_len * cfg.train_steps / dt


def bench_train(cfg: BenchConfig, device) -> None:
    dtype = torch.bfloat16 if device.type == "cuda" and GPT.cuda_bf16 else torch.float32  # what the model runs in
    peak = matmul_flops_per_s(cfg.matmul_size, device, dtype=dtype)
    print(f"train: {cfg.batch_size} x {cfg.seq_len} tokens per step; {str(dtype).removeprefix('torch.')} matmul "
          f"{cfg.matmul_size}^3 {peak / 1e9:.1f} GFLOP/s (the reference for 'fraction')")
    rows = []
    for name in cfg.presets.split(","):
        model = preset_model(name, cfg, device, max(cfg.seq_len, 256))
        fpt = flops_per_token(model, cfg.seq_len)
        tps = train_tokens_per_s(train_step_fn(model, cfg, device), cfg, device)
        rows.append([name, f"{model.num_params() / 1e6:.2f}M", f"{fpt / 1e6:.2f}", tps, tps * fpt / 1e9,
                     f"{tps * fpt / peak:.0%}"])
    table(["preset", "params", "MFLOP/token", "tokens/s", "GFLOP/s", "fraction of matmul peak"], rows)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_rss_child(name: str, cfg: BenchConfig, queue) -> None:
    """In a fresh process (Linux): one training step of a toy model first (so torch's code pages and
    thread pools are resident), then reset the peak resident set (clear_refs 5), build the model,
    take two training steps, report the peak's growth over the resident set before it (bytes)."""
    toy = GPT(GPTConfig(n_layer=1, n_head=2, n_kv_head=1, n_embd=8, max_seq_len=8))
    train_step_fn(toy, BenchConfig(batch_size=1, seq_len=4), torch.device("cpu"))()
    del toy
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    model = preset_model(name, cfg, torch.device("cpu"), max(cfg.seq_len, 256))
    step = train_step_fn(model, cfg, torch.device("cpu"))
    step(), step()
    queue.put((_proc_status_kib("VmHWM") - before) * 1024)


def bench_memory(cfg: BenchConfig, device) -> None:
    print(f"memory: peak of a training step, {cfg.batch_size} x {cfg.seq_len} tokens (model, AdamW state, activations)")
    rows = []
    for name in cfg.presets.split(","):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            model = preset_model(name, cfg, device, max(cfg.seq_len, 256))
            step = train_step_fn(model, cfg, device)
            step(), step()
            peak, how = torch.cuda.max_memory_allocated(), "CUDA max allocated"
            del model, step
        elif os.path.exists("/proc/self/clear_refs"):
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_peak_rss_child, args=(name, cfg, queue))
            child.start()
            try:
                peak, how = queue.get(timeout=600), "peak resident set growth of a fresh process"
            except Exception:  # the child died (out of memory?) or hung
                child.kill()
                peak, how = float("nan"), f"failed (child exit code {child.exitcode})"
            child.join()
        else:
            print("memory: skipped, needs CUDA or Linux's /proc/self/clear_refs")
            return
        rows.append([name, f"{peak / 2 ** 20:.0f} MiB", how])
    table(["preset", "peak memory", "measured as"], rows)


def bench_compile(cfg: BenchConfig, device) -> None:
    model = preset_model("nano", cfg, device, max(cfg.seq_len, 256))
    step = train_step_fn(model, cfg, device)
    eager = train_tokens_per_s(step, cfg, device)
    compiled_model = torch.compile(model)
    t0 = time.perf_counter()
    step(compiled_model)  # compiles
    t_compile = time.perf_counter() - t0
    compiled = train_tokens_per_s(lambda: step(compiled_model), cfg, device)
    print(f"compile: nano training step, {cfg.batch_size} x {cfg.seq_len} tokens")
    table(["eager tokens/s", "compiled tokens/s", "compiled / eager", "first compiled step (compile time)"],
          [[eager, compiled, f"{compiled / eager:.2f}x", f"{t_compile:.0f} s"]])


# the shapes of real small base models, from their config.json (Hugging Face Hub, read by hand):
# n_layer, n_embd, n_head, n_kv_head, hidden_dim, vocab_size (all tie their embeddings)
REAL_MODELS = {"SmolLM2-135M": (30, 576, 9, 3, 1536, 49152), "SmolLM2-360M": (32, 960, 15, 5, 2560, 49152),
               "Qwen2.5-0.5B": (24, 896, 14, 2, 4864, 151936), "Llama-3.2-1B": (16, 2048, 32, 8, 8192, 128256),
               "Qwen2.5-1.5B": (28, 1536, 12, 2, 8960, 151936), "SmolLM2-1.7B": (24, 2048, 32, 32, 8192, 49152),
               "Qwen2.5-3B": (36, 2048, 16, 2, 11008, 151936), "Llama-3.2-3B": (28, 3072, 24, 8, 8192, 128256)}
COUNTDOWN_PROMPT_TOKENS = 160  # TinyZero's prompt (tasks.format_prompt) is ~150 tokens in these vocabularies


def bench_gpu(cfg: BenchConfig, device) -> None:
    import grpo  # only this section
    presets = ("gpu-24gb", "gpu-80gb")
    print(f"gpu: estimated GiB per process of grpo.py --task countdown at each preset "
          f"(grpo.memory_estimate; prompt {COUNTDOWN_PROMPT_TOKENS} tokens)")
    rows = []
    for name, (L, C, H, K, hidden, V) in REAL_MODELS.items():
        model = GPTConfig(n_layer=L, n_embd=C, n_head=H, n_kv_head=K, hidden_dim=hidden, vocab_size=V,
                          max_seq_len=2048, tie_embeddings=True, attention_bias=name.startswith("Qwen"))
        row = [name]
        for preset in presets:
            parts = grpo.memory_estimate(model, grpo.GRPOConfig(**grpo.PRESETS[preset]), COUNTDOWN_PROMPT_TOKENS)
            n = parts.pop("params (B)")
            row.append(f"{sum(parts.values()):.0f}")
        rows.append([name, f"{n:.2f}B", *row[1:]])
    table(["model", "params", *(f"{p} GiB" for p in presets)], rows)


def main(argv=None):
    cfg = config_from_args(BenchConfig, argv, description=__doc__.split("\n")[0])
    unknown = sorted(set(cfg.sections.split(",")) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"error: unknown --sections {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    device = get_device(cfg.device or None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 reference the model runs in
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    run = {"hf": bench_hf, "rollout": bench_rollout, "step": bench_step, "train": bench_train,
           "memory": bench_memory, "compile": bench_compile, "gpu": bench_gpu}
    for name in cfg.sections.split(","):
        print()
        run[name](cfg, device)


if __name__ == "__main__":
    main()
