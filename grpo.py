"""GRPO (Group Relative Policy Optimization) and the R1-Zero experiment: pure RL with rule-based
rewards, starting from the base model of pretrain.py.

Paper map (docs/PAPER.md has the equations and a worked example of each):
  group_advantages  R1 eq. 3: A_i = (r_i - mean(r)) / std(r), per group of G samples
  grpo_loss         DeepSeekMath eq. 3 (per-token ratio, 1/|o_i| mean; R1 eq. 1 writes it per
                    sequence: --seq-ratio): min(rho A, clip(rho, 1-eps, 1+eps) A) - beta KL, with
                    the k3 KL estimator of R1 eq. 2 / DeepSeekMath eq. 4: pi_ref/pi - log(pi_ref/pi) - 1
  rl_batch          one RL step's data: questions -> G rollouts each -> rule rewards -> advantages
  run               the R1-Zero loop: evaluation, reference reset, rl_batch, mu update passes,
                    logging and checkpoints, each a visible line

    python grpo.py                          # the whole R1-Zero experiment on a CPU, the search world:
                                            # pretrains a base model into out/base/ if none, 40 RL
                                            # steps, out/grpo/aha.png
    python grpo.py --seed 1                 # a whole new run: out/base-s1/, out/grpo-s1/
    python grpo.py --task add               # the quick run, 3-digit addition: out/base-add/, out/grpo-add/
    python grpo.py --task code              # tiny programs judged by running them in the sandbox:
                                            # out/base-code/, out/grpo-code/
    torchrun --standalone --nproc_per_node=N grpo.py

Shapes: N questions per step, G group size, B = N*G sequences, T tokens, V vocab.

Deliberate deviations from the paper:
1. Scale: 16 questions x 8 samples per step (paper: 32 x 16), tens of steps (paper: thousands),
   a ~1M-parameter model pretrained here on a synthetic web (paper: DeepSeek-V3-Base).
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
import functools
import os
import time
from dataclasses import dataclass

import torch

import pretrain  # deliberate reuse: `python grpo.py` on a fresh clone pretrains its base model first
import sandbox
from common import (DEFAULT_TASK, MetricsLogger, NonFiniteError, all_reduce, check_fits, check_processes, check_ranges, check_resume, checkpoint_path,
                    checkpoint_sha256, config_from_args, derive_seed, diverged_message, get_device, interrupts_deferred,
                    load_checkpoint, load_model, lr_at, make_optimizer,
                    optimizer_step, pack, print0, read_metrics,
                    restore, run_dir, save_checkpoint, seed_everything, set_lr, setup_ddp, start_fresh, sum_over_ranks,
                    teardown_ddp, world_size, wrap)
from corpus import WEB_TASKS
from evaluate import EVAL_MAX_NEW_TOKENS, behaviour, by_kind_line, held_out, summarize_behaviour
from model import sample_completions, stop_tokens, token_logprobs
from plots import plot_aha
from rewards import parse_reward_spec
from tasks import TASKS, format_prompt, longest_prompt, sample_problems, task_from_config
from tokenizer import get_tokenizer

LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


# RL steps when --steps is not given: the search world's length keeps rising for ~40 steps; addition is
# solved by step 10-15; code's held-out pass@1 still rises at 30 (README results)
TASK_STEPS = {"pairsum": 40, "add": 25, "code": 30}


@dataclass
class GRPOConfig:
    init_from: str = ""                 # base model checkpoint dir; "" = out/base (out/base-sN for --seed N), pretrained there if missing
    out_dir: str = ""                   # checkpoint, metrics.jsonl and aha.png; "" = out/grpo (out/grpo-sN for --seed N)
    resume: bool = False                # continue from out_dir/ckpt.pt
    task: str = DEFAULT_TASK            # task family (tasks.TASKS): pairsum (the search world), add (the quick run) or code
    min_digits: int = 3                 # fewest digits of an operand
    max_digits: int = 3                 # most digits of an operand
    reward: str = "accuracy + 0.1*format"  # reward spec for rewards.parse_reward_spec; no length term
    code_timeout_s: float = 2.0         # code reward and held-out judge: wall clock per test of a program
                                        # (sandbox.Limits.timeout_s; its CPU budget, Limits.cpu_s, is apart)
    steps: int = 0                      # RL steps (rollout batches); 0 = the task's default (TASK_STEPS: pairsum 40, add 25, code 30)
    prompts_per_step: int = 16          # N: questions per step (over all ranks)
    group_size: int = 8                 # G: completions per question
    max_new_tokens: int = 256           # cap on a rollout's length, tokens (held-out evaluation: evaluate.py's protocol)
    temperature: float = 1.0            # rollout sampling temperature (paper: 1.0); log-probs are taken at it too
    lr: float = 1e-4                    # peak learning rate (AdamW; constant after warmup at --min-lr-ratio 1)
    warmup_steps: int = 0               # linear warmup, optimizer steps
    min_lr_ratio: float = 1.0           # final lr / lr (1.0 = constant)
    weight_decay: float = 0.0           # AdamW weight decay on matrices
    grad_clip: float = 1.0              # max global grad norm (0 = off)
    clip_eps: float = 0.2               # epsilon of the clipped ratio (R1 eq. 1)
    kl_beta: float = 0.04               # beta, KL penalty weight (R1 eq. 1); 0 skips the reference model
    loss_agg: str = "seq-mean-token-mean"  # seq-mean-token-mean (GRPO) | token-mean (DAPO) | seq-mean-token-sum-norm (Dr. GRPO)
    scale_std: bool = True              # divide advantages by the group std (Dr. GRPO turns this off)
    seq_ratio: bool = False             # sequence-level ratio pi(o|q)/pi_old(o|q), as R1 writes it, instead of per token
    num_iterations: int = 1             # mu: optimisation passes over each rollout batch
    micro_batch_size: int = 32          # sequences per forward/backward (gradient accumulation; exact for any size)
    ref_reset_every: int = 0            # copy the policy into the reference every N steps (0 = never)
    eval_every: int = 5                 # held-out evaluation every N steps (0 = only at start and end)
    eval_problems: int = 50             # held-out questions per evaluation
    eval_k: int = 4                     # samples per question (pass@1 over k, cons@k)
    show_every: int = 20                # print sampled completions every N steps (0 = never)
    ckpt_every: int = 5                 # checkpoint every N RL steps (0 = only at the end; Ctrl-C saves too):
                                        # 5 keeps a SIGKILL's loss under a minute in every world (code: ~35 s)
    seed: int = 0                       # seed for questions, sampling and (if pretraining) the base model
    device: str = ""                    # "" = auto (cuda, mps, cpu)
    compile: bool = False               # torch.compile the training forward/backward (opt-in; bench.py measures it)

    def __post_init__(self):
        self.steps = self.steps or TASK_STEPS.get(self.task, TASK_STEPS[DEFAULT_TASK])
        self.init_from = self.init_from or run_dir("out/base", self.seed, self.task)
        self.out_dir = self.out_dir or run_dir("out/grpo", self.seed, self.task)
        check_ranges(self, positive=("steps", "prompts_per_step", "max_new_tokens", "temperature", "lr", "code_timeout_s",
                                     "num_iterations", "micro_batch_size", "eval_problems", "eval_k"),
                     non_negative=("warmup_steps", "weight_decay", "grad_clip", "clip_eps", "kl_beta",
                                   "ref_reset_every", "eval_every", "show_every", "ckpt_every"),
                     fraction=("min_lr_ratio",), choices={"task": tuple(TASKS), "loss_agg": LOSS_AGGS})
        if self.group_size < 2:
            raise ValueError(f"--group-size must be >= 2 (got {self.group_size}): GRPO needs a group to compare")
        parse_reward_spec(self.reward)   # an unknown reward name fails here, before any work
        task_from_config(self)           # so does a bad difficulty knob


def check_files(cfg: GRPOConfig) -> None:
    """The checks that read files or the environment, before any work: --init-from exists (only the
    default base directory is pretrained when missing, so a typo is an error, not a new pretraining
    run), --resume has a checkpoint of the same run, the longest prompt + --max-new-tokens fits the
    model, --device exists, and the questions split evenly over the torchrun processes."""
    check_resume(cfg.out_dir, cfg.resume, dataclasses.asdict(cfg), RESUME_MUST_MATCH)
    if os.path.exists(checkpoint_path(cfg.init_from)):
        max_seq_len = load_checkpoint(cfg.init_from)["model_config"]["max_seq_len"]
    elif cfg.init_from == run_dir("out/base", cfg.seed, cfg.task):
        if cfg.task not in WEB_TASKS:
            raise ValueError(f"--init-from {cfg.init_from} has no model, and pretrain.py makes base models for "
                             f"{', '.join(WEB_TASKS)} only; pass --init-from a checkpoint for --task {cfg.task}")
        max_seq_len = pretrain.PretrainConfig().max_seq_len  # it will be pretrained with the defaults
    else:
        raise ValueError(f"--init-from {cfg.init_from}: no checkpoint there (only the default base directory, "
                         f"{run_dir('out/base', cfg.seed, cfg.task)}, is pretrained when missing)")
    longest = longest_prompt(task_from_config(cfg), get_tokenizer())
    check_fits(longest, cfg.max_new_tokens, max_seq_len)
    check_fits(longest, EVAL_MAX_NEW_TOKENS, max_seq_len, what="the held-out evaluation's cap (evaluate.EVAL_MAX_NEW_TOKENS)")
    if cfg.device:
        get_device(cfg.device)  # a ValueError if that device is not available here
    check_processes(cfg.prompts_per_step, "--prompts-per-step")


# what an exact --resume depends on: the checkpoint's values must equal the command line's
RESUME_MUST_MATCH = ("task", "seed", "reward", "prompts_per_step", "group_size", "max_new_tokens", "temperature",
                     "num_iterations", "micro_batch_size", "kl_beta", "ref_reset_every", "loss_agg", "scale_std",
                     "seq_ratio")


PRESETS = {
    "cpu": {},                                                              # the defaults
    "smoke": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 16,
              "eval_problems": 2, "eval_k": 2, "eval_every": 0, "show_every": 1},  # tests: seconds
}


# ----------------------------------------------------------------------------- the algorithm


def group_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantage, R1 eq. 3: A_i = (r_i - mean(r_group)) / (std(r_group) + eps).
    `rewards` is flat (N*G,), each group's G rewards contiguous. A group whose rewards are all equal
    gets exactly 0 (no signal, never NaN). Example, one group of G = 4: rewards (1, 0, 0, 1), mean
    0.5, std 0.577 (unbiased), advantages (0.866, -0.866, -0.866, 0.866)."""
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


