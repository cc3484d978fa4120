"""GRPO (Group Relative Policy Optimization) and the R1-Zero experiment: pure RL with rule-based
rewards, starting from the base model of pretrain.py.

Paper map (R1-NOTES.md):
  group_advantages  DeepSeekMath eq. 3 / R1 eq. 3: A_i = (r_i - mean(r)) / std(r), per group
  grpo_loss         R1 eq. 1: min(rho A, clip(rho, 1-eps, 1+eps) A) - beta KL, with the k3 KL
                    estimator of R1 eq. 2: pi_ref/pi - log(pi_ref/pi) - 1
  rollouts          the loop of R1-Zero: sample G outputs per question from pi_old, score them with
                    rules (accuracy + format), advantages, old/ref log-probs, mu update passes

    python grpo.py                          # the whole R1-Zero experiment on a CPU: pretrains a
                                            # base model if out/base/ has none, RL, out/grpo/aha.png
    python grpo.py --seed 1 --out-dir out/grpo-s1
    torchrun --standalone --nproc_per_node=N grpo.py

Shapes: N questions per step, G group size, B = N*G sequences, T tokens, V vocab.

Deliberate deviations from the paper:
1. Scale: 16 questions x 8 samples per step (paper: 32 x 16), tens of steps (paper: thousands),
   a ~1M-parameter model pretrained here on additions (paper: DeepSeek-V3-Base).
2. The KL coefficient is 0.04 (DeepSeekMath's value) rather than R1-Zero's 0.001: with few, large
   steps on a tiny model, a tighter leash keeps the policy from collapsing.
3. The prompt template is the short `<|user|>question<|assistant|>` form (tasks.format_prompt), not
   the paper's full instruction: the base model learned the format in pretraining.
4. The reference model is the initial policy and is never reset by default (R1-Zero reset it every
   400 steps; our runs are shorter than that). --ref-reset-every sets it.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass

import torch

from common import (LoopConfig, MetricsLogger, config_from_args, load_checkpoint, load_model, print0,
                    read_metrics, restore, seed_everything, setup_ddp, teardown_ddp, train, unwrap)

LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


@dataclass
class GRPOConfig:
    init_from: str = "out/base"         # base model checkpoint dir; pretrained first if missing
    out_dir: str = "out/grpo"           # checkpoint, metrics.jsonl and aha.png go here
    resume: bool = False                # continue from out_dir/ckpt.pt
    task: str = "add"                   # task family (tasks.TASKS)
    min_digits: int = 3                 # fewest digits of an operand
    max_digits: int = 3                 # most digits of an operand
    reward: str = "accuracy + 0.1*format"  # reward spec for rewards.parse_reward_spec; no length term
    steps: int = 25                     # RL steps (rollout batches)
    prompts_per_step: int = 16          # N: questions per step (over all ranks)
    group_size: int = 8                 # G: completions per question
    max_new_tokens: int = 256           # cap on completion length, tokens
    temperature: float = 1.0            # rollout sampling temperature (paper: 1.0)
    lr: float = 1e-4                    # learning rate (AdamW, constant after warmup)
    warmup_steps: int = 0               # linear warmup, optimizer steps
    min_lr_ratio: float = 1.0           # final lr / lr (1.0 = constant)
    weight_decay: float = 0.0           # AdamW weight decay
    grad_clip: float = 1.0              # max global grad norm
    clip_eps: float = 0.2               # epsilon of the clipped ratio (R1 eq. 1)
    kl_beta: float = 0.04               # beta, KL penalty weight (R1 eq. 1); 0 skips the reference model
    loss_agg: str = "seq-mean-token-mean"  # seq-mean-token-mean (GRPO) | token-mean (DAPO) | seq-mean-token-sum-norm (Dr. GRPO)
    scale_std: bool = True              # divide advantages by the group std (Dr. GRPO turns this off)
    seq_ratio: bool = False             # sequence-level ratio pi(o|q)/pi_old(o|q), as R1 writes it, instead of per token
    num_iterations: int = 1             # mu: optimisation passes over each rollout batch
    micro_batch_size: int = 64          # sequences per forward/backward (gradient accumulation)
    ref_reset_every: int = 0            # copy the policy into the reference every N steps (0 = never)
    eval_every: int = 5                 # held-out evaluation every N steps (0 = only at start and end)
    eval_problems: int = 50             # held-out questions per evaluation
    eval_k: int = 4                     # samples per question (pass@1 over k, cons@k)
    show_every: int = 20                # print sampled completions every N steps
    seed: int = 0                       # seed for data, sampling and (if pretraining) the base model
    device: str = ""                    # "" = auto (cuda, mps, cpu)

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (got {self.group_size}): GRPO needs a group to compare")
        if self.loss_agg not in LOSS_AGGS:
            raise ValueError(f"loss_agg must be one of {LOSS_AGGS} (got {self.loss_agg!r})")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1 (got {self.num_iterations})")


PRESETS = {
    "tiny": {},                                                             # the defaults
    "smoke": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 16,
              "eval_problems": 2, "eval_k": 2, "eval_every": 0, "show_every": 1},  # tests: seconds
}


# ----------------------------------------------------------------------------- the algorithm


def group_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantage, DeepSeekMath eq. 3: A_i = (r_i - mean(r_group)) / (std(r_group) + eps).
    `rewards` is flat (N*G,), each group's G rewards contiguous. A group whose rewards are all equal
    gets exactly 0 (no signal, never NaN)."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (got {group_size})")
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be a flat tensor of N*group_size values; got shape "
                         f"{tuple(rewards.shape)} with group_size {group_size}")
    r = rewards.float().view(-1, group_size)              # (N, G)
    centered = r - r.mean(dim=1, keepdim=True)            # (N, G)
    if scale_std:
        std = r.std(dim=1, keepdim=True)                  # (N, 1), unbiased like torch's default
        centered = centered / (std + eps)
    return centered.flatten()                             # (N*G,)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (0 if there are none)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def grpo_loss(logp, logp_old, logp_ref, advantages, mask, clip_eps: float = 0.2, beta: float = 0.0,
              loss_agg: str = "seq-mean-token-mean", seq_ratio: bool = False, norm_len: int | None = None):
    """The GRPO objective (R1 eq. 1), negated to a loss. logp, logp_old, logp_ref, mask: (B, T)
    per-token log-probs of the sampled tokens under pi_theta, pi_old, pi_ref and 1 on completion
    tokens; advantages: (B,). logp_ref may be None when beta == 0.

    loss_agg: how per-token terms become one number
      seq-mean-token-mean      GRPO as written: 1/G sum_i 1/|o_i| sum_t (mean over rows)
      token-mean               DAPO: sum over all tokens / number of tokens
      seq-mean-token-sum-norm  Dr. GRPO: sum_t / norm_len (a constant, default T), mean over rows
    seq_ratio: use the sequence ratio pi(o|q)/pi_old(o|q) = exp(sum_t logp - logp_old) for every
    token of the row (as R1 eq. 1 writes it) instead of the per-token ratio (DeepSeekMath).
    Returns (loss, stats)."""
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGS} (got {loss_agg!r})")
    mask = mask.to(logp.dtype)
    log_ratio = (logp - logp_old) * mask                                  # (B, T)
    if seq_ratio:
        log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(logp)   # (B, T), one value per row
    ratio = torch.exp(log_ratio)                                          # (B, T) rho
    adv = advantages.to(logp.dtype)[:, None]                              # (B, 1)
    unclipped = ratio * adv                                               # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv        # (B, T)
    per_token = -torch.min(unclipped, clipped)                            # (B, T) policy loss
    policy_per_token = per_token
    kl = torch.zeros_like(logp)
    if beta > 0:
        # k3 estimator, R1 eq. 2: pi_ref/pi - log(pi_ref/pi) - 1, always >= 0
        log_ref_ratio = logp_ref - logp                                   # (B, T)
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
        per_token = per_token + beta * kl

    def aggregate(x):
        if loss_agg == "token-mean":
            return masked_mean(x, mask)
        per_row = (x * mask).sum(dim=1)                                   # (B,)
        if loss_agg == "seq-mean-token-mean":
            per_row = per_row / mask.sum(dim=1).clamp(min=1)
        else:
            per_row = per_row / (norm_len or mask.shape[-1])
        return per_row.mean()

    loss = aggregate(per_token)
    with torch.no_grad():
        is_clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
        stats = {
            "policy_loss": aggregate(policy_per_token).item(),
            "kl": masked_mean(kl, mask).item(),
            "clip_frac": masked_mean(is_clipped.to(logp.dtype), mask).item(),
            "ratio": masked_mean(ratio, mask).item(),
            "zero_adv_frac": (advantages == 0).float().mean().item(),
        }
    return loss, stats


# ----------------------------------------------------------------------------- rollouts


def pack(prompt_ids, completion_ids, pad_id: int):
    """Right-padded (B, T) tokens = prompt + completion, and the (B, T-1) mask that marks which
    next-token positions (as token_logprobs returns them) are completion tokens."""
    B = len(prompt_ids)
    T = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    tokens = torch.full((B, T), pad_id, dtype=torch.long)                 # (B, T)
    mask = torch.zeros((B, T - 1))                                        # (B, T-1)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        tokens[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, len(p) - 1:len(p) - 1 + len(c)] = 1.0  # logp of token t+1 sits at index t
    return tokens, mask


@torch.no_grad()
def batched_logprobs(model, tokens, micro_batch_size: int):
    from model import token_logprobs

    out = [token_logprobs(model, tokens[s:s + micro_batch_size]) for s in range(0, len(tokens), micro_batch_size)]
    return torch.cat(out)                                                 # (B, T-1)


def rollouts(cfg: GRPOConfig, model, ref_model, tok, task, score_batch, dist, start_step: int = 0,
             evaluate_fn=None):
    """GRPO's batch generator (the shared loop in common.train does the optimizer steps). For each
    RL step: 1. questions, 2. G samples each, 3. rule rewards, 4. group advantages, 5. old and ref
    log-probs, 6. mu passes of micro-batches. Yields (micro_batches, info) once per optimizer step.
    score_batch(texts, problem_dicts) -> [(reward, {component: value})], e.g.
    rewards.parse_reward_spec("accuracy + 0.1*format").score_batch."""
    from evaluate import sample_completions
    from tasks import format_prompt, sample_problems

    device = next(model.parameters()).device
    n_local = cfg.prompts_per_step // dist.world_size
    for step in range(start_step, cfg.steps):
        if evaluate_fn is not None and cfg.eval_every and step % cfg.eval_every == 0 and step > start_step:
            evaluate_fn(step)  # held-out evaluation; it logs and prints its own line
        if cfg.ref_reset_every and step % cfg.ref_reset_every == 0 and step > 0 and ref_model is not None:
            ref_model.load_state_dict(unwrap(model).state_dict())
        t0 = time.time()
        # 1. N questions (this rank's share), fresh each step, from the TRAIN split
        problems = sample_problems(task, n_local, "train", seed=cfg.seed * 1_000_003 + step * 101 + dist.rank)
        # 2. G completions per question from pi_old (the current policy), temperature 1.0
        prompts = [format_prompt(p.question) for p in problems for _ in range(cfg.group_size)]
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 100003 + step * 101 + dist.rank)
        prompt_ids, completion_ids, texts = sample_completions(unwrap(model), tok, prompts, cfg.max_new_tokens,
                                                               cfg.temperature, None, gen, batch_size=len(prompts))
        t1 = time.time()
        # 3. rule-based rewards (no length term)
        scored = score_batch(texts, [problems[i // cfg.group_size].as_dict() for i in range(len(texts))])
        rewards = torch.tensor([total for total, _ in scored])           # (B,)
        t2 = time.time()
        # 4. group-relative advantages, eq. 3
        advantages = group_advantages(rewards, cfg.group_size, cfg.scale_std)  # (B,)
        tokens, mask = pack(prompt_ids, completion_ids, tok.pad_id)      # (B, T), (B, T-1)
        # 5. log-probs under pi_old (only needed for mu > 1: at mu = 1 pi_old = pi_theta) and pi_ref
        logp_old = batched_logprobs(unwrap(model), tokens.to(device), cfg.micro_batch_size) \
            if cfg.num_iterations > 1 else None
        logp_ref = batched_logprobs(ref_model, tokens.to(device), cfg.micro_batch_size) \
            if cfg.kl_beta > 0 else None
        lengths = torch.tensor([len(c) for c in completion_ids], dtype=torch.float)
        components = {k: sum(c[k] for _, c in scored) / len(scored) for k in scored[0][1]}
        info = {"rl_step": step + 1, "reward": rewards.mean().item(), **{f"r_{k}": v for k, v in components.items()},
                "len": lengths.mean().item(), "t_rollout": t1 - t0, "t_reward": t2 - t1}
        if cfg.show_every and step % cfg.show_every == 0 and dist.is_main:
            for i in (0, cfg.group_size):
                if i < len(texts):
                    print0(f"--- step {step} sample {i} reward {rewards[i]:.2f}: {prompts[i]}{texts[i]}")
        # 6. mu passes over the batch, each split into micro-batches (one optimizer step per pass)
        B = len(texts)
        for _ in range(cfg.num_iterations):
            micro = []
            for s in range(0, B, cfg.micro_batch_size):
                sl = slice(s, s + cfg.micro_batch_size)
                micro.append({"tokens": tokens[sl], "mask": mask[sl], "advantages": advantages[sl],
                              "logp_old": None if logp_old is None else logp_old[sl],
                              "logp_ref": None if logp_ref is None else logp_ref[sl]})
            yield micro, info


def make_loss_fn(cfg: GRPOConfig):
    from model import token_logprobs

    def loss_fn(model, mb):
        device = next(model.parameters()).device
        tokens, mask = mb["tokens"].to(device), mb["mask"].to(device)
        logp = token_logprobs(model, tokens)                             # (b, T-1)
        logp_old = logp.detach() if mb["logp_old"] is None else mb["logp_old"].to(device)
        logp_ref = None if mb["logp_ref"] is None else mb["logp_ref"].to(device)
        return grpo_loss(logp, logp_old, logp_ref, mb["advantages"].to(device), mask, cfg.clip_eps,
                         cfg.kl_beta, cfg.loss_agg, cfg.seq_ratio, norm_len=cfg.max_new_tokens)

    return loss_fn


# ----------------------------------------------------------------------------- the figure


def plot_aha(metrics_path: str, out_png: str, title: str = "R1-Zero on a CPU") -> str:
    """The aha figure (R1 paper Figures 2 and 3): held-out pass@1 and cons@k, and mean response
    length of the training rollouts, against RL step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    evals = [r for r in records if "eval/pass@1" in r]
    train_rows = [r for r in records if "len" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["rl_step"] for r in evals], [r["eval/pass@1"] for r in evals], "o-", label="pass@1")
    ax1.plot([r["rl_step"] for r in evals], [r["eval/cons@k"] for r in evals], "s--", label="cons@k")
    ax1.set(xlabel="RL step", ylabel="held-out accuracy", ylim=(0, 1), title="accuracy (cf. R1 Fig. 2)")
    ax1.legend(loc="lower right")
    ax2.plot([r["rl_step"] for r in train_rows], [r["len"] for r in train_rows], color="tab:red", alpha=0.8,
             label="training rollouts")
    ax2.plot([r["rl_step"] for r in evals], [r["eval/length"] for r in evals], "o", color="tab:purple",
             label="held-out samples")
    ax2.set(xlabel="RL step", ylabel="mean response length (tokens)", title="response length (cf. R1 Fig. 3)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------- main


def ensure_base_model(cfg: GRPOConfig) -> None:
    """`python grpo.py` on a fresh clone: pretrain the base model first if there is none, into
    --init-from, with this run's seed (so `--seed 1 --init-from out/base-s1` is a whole new run)."""
    from common import checkpoint_path

    if os.path.exists(checkpoint_path(cfg.init_from)):
        return
    if cfg.init_from.endswith(".pt"):
        raise FileNotFoundError(f"--init-from {cfg.init_from}: no such checkpoint file")
    print0(f"no base model in {cfg.init_from}/: pretraining one there first "
           f"(python pretrain.py --seed {cfg.seed} --out-dir {cfg.init_from})")
    import pretrain

    pretrain.run(pretrain.PretrainConfig(min_digits=cfg.min_digits, max_digits=cfg.max_digits, seed=cfg.seed,
                                         device=cfg.device, out_dir=cfg.init_from, eval_problems=0))


def run(cfg: GRPOConfig) -> dict:
    from evaluate import evaluate
    from rewards import parse_reward_spec
    from tasks import task_from_config, test_set
    from tokenizer import get_tokenizer

    t_start = time.time()
    ensure_base_model(cfg)
    dist = setup_ddp(cfg.device or None)
    if cfg.prompts_per_step % dist.world_size:
        raise ValueError(f"prompts_per_step ({cfg.prompts_per_step}) must be divisible by the number of "
                         f"processes ({dist.world_size}): each rank samples an equal share of the questions")
    seed_everything(cfg.seed, dist.rank)
    tok = get_tokenizer()
    task = task_from_config(cfg)
    score_batch = parse_reward_spec(cfg.reward).score_batch
    model, _ = load_model(cfg.init_from, dist.device)
    ref_model = None
    if cfg.kl_beta > 0:  # beta = 0 skips the reference model entirely
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    start_opt_step = 0
    if cfg.resume:
        start_opt_step = restore(model, optimizer, load_checkpoint(cfg.out_dir, map_location=dist.device))
        print0(f"resumed from {cfg.out_dir} at optimizer step {start_opt_step}")
    start_step = start_opt_step // cfg.num_iterations
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if dist.is_ddp else model
    logger = MetricsLogger(cfg.out_dir, append=cfg.resume)
    problems = test_set(task, n=cfg.eval_problems, seed=0)
    figure = os.path.join(cfg.out_dir, "aha.png")

    def evaluate_fn(step):
        """Held-out evaluation with the paper's settings; rank 0 only."""
        if not dist.is_main:
            return {}
        model.eval()
        m = evaluate(model, tok, task, problems, k=cfg.eval_k, max_new_tokens=cfg.max_new_tokens, seed=step)
        model.train()
        m = {f"eval/{k}": v for k, v in m.items()}
        logger.log({"rl_step": step, **m})
        print0("eval @ step {} | ".format(step) + MetricsLogger.format_line(m))
        plot_aha(logger.path, figure)  # the figure grows during the run, not only at its end
        return m

    before = evaluate_fn(start_step) if dist.is_main else {}
    print0(f"GRPO: {cfg.steps} steps x {cfg.prompts_per_step} questions x {cfg.group_size} samples, "
           f"{dist.world_size} process(es) on {dist.device}")
    loop_cfg = LoopConfig(steps=cfg.steps * cfg.num_iterations, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                          min_lr_ratio=cfg.min_lr_ratio, grad_clip=cfg.grad_clip, log_every=1,
                          ckpt_every=10 * cfg.num_iterations, out_dir=cfg.out_dir)
    batches = rollouts(cfg, wrapped, ref_model, tok, task, score_batch, dist, start_step, evaluate_fn)
    try:
        train(wrapped, optimizer, loop_cfg, batches, make_loss_fn(cfg), start_step=start_opt_step,
              logger=logger, config_dict=dataclasses.asdict(cfg))
    finally:  # Ctrl-C too: train() has saved a checkpoint; draw what the run has so far
        if dist.is_main and os.path.exists(logger.path):
            plot_aha(logger.path, figure)
    after = evaluate_fn(cfg.steps) if dist.is_main else {}
    if dist.is_main:
        rows = [r for r in read_metrics(logger.path) if "len" in r]
        print0(f"\nR1-Zero summary ({time.time() - t_start:.0f} s wall clock, figure: {figure})")
        for key in ("eval/pass@1", "eval/cons@k", "eval/format", "eval/length", "eval/reasons",
                    "eval/self_check", "eval/mixed"):
            print0(f"  {key[5:]:<12} {before.get(key, float('nan')):.3f} -> {after.get(key, float('nan')):.3f}")
        if rows:
            print0(f"  train len    {rows[0]['len']:.1f} -> {rows[-1]['len']:.1f} tokens")
    teardown_ddp()
    return {"before": before, "after": after}


def main(argv=None):
    cfg = config_from_args(GRPOConfig, argv, presets=PRESETS, description=__doc__.split("\n")[0])
    run(cfg)


if __name__ == "__main__":
    main()