def grpo_loss(logp, logp_old, logp_ref, advantages, mask, clip_eps: float = 0.2, beta: float = 0.0,
              loss_agg: str = "seq-mean-token-mean", seq_ratio: bool = False, norm_len: int | None = None,
              n_rows: float | None = None, n_tokens: float | None = None):
    """The GRPO objective (DeepSeekMath eq. 3, per token; R1 eq. 1 with seq_ratio=True), negated to a loss. logp, logp_old, logp_ref, mask: (B, T)
    per-token log-probs of the sampled tokens under pi_theta, pi_old, pi_ref and 1 on completion
    tokens; advantages: (B,). logp_ref may be None when beta == 0.

    loss_agg: how per-token terms become one number
      seq-mean-token-mean      GRPO as written: 1/G sum_i 1/|o_i| sum_t (mean over rows)
      token-mean               DAPO: sum over all tokens / number of tokens
      seq-mean-token-sum-norm  Dr. GRPO: sum_t / norm_len (a constant, default T), mean over rows
    seq_ratio: use the sequence ratio pi(o|q)/pi_old(o|q) = exp(sum_t logp - logp_old) for every
    token of the row (as R1 eq. 1 writes it) instead of the per-token ratio (DeepSeekMath).
    n_rows, n_tokens: when this is one micro-batch of a larger batch, the whole batch's rows and
    completion tokens (over all micro-batches and ranks): the loss and stats are then this
    micro-batch's SHARE, and shares add up to the whole batch's values (common.optimizer_step).
    Default: this batch's own counts, i.e. plain means. Returns (loss, stats)."""
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGS} (got {loss_agg!r})")
    mask = mask.to(logp.dtype)
    n_rows = float(len(logp)) if n_rows is None else n_rows
    n_tokens = max(1.0, float(mask.sum()) if n_tokens is None else n_tokens)
    on = mask > 0                                                         # (B, T) completion tokens
    # log-ratios are taken on completion tokens only and are 0 on padding, BEFORE any exp: padding
    # positions hold arbitrary log-probs, and exp(large) * 0 is inf * 0 = NaN
    log_ratio = torch.where(on, logp - logp_old, 0.0)                     # (B, T)
    if seq_ratio:
        log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(logp)   # (B, T), one value per row
    ratio = torch.exp(log_ratio)                                          # (B, T) rho
    adv = advantages.to(logp.dtype)[:, None]                              # (B, 1)
    unclipped = ratio * adv                                               # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv        # (B, T)
    policy_per_token = -torch.min(unclipped, clipped)                     # (B, T) policy loss
    kl = torch.zeros_like(logp)
    if beta > 0:
        # k3 estimator, R1 eq. 2 (per token as in DeepSeekMath eq. 4): pi_ref/pi - log(pi_ref/pi) - 1, >= 0
        log_ref_ratio = torch.where(on, logp_ref - logp, 0.0)             # (B, T), 0 on padding
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = policy_per_token + beta * kl                              # (B, T)

    def aggregate(x):  # (B, T) per-token terms -> this batch's share of the loss
        if loss_agg == "token-mean":
            return (x * mask).sum() / n_tokens
        per_row = (x * mask).sum(dim=1)                                   # (B,)
        if loss_agg == "seq-mean-token-mean":
            per_row = per_row / mask.sum(dim=1).clamp(min=1)
        else:
            per_row = per_row / (norm_len or mask.shape[-1])
        return per_row.sum() / n_rows

    loss = aggregate(per_token)
    with torch.no_grad():
        is_clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
        stats = {
            "policy_loss": aggregate(policy_per_token).item(),
            "kl": ((kl * mask).sum() / n_tokens).item(),
            "clip_frac": ((is_clipped * mask).sum() / n_tokens).item(),
            "ratio": ((ratio * mask).sum() / n_tokens).item(),
            "zero_adv_frac": ((advantages == 0).sum() / n_rows).item(),
        }
    return loss, stats


# ----------------------------------------------------------------------------- one RL step


def rl_batch(policy, ref_model, tok, problems, cfg: GRPOConfig, score_batch, generator=None):
    """One RL step's data (R1-Zero, before the update); no evaluation, no printing.
    score_batch(texts, problem_dicts) -> [(reward, {component: value})], e.g.
    rewards.parse_reward_spec("accuracy + 0.1*format").score_batch.
    Returns (batch, info): batch holds the (B, ...) tensors the loss needs plus the prompts, texts
    and rewards; info holds step-level scalars (mean reward and components, length, timings)."""
    t0 = time.time()
    # 1. each question G times, in the R1-Zero template
    prompts = [format_prompt(p.question) for p in problems for _ in range(cfg.group_size)]
    # 2. G completions per question from pi_old (the current policy) at the sampling temperature
    prompt_ids, completion_ids, texts = sample_completions(policy, tok, prompts, cfg.max_new_tokens,
                                                           cfg.temperature, None, generator, len(prompts))
    t1 = time.time()
    # 3. rule-based rewards (accuracy + format; no length term)
    scored = score_batch(texts, [problems[i // cfg.group_size].as_dict() for i in range(len(texts))])
    rewards = torch.tensor([total for total, _ in scored])               # (B,)
    t2 = time.time()
    # 4. group-relative advantages, R1 eq. 3: every token of completion i gets A_i
    advantages = group_advantages(rewards, cfg.group_size, cfg.scale_std)  # (B,)
    # 5. prompt + completion, and the mask of completion tokens
    tokens, mask = pack(prompt_ids, completion_ids, tok.pad_id)          # (B, T), (B, T-1)
    # 6. log-probs under pi_old (needed only for mu > 1: at mu = 1 pi_old = pi_theta) and pi_ref,
    #    at the temperature the rollouts were sampled at, in the update's micro-batches
    logp_old = batch_logprobs(policy, tokens, mask, cfg) if cfg.num_iterations > 1 else None  # (B, T-1)
    logp_ref = batch_logprobs(ref_model, tokens, mask, cfg) if cfg.kl_beta > 0 else None      # (B, T-1)
    for name, logp in (("pi_old", logp_old), ("pi_ref", logp_ref)):  # summed over ranks: all stop together
        if logp is not None and sum_over_ranks((~logp[mask > 0].isfinite()).sum().item()) > 0:
            raise NonFiniteError(f"non-finite {name} log-probs")
    t3 = time.time()
    # 7. what shows a run learning nothing: rollouts cut at the token cap, and the lengths of right
    #    and wrong completions (a length rise that is only wrong completions growing is not reasoning)
    #    (sums and counts over all ranks, so every rank logs the batch's value and none is NaN alone)
    stop = stop_tokens(tok)
    cut = [len(ids) >= cfg.max_new_tokens and ids[-1] not in stop for ids in completion_ids]
    right = [c.get("accuracy", 0.0) == 1.0 for _, c in scored]
    lengths = [len(ids) for ids in completion_ids]

    def mean_len(keep):  # mean length of the kept completions over all ranks; NaN if there are none
        n = sum_over_ranks(sum(keep))
        return sum_over_ranks(sum(n_i for n_i, k in zip(lengths, keep) if k)) / n if n else float("nan")

    components = {k: sum(c[k] for _, c in scored) / len(scored) for k in scored[0][1]}
    languages = [problems[i // cfg.group_size].language for i in range(len(texts))]
    shown = summarize_behaviour([{**behaviour(t, lang), "language": lang} for t, lang in zip(texts, languages)])
    info = {"reward": rewards.mean().item(), **{f"r_{k}": v for k, v in components.items()},
            "len": sum(lengths) / len(lengths), "truncated": sum(cut) / len(cut),
            "len_right": mean_len(right), "len_wrong": mean_len([not r for r in right]), **shown,
            "t_rollout": t1 - t0, "t_reward": t2 - t1, "t_logprobs": t3 - t2}
    batch = {"tokens": tokens, "mask": mask, "advantages": advantages, "logp_old": logp_old, "logp_ref": logp_ref,
             "prompts": prompts, "texts": texts, "rewards": rewards.tolist()}
    return batch, info


def chunks(mask, size: int) -> list[tuple[torch.Tensor, int]]:
    """The micro-batches of a batch, as (row indices, tokens kept): rows sorted by length (where
    their last completion token is), `size` at a time, each chunk cut after its own longest row.
    Rollouts run from 20 to 250 tokens; padded to the longest row of the whole batch, half of the
    positions would be padding. The loss is a sum of per-row shares, so the order of the rows
    changes nothing but float rounding. mask (B, T-1) -> [(indices (b,), T_chunk)]."""
    col = torch.arange(mask.size(1))                                      # (T-1,)
    last = torch.where(mask > 0, col, -1).max(dim=1).values              # (B,) last completion position
    ends = (last + 2).clamp(min=2)                                        # (B,) tokens each row needs
    order = torch.argsort(ends, stable=True)                              # (B,) shortest first
    return [(rows, int(ends[rows].max())) for rows in order.split(size)]


@torch.no_grad()
def batch_logprobs(model, tokens, mask, cfg: GRPOConfig):
    """token_logprobs under `model` (pi_old or pi_ref) without autograd, in the micro-batches the
    update uses (chunks), so pi_old's numbers are bit-identical to pi_theta's on the first update
    pass (ratio exactly 1). (B, T-1), 0 after each row's end."""
    device = next(model.parameters()).device
    out = torch.zeros(mask.shape)                                         # (B, T-1)
    for rows, T in chunks(mask, cfg.micro_batch_size):
        out[rows, :T - 1] = token_logprobs(model, tokens[rows, :T].to(device), cfg.temperature).cpu()
    return out


def micro_batches(batch: dict, size: int) -> list[dict]:
    """The batch's tensors in the chunks above, each carrying the whole batch's row and
    completion-token counts over all ranks, so each micro-batch's loss is its exact share."""
    n_rows = sum_over_ranks(len(batch["tokens"]))
    n_tokens = sum_over_ranks(batch["mask"].sum().item())
    out = []
    for rows, T in chunks(batch["mask"], size):
        mb = {"tokens": batch["tokens"][rows, :T], "mask": batch["mask"][rows, :T - 1],
              "advantages": batch["advantages"][rows]}
        for k in ("logp_old", "logp_ref"):
            mb[k] = None if batch[k] is None else batch[k][rows, :T - 1]
        out.append({**mb, "n_rows": n_rows, "n_tokens": n_tokens})
    return out


def make_loss_fn(cfg: GRPOConfig):
    """loss_fn(model, micro_batch) -> (loss share, stats), as common.optimizer_step wants it."""
    def loss_fn(model, mb):
        device = next(model.parameters()).device
        tokens, mask = mb["tokens"].to(device), mb["mask"].to(device)
        logp, entropy = token_logprobs(model, tokens, cfg.temperature, entropy=True)  # (b, T-1) pi_theta, H
        nonfinite = (~logp.isfinite() & (mask > 0)).sum().item()         # divergence guard (optimizer_step)
        logp_old = logp.detach() if mb["logp_old"] is None else mb["logp_old"].to(device)
        logp_ref = None if mb["logp_ref"] is None else mb["logp_ref"].to(device)
        loss, stats = grpo_loss(logp, logp_old, logp_ref, mb["advantages"].to(device), mask, cfg.clip_eps,
                                cfg.kl_beta, cfg.loss_agg, cfg.seq_ratio, norm_len=cfg.max_new_tokens,
                                n_rows=mb["n_rows"], n_tokens=mb["n_tokens"])
        entropy_share = ((entropy * mask).sum() / mb["n_tokens"]).item()  # shares add up to the batch's mean
        return loss, {**stats, "entropy": entropy_share, "nonfinite_policy log-probs": nonfinite}

    return loss_fn


# ----------------------------------------------------------------------------- the R1-Zero loop


def step_inputs(cfg: GRPOConfig, task, step: int, rank: int, device):
    """RL step `step`'s questions (this rank's share, TRAIN split) and its sampling generator, each
    from its own seed stream: what makes a run, and a resumed run, reproducible."""
    problems = sample_problems(task, cfg.prompts_per_step // world_size(), "train",
                               seed=derive_seed(cfg.seed, "questions", step, rank))
    generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "rollouts", step, rank))
    return problems, generator


def reward_fn(cfg: GRPOConfig):
    """rl_batch's score_batch: the reward spec, its code programs judged under cfg.code_timeout_s."""
    limits = sandbox.Limits(timeout_s=cfg.code_timeout_s)
    return functools.partial(parse_reward_spec(cfg.reward).score_batch, limits=limits)


def run(cfg: GRPOConfig, score_batch=None) -> dict:
    """R1-Zero: GRPO from the base model with rule rewards. Returns held-out metrics before/after.
    score_batch: rl_batch's reward function, default reward_fn(cfg) (soak_sandbox.py --grpo-steps wraps
    that in one that swaps a share of the rollouts for hostile programs)."""
    t_start = time.time()
    # `python grpo.py` on a fresh clone: pretrain the base model first (check_files has refused any
    # other missing --init-from than the default base directory)
    pretrain.ensure_base_model(cfg.init_from, seed=cfg.seed, device=cfg.device, task=cfg.task,
                               min_digits=cfg.min_digits, max_digits=cfg.max_digits)
    dist = setup_ddp(cfg.device or None)
    seed_everything(cfg.seed, dist.rank)
    tok, task = get_tokenizer(), task_from_config(cfg)
    score_batch = score_batch or reward_fn(cfg)
    model, _ = load_model(cfg.init_from, dist.device)
    init_sha256 = checkpoint_sha256(cfg.init_from)  # saved with every checkpoint: which model this run started from
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_beta > 0 else None  # pi_ref
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.99))
    start_step, rollout, keep = 0, None, None
    if cfg.resume:  # weights, optimizer, RNG, reference, and where in the step it stopped
        ckpt = load_checkpoint(cfg.out_dir, map_location=dist.device, fallback=True)
        start_step, rollout, keep = restore(model, optimizer, ckpt), ckpt["rollouts"][dist.rank], ckpt["keep"]
        if ckpt.get("ref_model") is not None:
            ref_model.load_state_dict(ckpt["ref_model"])
        print0(f"resumed from {cfg.out_dir} at RL step {start_step}" +
               (f", update pass {rollout['pass'] + 1} of {cfg.num_iterations}" if rollout else ""))
    else:
        start_fresh(cfg.out_dir)
    wrapped = wrap(model, dist, cfg.compile)
    logger = MetricsLogger(cfg.out_dir, keep=keep)
    limits = sandbox.Limits(timeout_s=cfg.code_timeout_s)  # held-out code is judged as the rewards judge it
    figure = os.path.join(cfg.out_dir, "aha.png")
    loss_fn = make_loss_fn(cfg)
    mu = cfg.num_iterations

    def evaluate_held_out(step):
        """Held-out pass@1 / cons@k with the paper's sampling settings (rank 0); redraws the figure."""
        if not dist.is_main:
            return {}
        m = held_out(model, tok, task, cfg.eval_problems, cfg.eval_k, derive_seed(cfg.seed, "eval", step), limits)
        logger.log({"kind": "eval", "step": step, **m})
        print0(f"eval @ step {step} | " + MetricsLogger.format_line({k: v for k, v in m.items() if k != "by_kind"}))
        if "by_kind" in m:
            print0(by_kind_line(m))
        plot_aha(logger.path, figure, reasons=cfg.task == "code")
        return m

    def save(position):
        """Checkpoint at a finished update: RL step, every rank's rollout batch if passes of it
        remain, the reference once it may differ from the base model, and how many log records
        belong before it. Called on every rank (the rollouts are gathered); rank 0 writes."""
        rollouts = [position["rollout"]]
        if dist.is_ddp:
            rollouts = [None] * dist.world_size
            torch.distributed.all_gather_object(rollouts, position["rollout"])
        ref_state = ref_model.state_dict() if ref_model is not None and cfg.ref_reset_every and \
            position["step"] >= cfg.ref_reset_every else None
        save_checkpoint(cfg.out_dir, model, optimizer, position["step"], dataclasses.asdict(cfg),
                        rollouts=rollouts, keep=position["keep"], ref_model=ref_state, init_sha256=init_sha256)

    print0(f"GRPO: {cfg.steps} steps x {cfg.prompts_per_step} questions x {cfg.group_size} samples, "
           f"{dist.world_size} process(es) on {dist.device}")
    if not cfg.resume:
        evaluate_held_out(0)
    position = {"step": start_step, "rollout": rollout, "keep": logger.n_records}  # last finished update
    t_last = time.time()
    try:
        for step in range(start_step, cfg.steps):
            if rollout is None:
                # a. held-out evaluation (R1 Figure 2), every eval_every steps
                if cfg.eval_every and step > 0 and step % cfg.eval_every == 0:
                    evaluate_held_out(step)
                # b. R1-Zero replaces pi_ref by the current policy every ref_reset_every steps
                if ref_model is not None and cfg.ref_reset_every and step > 0 and step % cfg.ref_reset_every == 0:
                    ref_model.load_state_dict(model.state_dict())
                # c. this rank's questions (TRAIN split), and one RL step's data from them
                problems, gen = step_inputs(cfg, task, step, dist.rank, dist.device)
                batch, info = rl_batch(model, ref_model, tok, problems, cfg, score_batch, gen)
                rollout = {"batch": batch, "info": info, "pass": 0}
            batch, info = rollout["batch"], rollout["info"]
            # d. mu optimizer steps on the same rollouts (pi_old stays the policy that sampled them)
            for i in range(rollout["pass"], mu):
                lr = set_lr(optimizer, lr_at(step * mu + i, cfg.lr, cfg.warmup_steps, cfg.steps * mu, cfg.min_lr_ratio))
                t_update = time.time()
                # e. the update, its record and the new position (what a checkpoint would hold now) change
                #    together: a Ctrl-C in between waits until all three are done
                with interrupts_deferred():
                    metrics = optimizer_step(wrapped, optimizer, micro_batches(batch, cfg.micro_batch_size), loss_fn,
                                             cfg.grad_clip)
                    now = time.time()
                    record = {"kind": "train", "step": step + 1, **({"pass": i + 1} if mu > 1 else {}),
                              **all_reduce(info), **metrics, "lr": lr, "t_update": now - t_update, "dt": now - t_last}
                    t_last = now
                    logger.log(record)
                    rollout = {**rollout, "pass": i + 1} if i + 1 < mu else None
                    position = {"step": step + 1 if rollout is None else step, "rollout": rollout,
                                "keep": logger.n_records}
                print0(MetricsLogger.format_line({"step": f"{step + 1}/{cfg.steps}",
                                                  **{k: v for k, v in record.items() if k not in ("kind", "step")}}))
            # f. a few sampled completions now and then
            if cfg.show_every and step % cfg.show_every == 0:
                for j in (0, cfg.group_size):
                    if j < len(batch["texts"]):
                        print0(f"--- step {step + 1} sample {j} reward {batch['rewards'][j]:.2f}: "
                               f"{batch['prompts'][j]}{batch['texts'][j]}")
            # g. checkpoint every ckpt_every steps
            if cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                save(position)
    except KeyboardInterrupt:
        print0(f"\ninterrupted: saving the state after RL step {position['step']} to {cfg.out_dir}; "
               f"continue with --resume")
        save(position)
        raise
    except NonFiniteError as e:  # nothing is saved: the last checkpoint stays the last good one
        raise SystemExit(diverged_message(e, step + 1, cfg.out_dir)) from e
    finally:  # draw what the run has so far, Ctrl-C too
        if dist.is_main and os.path.exists(logger.path):
            plot_aha(logger.path, figure, reasons=cfg.task == "code")
    save(position)
    after = evaluate_held_out(cfg.steps)
    if dist.is_main:
        records = read_metrics(logger.path)
        before = next(r for r in records if r["kind"] == "eval")
        train = [r for r in records if r["kind"] == "train"]
        print0(f"\nR1-Zero summary ({time.time() - t_start:.0f} s wall clock, figure: {figure})")
        # held-out, before -> after; acc_formatted (accuracy among well-formed completions) splits a
        # pass@1 gain into answering better and merely formatting better
        nan = float("nan")  # a metric a run's first records lack (a run resumed across versions of this file)
        for key in ("pass@1", "cons@k", "format", "acc_formatted", "length", "reasons", "self_check", "mixed", "tries",
                    "backtracks", "give_up", "drift"):
            print0(f"  {key:<13} {before.get(key, nan):.3f} -> {after.get(key, nan):.3f}")
        if "by_kind" in after:
            print0(by_kind_line(after, before))
        # the rollouts, first RL step -> last: what a run that learns nothing shows (cut at the cap,
        # groups with no reward spread, a collapsing entropy, wrong completions growing)
        for key, unit in (("len", " tokens"), ("len_right", " tokens"), ("len_wrong", " tokens"), ("truncated", ""),
                          ("zero_adv_frac", ""), ("entropy", " nats")):
            print0(f"  train {key:<13} {train[0].get(key, nan):.3f} -> {train[-1].get(key, nan):.3f}{unit}")
        # where the RL loop's time went: a rollout batch's parts once (its first pass), every update pass;
        # "other" is the rest: held-out evaluations, checkpoints, logging
        total = sum(r["dt"] for r in train)
        parts = {name: sum(r[key] for r in train if r.get("pass", 1) == 1) for name, key in
                 (("rollouts", "t_rollout"), ("rewards", "t_reward"), ("log-probs", "t_logprobs"))}
        parts["update"] = sum(r["t_update"] for r in train)
        parts["other"] = total - sum(parts.values())
        print0(f"  loop time    {total:.0f} s: " + ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items()))
    teardown_ddp()
    return {"before": before if dist.is_main else {}, "after": after}


def main(argv=None):
    cfg = config_from_args(GRPOConfig, argv, presets=PRESETS, description=__doc__.split("\n")[0], check=check_files)
    run(cfg)


if __name__ == "__main__":
    main()
