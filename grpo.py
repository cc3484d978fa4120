"""GRPO (Group Relative Policy Optimization) and the R1-Zero experiment: pure RL with rule-based
rewards, starting from the base model of pretrain.py.

Paper map (docs/PAPER.md has the equations and a worked example of each):
  group_advantages  R1 eq. 3: A_i = (r_i - mean(r)) / std(r), per group of G samples
  grpo_loss         DeepSeekMath eq. 3 (per-token ratio, 1/|o_i| mean; R1 eq. 1 writes it per
                    sequence: --seq-ratio): min(rho A, clip(rho, 1-eps, 1+eps) A) - beta KL, with
                    the k3 KL estimator of R1 eq. 2 / DeepSeekMath eq. 4: pi_ref/pi - log(pi_ref/pi) - 1,
                    on tokens sampled from pi_old (its value estimates KL(pi_theta||pi_ref) only while
                    pi_theta = pi_old; as a loss term its expected gradient is that of KL(pi_ref||pi_theta):
                    docs/PAPER.md section 1.3)
  grpo_step         one RL step, top to bottom: questions -> G completions each from pi_old -> rule
                    rewards -> group advantages -> log-probs -> mu updates of grpo_loss (read this first)
  run               the R1-Zero loop: evaluation, reference reset, grpo_step, samples, checkpoints,
                    each a visible line; RunState holds what goes from step to step

    python grpo.py                          # the whole R1-Zero experiment on a CPU, the search world:
                                            # pretrains a base model into out/base/ if none, 40 RL
                                            # steps, out/grpo/aha.png
    python grpo.py --seed 1                 # a whole new run: out/base-s1/, out/grpo-s1/
    python grpo.py --task add               # the quick run, 3-digit addition: out/base-add/, out/grpo-add/
    python grpo.py --task code              # tiny programs judged by running them in the sandbox:
                                            # out/base-code/, out/grpo-code/
    torchrun --standalone --nproc_per_node=N grpo.py
    python grpo.py --init-from hf:DIR --preset gpu-24gb   # a real base model (Qwen2.5-0.5B...), TinyZero's
                                            # Countdown on one GPU (docs/REAL_MODELS.md)

Shapes: N questions per step, G group size, B = N*G sequences, T tokens, V vocab.

Deliberate deviations from the paper:
1. Scale: 16 questions x 8 samples per step (paper: 32 x 16), 40 steps (25 add, 30 code; paper:
   10,400), a 0.80M-parameter model pretrained here on a synthetic web (paper: DeepSeek-V3-Base).
2. The KL coefficient is 0.04 (DeepSeekMath's value) rather than R1-Zero's 0.001: with few, large
   steps on a tiny model, a tighter leash keeps the policy from collapsing.
3. The prompt template is the short `<|user|>question<|assistant|>` form (tasks.format_prompt), not
   the paper's full instruction: the base model learned the format in pretraining. A real base
   model (--init-from hf:DIR) gets the instruction as text, "<think>" pre-filled (tasks.prefill).
4. The reference model is the initial policy and is never reset by default (R1-Zero reset it every
   400 steps; our runs are 25-40 steps). --ref-reset-every sets it.
5. The reward is accuracy + 0.1 x format (the journal version adds the two rules with equal weight):
   the format term is a small bonus beside accuracy (--reward sets the spec).
"""
from __future__ import annotations

import deps  # noqa: F401  first: a missing package is one line and exit 2, not a traceback

import copy
import dataclasses
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import pretrain  # deliberate reuse: `python grpo.py` on a fresh clone pretrains its base model first
import sandbox
from common import (DEFAULT_TASK, DistInfo, MetricsLogger, NonFiniteError, all_reduce, check_fits, check_processes,
                    check_ranges, check_resume, checkpoint_path, checkpoint_sha256, config_from_args, derive_seed,
                    diverged_message, get_device, interrupts_deferred, load_checkpoint, load_model, lr_at,
                    make_optimizer, optimizer_step, pack, print0, progress, read_metrics, restore, run_dir,
                    save_checkpoint, seed_everything, set_lr, setup_ddp, start_fresh, sum_over_ranks, teardown_ddp,
                    world_size, wrap)
from corpus import WEB_TASKS
from evaluate import EVAL_MAX_NEW_TOKENS, behaviour, by_kind_line, held_out, summarize_behaviour
from model import GPT, GPTConfig, ended, sample_completions, token_logprobs
from plots import plot_aha
from rewards import parse_reward_spec
from tasks import TASKS, format_prompt, longest_prompt, prefill, sample_problems, task_from_config
from tokenizer import Tokenizer, get_tokenizer

LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


# RL steps when --steps is not given, per world: long enough for the held-out curves to show what RL
# does there (search: the length rises for ~40 steps; addition: solved by step 10-15; code: pass@1
# still rising at 30, at ~35 s a step)
TASK_STEPS = {"pairsum": 40, "add": 25, "code": 30}


@dataclass
class GRPOConfig:
    init_from: str = ""                 # base model checkpoint dir, or hf:DIR (a local Hugging Face base model); "" = out/base (out/base-sN for --seed N), pretrained there if missing
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
    show_keys: str = ""                 # the metrics the step and eval lines print, comma-separated ("" = all;
                                        # metrics.jsonl always holds all of them): e.g. "reward,len,kl"
    ckpt_every: int = 5                 # checkpoint every N RL steps (0 = only at the end; Ctrl-C saves too):
                                        # 5 bounds what a SIGKILL loses to under a minute in every world
    seed: int = 0                       # seed for questions, sampling and (if pretraining) the base model
    device: str = ""                    # "" = auto (cuda, mps, cpu)
    compile: bool = False               # torch.compile the training forward/backward (opt-in; bench.py measures it)
    estimate_memory: bool = False       # print this run's estimated GPU memory per process (memory_estimate) and exit

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
    if cfg.init_from == run_dir("out/base", cfg.seed, cfg.task):
        pretrain.check_base(cfg.init_from)  # the default base: made by this code's pretraining recipe
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
    check_fits(longest, eval_cap(cfg), max_seq_len, what="the held-out evaluation's cap (grpo.eval_cap)")
    if cfg.device:
        get_device(cfg.device)  # a ValueError if that device is not available here
    check_processes(cfg.prompts_per_step, "--prompts-per-step")


def eval_cap(cfg: GRPOConfig) -> int:
    """The held-out evaluation's token cap: the protocol's (evaluate.EVAL_MAX_NEW_TOKENS, 320), or the
    rollouts' when those are longer (a real model's --preset gpu-*), so no evaluation cuts what a
    rollout may write. Our runs (256 tokens) keep the protocol's."""
    return max(EVAL_MAX_NEW_TOKENS, cfg.max_new_tokens)


# what an exact --resume depends on: the checkpoint's values must equal the command line's
RESUME_MUST_MATCH = ("task", "seed", "reward", "prompts_per_step", "group_size", "max_new_tokens", "temperature",
                     "num_iterations", "micro_batch_size", "kl_beta", "ref_reset_every", "loss_agg", "scale_std",
                     "seq_ratio")


# A real model on one GPU (`--init-from hf:DIR --task countdown`, issue 25): TinyZero's learning
# rate and KL weight, and rollout and micro-batch sizes that memory_estimate puts under the card
# with room to spare: ~0.5B models on 24 GB, ~1.5B on 80 GB (docs/REAL_MODELS.md has the table;
# estimates, not measured on a GPU). Every CUDA run is bf16 autocast over float32 weights
# (model.autocast_for).
GPU = {"task": "countdown", "lr": 1e-6, "kl_beta": 0.001, "steps": 300, "eval_every": 20, "eval_problems": 100,
       "show_every": 10, "ckpt_every": 10}
PRESETS = {
    "cpu": {},                                                              # the defaults
    "smoke": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 16,
              "eval_problems": 2, "eval_k": 2, "eval_every": 0, "show_every": 1},  # tests: seconds
    "gpu-24gb": {**GPU, "prompts_per_step": 16, "group_size": 8, "max_new_tokens": 512, "micro_batch_size": 2},
    "gpu-80gb": {**GPU, "prompts_per_step": 32, "group_size": 8, "max_new_tokens": 1024, "micro_batch_size": 2},
}


def memory_estimate(model: GPTConfig, cfg: GRPOConfig, prompt_len: int, n_processes: int = 1) -> dict[str, float]:
    """GiB one process needs for a GRPO run of `model` with cfg's sizes, by part (an estimate, for
    choosing sizes: allocator slack and CUDA's own ~1 GiB come on top). float32 weights, gradients
    and AdamW's two moments (16 bytes a parameter) and pi_ref's weights (4, when kl_beta > 0); the
    rollout's KV cache (float32, every row at prompt + max_new_tokens) and its sampling (about six
    (rows, V) float32 tensors: the last position's logits, the noise, top-p's sort; generate never
    holds a prompt's full logits: GPT.forward's last_only); the update's micro-batch: float32 logits
    over the vocabulary three times (logits, log-softmax, gradient) and bf16 activations kept for
    the backward (about 2 (10 C + 4 H) + 8 C bytes per token per layer)."""
    with torch.device("meta"):
        n = GPT(model).num_params()
    rows, T = cfg.prompts_per_step * cfg.group_size // n_processes, prompt_len + cfg.max_new_tokens
    tokens = cfg.micro_batch_size * T
    parts = {"weights+grads+AdamW": 16 * n, "pi_ref": 4 * n if cfg.kl_beta > 0 else 0,
             "KV cache (rollout)": 4 * 2 * model.n_layer * model.n_kv_head * model.head_dim * rows * T,
             "sampling (rollout)": 6 * 4 * rows * model.vocab_size,
             "logits (update)": 3 * 4 * tokens * model.vocab_size,
             "activations (update)": tokens * model.n_layer * (2 * (10 * model.n_embd + 4 * model.hidden_dim) + 8 * model.n_embd)}
    return {k: v / 2 ** 30 for k, v in parts.items()} | {"params (B)": n / 1e9}


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
    # >>> exercise: advantages
    r = rewards.float().view(-1, group_size)              # (N, G)
    centered = r - r.mean(dim=1, keepdim=True)            # (N, G)
    if scale_std:
        std = r.std(dim=1, keepdim=True)                  # (N, 1), unbiased like torch's default
        centered = centered / (std + eps)
    return centered.flatten()                             # (N*G,)
    # <<< exercise: advantages


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
    # >>> exercise: clipped_objective
    log_ratio = torch.where(on, logp - logp_old, 0.0)                     # (B, T)
    if seq_ratio:
        log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(logp)   # (B, T), one value per row
    ratio = torch.exp(log_ratio)                                          # (B, T) rho
    adv = advantages.to(logp.dtype)[:, None]                              # (B, 1)
    unclipped = ratio * adv                                               # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv        # (B, T)
    policy_per_token = -torch.min(unclipped, clipped)                     # (B, T) policy loss
    # <<< exercise: clipped_objective
    kl = torch.zeros_like(logp)
    if beta > 0:
        # k3 estimator, R1 eq. 2 (per token as in DeepSeekMath eq. 4): pi_ref/pi - log(pi_ref/pi) - 1, >= 0
        # >>> exercise: k3_kl
        log_ref_ratio = torch.where(on, logp_ref - logp, 0.0)             # (B, T), 0 on padding
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
        # <<< exercise: k3_kl
    per_token = policy_per_token + beta * kl                              # (B, T)

    def aggregate(x):  # (B, T) per-token terms -> this batch's share of the loss
        # >>> exercise: loss_aggregation
        if loss_agg == "token-mean":
            return (x * mask).sum() / n_tokens
        per_row = (x * mask).sum(dim=1)                                   # (B,)
        if loss_agg == "seq-mean-token-mean":
            per_row = per_row / mask.sum(dim=1).clamp(min=1)
        else:
            per_row = per_row / (norm_len or mask.shape[-1])
        return per_row.sum() / n_rows
        # <<< exercise: loss_aggregation

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


def grpo_step(state: RunState, step: int, problems: list, generator=None) -> tuple[dict, list[dict]]:
    """RL step `step` of R1-Zero on this rank's questions: GRPO top to bottom (R1 section 2.2.1,
    eqs. 1-3; DeepSeekMath section 4.1.2, Algorithm 1). Returns the step's rollout batch and one
    record per update pass. What keeps the step exact and resumable sits behind the calls at its
    edges: batch_logprobs and micro_batches (the update's micro-batches; each one's loss is its
    exact share of the batch's), optimizer_step (gradients summed over micro-batches and DDP ranks,
    the NaN guard, gradient clipping), state.record_update (the record, and the checkpoint position
    moved past the update), state.rollouts (a run resumed after pass i of this step goes on with
    pass i + 1 on the checkpoint's rollouts)."""
    cfg, tok, G, mu = state.cfg, state.tok, state.cfg.group_size, state.cfg.num_iterations
    pi_theta, pi_ref = state.policy, state.pi_ref
    rollouts = state.rollouts  # None, unless resumed in the middle of this step
    if rollouts is None:
        t0 = time.time()
        # 1. each question G times, in the R1-Zero template
        prompts = [format_prompt(p.question) for p in problems for _ in range(G)]
        # 2. G completions per question from pi_old (the policy as it is now), at the sampling temperature
        prompt_ids, completion_ids, texts = sample_completions(pi_theta, tok, prompts, cfg.max_new_tokens,
                                                               cfg.temperature, None, generator, len(prompts))
        texts = [prefill() + t for t in texts]  # "" for our models; a real model's template wrote "<think>"
        t1 = time.time()
        # 3. rule-based rewards (accuracy + format; no length term, no reward model)
        scored = state.score_batch(texts, [problems[i // G].as_dict() for i in range(len(texts))])
        rewards = torch.tensor([total for total, _ in scored])                    # (B,)
        t2 = time.time()
        # 4. group-relative advantages, R1 eq. 3: every token of completion i gets A_i
        advantages = group_advantages(rewards, G, cfg.scale_std)                  # (B,)
        # 5. prompt + completion, the mask of completion tokens, and their log-probs under pi_old
        #    (only for mu > 1: at mu = 1 pi_old = pi_theta) and pi_ref, at the sampling temperature
        tokens, mask = pack(prompt_ids, completion_ids, tok.pad_id)               # (B, T), (B, T-1)
        logp_old = batch_logprobs(pi_theta, tokens, mask, cfg, "pi_old") if mu > 1 else None         # (B, T-1)
        logp_ref = batch_logprobs(pi_ref, tokens, mask, cfg, "pi_ref") if cfg.kl_beta > 0 else None  # (B, T-1)
        t3 = time.time()
        batch = {"tokens": tokens, "mask": mask, "advantages": advantages, "logp_old": logp_old,
                 "logp_ref": logp_ref, "prompts": prompts, "texts": texts, "rewards": rewards.tolist()}
        info = {**rollout_info(problems, completion_ids, texts, scored, rewards, cfg, tok),
                "t_rollout": t1 - t0, "t_reward": t2 - t1, "t_logprobs": t3 - t2}
        rollouts = {"batch": batch, "info": info, "pass": 0}
    # 6. the objective of R1 eq. 1 as a loss (grpo_loss): per completion token -min(rho A_i,
    #    clip(rho, 1 - eps, 1 + eps) A_i), rho = pi_theta / pi_old, plus beta times the k3 KL to pi_ref;
    #    each micro-batch's loss is its exact share of the batch's
    loss_fn, micro = make_loss_fn(cfg), micro_batches(rollouts["batch"], cfg.micro_batch_size)
    # 7. mu optimizer steps on the same rollouts (pi_old stays the policy that sampled them)
    records = []
    for i in range(rollouts["pass"], mu):
        lr = set_lr(state.optimizer, lr_at(step * mu + i, cfg.lr, cfg.warmup_steps, cfg.steps * mu, cfg.min_lr_ratio))
        t_update = time.time()
        with interrupts_deferred():  # a Ctrl-C waits until the update, its record and the position agree
            metrics = optimizer_step(state.wrapped, state.optimizer, micro, loss_fn, cfg.grad_clip)
            records.append(state.record_update(step, i, rollouts, metrics, lr, t_update))
    return rollouts["batch"], records


def rollout_info(problems, completion_ids, texts, scored, rewards, cfg: GRPOConfig, tok) -> dict:
    """A rollout batch's step-level numbers: the mean reward and its components, the length, and
    what shows a run learning nothing: the share of rollouts cut at the token cap, the lengths of
    right and wrong completions (a length rise that is only wrong completions growing is not
    reasoning), the behaviour counts of evaluate.behaviour. The right and wrong lengths are sums and
    counts over all ranks, so every rank logs the batch's value and none is NaN alone."""
    cut = [len(ids) >= cfg.max_new_tokens and not ended(tok, ids) for ids in completion_ids]
    right = [c.get("accuracy", 0.0) == 1.0 for _, c in scored]
    lengths = [len(ids) for ids in completion_ids]

    def mean_len(selected):  # mean length of the selected completions over all ranks; NaN if there are none
        n = sum_over_ranks(sum(selected))
        return sum_over_ranks(sum(n_i for n_i, s in zip(lengths, selected) if s)) / n if n else float("nan")

    components = {k: sum(c[k] for _, c in scored) / len(scored) for k in scored[0][1]}
    languages = [problems[i // cfg.group_size].language for i in range(len(texts))]
    behaviour_means = summarize_behaviour([{**behaviour(t, lang), "language": lang} for t, lang in zip(texts, languages)])
    return {"reward": rewards.mean().item(), **{f"r_{k}": v for k, v in components.items()},
            "len": sum(lengths) / len(lengths), "truncated": sum(cut) / len(cut),
            "len_right": mean_len(right), "len_wrong": mean_len([not r for r in right]), **behaviour_means}


def micro_batch_plan(mask, size: int) -> list[tuple[torch.Tensor, int]]:
    """Which rows form each micro-batch, and where it is cut, as (row indices, tokens kept): rows
    sorted by length (where their last completion token is), `size` at a time, each micro-batch cut
    after its own longest row. Rollouts run from 20 to 250 tokens; padded to the longest row of the
    whole batch, half of the positions would be padding. The loss is a sum of per-row shares, so
    the order of the rows changes nothing but float rounding. mask (B, T-1) -> [(indices (b,), T_mb)]."""
    col = torch.arange(mask.size(1))                                      # (T-1,)
    last = torch.where(mask > 0, col, -1).max(dim=1).values              # (B,) last completion position
    ends = (last + 2).clamp(min=2)                                        # (B,) tokens each row needs
    order = torch.argsort(ends, stable=True)                              # (B,) shortest first
    return [(rows, int(ends[rows].max())) for rows in order.split(size)]


@torch.no_grad()
def batch_logprobs(model, tokens, mask, cfg: GRPOConfig, name: str = "pi_ref"):
    """token_logprobs under `model` (pi_old or pi_ref: `name`) without autograd, in the micro-batches
    the update uses (micro_batch_plan), so pi_old's numbers are bit-identical to pi_theta's on the
    first update pass (ratio exactly 1). (B, T-1), 0 after each row's end. A non-finite log-prob of
    a completion token on any rank raises NonFiniteError on every rank (the count is summed over
    ranks, so all stop together)."""
    device = next(model.parameters()).device
    out = torch.zeros(mask.shape)                                         # (B, T-1)
    for rows, T in micro_batch_plan(mask, cfg.micro_batch_size):
        out[rows, :T - 1] = token_logprobs(model, tokens[rows, :T].to(device), cfg.temperature).cpu()
    if sum_over_ranks((~out[mask > 0].isfinite()).sum().item()) > 0:
        raise NonFiniteError(f"non-finite {name} log-probs")
    return out


def micro_batches(batch: dict, size: int) -> list[dict]:
    """The batch's tensors cut as micro_batch_plan says, each micro-batch carrying the whole batch's
    row and completion-token counts over all ranks, so each micro-batch's loss is its exact share."""
    n_rows = sum_over_ranks(len(batch["tokens"]))
    n_tokens = sum_over_ranks(batch["mask"].sum().item())
    out = []
    for rows, T in micro_batch_plan(batch["mask"], size):
        mb = {"tokens": batch["tokens"][rows, :T], "mask": batch["mask"][rows, :T - 1],
              "advantages": batch["advantages"][rows]}
        for k in ("logp_old", "logp_ref"):
            mb[k] = None if batch[k] is None else batch[k][rows, :T - 1]
        out.append({**mb, "n_rows": n_rows, "n_tokens": n_tokens})
    return out


def make_loss_fn(cfg: GRPOConfig):
    """loss_fn(model, micro_batch) -> (loss share, stats), as common.optimizer_step wants it: the
    policy's log-probs (pi_theta, with autograd) and entropy, then grpo_loss."""
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


def run(cfg: GRPOConfig, score_batch=None) -> dict:
    """R1-Zero: GRPO from the base model with rule rewards, one grpo_step per RL step, and around it
    every other thing a step does as a line of the loop. Returns held-out metrics before/after.
    score_batch: grpo_step's reward function, default reward_fn(cfg) (soak_sandbox.py --grpo-steps
    wraps that in one that swaps a share of the rollouts for hostile programs)."""
    t_start = time.time()
    state = start_run(cfg, score_batch)  # fresh, or from out_dir/ckpt.pt with --resume (mid-step too)
    print0(f"GRPO: {cfg.steps} steps x {cfg.prompts_per_step} questions x {cfg.group_size} samples, "
           f"{state.dist.world_size} process(es) on {state.dist.device}")
    if not cfg.resume:  # the base model's held-out score (the figure's step 0), in every checkpoint's log
        state.evaluate(0)
        state.n_records = state.logger.n_records
    bar = progress(total=cfg.steps, initial=state.step, desc="RL", unit="step")  # rate, time left (on a terminal)
    state.t_last = time.time()  # the first record's dt counts from here
    try:
        for step in range(state.step, cfg.steps):
            if state.rollouts is None:  # else resumed after update pass i of this step: on with pass i + 1
                # a. held-out evaluation (R1 Figure 2), every eval_every steps
                if cfg.eval_every and step > 0 and step % cfg.eval_every == 0:
                    state.evaluate(step)
                # b. R1-Zero replaces pi_ref by the current policy every ref_reset_every steps
                if state.pi_ref is not None and cfg.ref_reset_every and step > 0 and step % cfg.ref_reset_every == 0:
                    state.pi_ref.load_state_dict(state.policy.state_dict())
            # c. this rank's questions (TRAIN split), and one RL step on them
            problems, generator = step_inputs(cfg, state.task, step, state.dist.rank, state.dist.device)
            batch, records = grpo_step(state, step, problems, generator)
            if records:  # the rollout's speed, in completion tokens sampled per second
                bar.set_postfix_str(f"{batch['mask'].sum().item() / max(records[0]['t_rollout'], 1e-9):,.0f} "
                                    f"sampled tok/s (this process)", refresh=False)
            # d. a few sampled completions now and then
            if cfg.show_every and step % cfg.show_every == 0:
                print_samples(batch, step, cfg.group_size)
            # e. checkpoint every ckpt_every steps
            if cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                state.save()
            bar.update(1)
    except KeyboardInterrupt:
        print0(f"\ninterrupted: saving the state after RL step {state.step} to {cfg.out_dir}; continue with --resume")
        state.save()
        raise
    except NonFiniteError as e:  # nothing is saved: the last checkpoint stays the last good one
        raise SystemExit(diverged_message(e, step + 1, cfg.out_dir)) from e
    finally:  # draw what the run has so far, Ctrl-C too
        bar.close()
        state.draw_figure()
    state.save()
    after = state.evaluate(cfg.steps)
    before = print_summary(state.logger.path, after, state.figure, time.time() - t_start) if state.dist.is_main else {}
    teardown_ddp()
    return {"before": before, "after": after}


@dataclass
class RunState:
    """A GRPO run between two updates: what grpo_step reads and advances, and the machinery that
    keeps the run exact and resumable (metrics log, checkpoints, held-out evaluation). start_run
    builds one for run(); a test can build one from its own models (it logs nowhere then).
    The checkpoint position (step, rollouts, n_records) is what ckpt.pt would hold now; it moves
    only with an update (record_update), so a checkpoint never holds updated weights under an
    older position, and a resumed run redoes exactly what came after it."""
    cfg: GRPOConfig
    tok: Tokenizer
    policy: torch.nn.Module                # pi_theta itself: sampling, log-probs, checkpoints
    pi_ref: torch.nn.Module | None         # the KL's reference policy; None when kl_beta = 0
    optimizer: torch.optim.Optimizer
    score_batch: Callable                  # (texts, problem dicts) -> [(reward, {component: value})]
    wrapped: torch.nn.Module | None = None  # pi_theta as the update calls it (common.wrap: DDP, compile); None = policy
    logger: MetricsLogger = field(default_factory=lambda: MetricsLogger(None))
    step: int = 0                          # checkpoint position: RL steps whose update passes are all done,
    rollouts: dict | None = None           # step `step`'s rollouts ({batch, info, pass}) while passes remain,
    n_records: int = 0                     # and the metrics records written by then
    t_last: float = field(default_factory=time.time)  # when the last update ended (a record's dt)
    task: object = None                    # for held-out evaluation and checkpoints (start_run sets these)
    dist: DistInfo = field(default_factory=lambda: DistInfo(0, 0, 1, torch.device("cpu")))
    init_sha256: str | None = None         # the checkpoint the run started from, saved with every checkpoint

    def __post_init__(self):
        if self.wrapped is None:
            self.wrapped = self.policy

    @property
    def figure(self) -> str:
        return os.path.join(self.cfg.out_dir, "aha.png")

    def record_update(self, step: int, i: int, rollouts: dict, metrics: dict, lr: float, t_update: float) -> dict:
        """Update pass i of RL step `step` is done: log its record (the rollouts' info averaged over
        ranks, the update's metrics), move the checkpoint position past it, print its line."""
        mu, now = self.cfg.num_iterations, time.time()
        record = {"kind": "train", "step": step + 1, **({"pass": i + 1} if mu > 1 else {}), **all_reduce(rollouts["info"]),
                  **metrics, "lr": lr, "t_update": now - t_update, "dt": now - self.t_last}
        self.t_last = now
        self.logger.log(record)
        self.rollouts = {**rollouts, "pass": i + 1} if i + 1 < mu else None
        self.step = step + 1 if self.rollouts is None else step
        self.n_records = self.logger.n_records
        print0(MetricsLogger.format_line({"step": f"{step + 1}/{self.cfg.steps}",
                                          **self.shown(record, exclude=("kind", "step"))}))
        return record

    def shown(self, record: dict, exclude=()) -> dict:
        """The part of a record the printed line shows: --show-keys, or all of it."""
        keys = [k.strip() for k in self.cfg.show_keys.split(",") if k.strip()] or list(record)
        return {k: record[k] for k in keys if k in record and k not in exclude}

    def evaluate(self, step: int) -> dict:
        """Held-out pass@1 / cons@k with the paper's sampling settings, code judged under the run's
        --code-timeout-s (rank 0; {} elsewhere): logged, printed, the figure redrawn."""
        if not self.dist.is_main:
            return {}
        cfg = self.cfg
        m = held_out(self.policy, self.tok, self.task, cfg.eval_problems, cfg.eval_k,
                     derive_seed(cfg.seed, "eval", step), sandbox.Limits(timeout_s=cfg.code_timeout_s),
                     max_new_tokens=eval_cap(cfg))
        self.logger.log({"kind": "eval", "step": step, **m})
        print0(f"eval @ step {step} | " + MetricsLogger.format_line(self.shown(m, exclude=("by_kind",))))
        if "by_kind" in m:
            print0(by_kind_line(m))
        self.draw_figure()
        return m

    def draw_figure(self) -> None:
        """out_dir/aha.png from the metrics log so far (rank 0)."""
        if self.dist.is_main and self.logger.path and os.path.exists(self.logger.path):
            plot_aha(self.logger.path, self.figure, reasons=self.cfg.task == "code")

    def save(self) -> None:
        """Checkpoint the position: the weights and optimizer after `step` RL steps, every rank's
        rollouts if passes of them remain, the reference once it may differ from the base model,
        and how many log records belong before it. Called on every rank (the rollouts are
        gathered); rank 0 writes."""
        cfg, rollouts = self.cfg, [self.rollouts]
        if self.dist.is_ddp:
            rollouts = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rollouts, self.rollouts)
        reset = self.pi_ref is not None and cfg.ref_reset_every and self.step >= cfg.ref_reset_every
        save_checkpoint(cfg.out_dir, self.policy, self.optimizer, self.step, dataclasses.asdict(cfg), rollouts=rollouts,
                        keep=self.n_records, ref_model=self.pi_ref.state_dict() if reset else None,
                        init_sha256=self.init_sha256)


def start_run(cfg: GRPOConfig, score_batch=None) -> RunState:
    """A run's state at its start: the base model (pretrained first when the default base directory
    has none), DDP, seeds, pi_ref, the optimizer; with --resume, all a checkpoint holds: weights,
    optimizer, RNG, reference, and where in the step it stopped."""
    # `python grpo.py` on a fresh clone: pretrain the base model first (check_files has refused any
    # other missing --init-from than the default base directory)
    pretrain.ensure_base_model(cfg.init_from, seed=cfg.seed, device=cfg.device, task=cfg.task,
                               min_digits=cfg.min_digits, max_digits=cfg.max_digits)
    dist = setup_ddp(cfg.device or None)
    seed_everything(cfg.seed, dist.rank)
    policy, _ = load_model(cfg.init_from, dist.device)  # first: a real model puts its tokenizer in use
    tok, task = get_tokenizer(), task_from_config(cfg)
    score_batch = score_batch or reward_fn(cfg)
    init_sha256 = checkpoint_sha256(cfg.init_from)
    pi_ref = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.kl_beta > 0 else None
    optimizer = make_optimizer(policy, cfg.lr, cfg.weight_decay, betas=(0.9, 0.99))
    step, rollouts, n_records = 0, None, None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.out_dir, map_location=dist.device, fallback=True)
        step, rollouts, n_records = restore(policy, optimizer, ckpt), ckpt["rollouts"][dist.rank], ckpt["keep"]
        if ckpt.get("ref_model") is not None:
            pi_ref.load_state_dict(ckpt["ref_model"])
        print0(f"resumed from {cfg.out_dir} at RL step {step}" +
               (f", update pass {rollouts['pass'] + 1} of {cfg.num_iterations}" if rollouts else ""))
    else:
        start_fresh(cfg.out_dir)
    wrapped = wrap(policy, dist, cfg.compile)
    logger = MetricsLogger(cfg.out_dir, keep=n_records)  # a resumed log keeps the records before its checkpoint
    return RunState(cfg, tok, policy, pi_ref, optimizer, score_batch, wrapped=wrapped, logger=logger, step=step,
                    rollouts=rollouts, n_records=logger.n_records, task=task, dist=dist, init_sha256=init_sha256)


def step_inputs(cfg: GRPOConfig, task, step: int, rank: int, device):
    """RL step `step`'s questions (this rank's share, TRAIN split) and its sampling generator, each
    from its own seed stream: what makes a run, and a resumed run, reproducible."""
    problems = sample_problems(task, cfg.prompts_per_step // world_size(), "train",
                               seed=derive_seed(cfg.seed, "questions", step, rank))
    generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "rollouts", step, rank))
    return problems, generator


def reward_fn(cfg: GRPOConfig):
    """grpo_step's score_batch: the reward spec, its code programs judged under cfg.code_timeout_s."""
    limits = sandbox.Limits(timeout_s=cfg.code_timeout_s)
    return functools.partial(parse_reward_spec(cfg.reward).score_batch, limits=limits)


def print_samples(batch: dict, step: int, group_size: int) -> None:
    """The first completion of this rank's first two questions, with its reward (rank 0 prints)."""
    for j in (0, group_size):
        if j < len(batch["texts"]):
            print0(f"--- step {step + 1} sample {j} reward {batch['rewards'][j]:.2f}: "
                   f"{batch['prompts'][j].removesuffix(prefill())}{batch['texts'][j]}")


def print_summary(metrics_path: str, after: dict, figure: str, seconds: float) -> dict:
    """The run's summary from its metrics log: held-out before -> after, the rollouts' first -> last
    step, where the loop's time went. Returns the first evaluation (before RL)."""
    records = read_metrics(metrics_path)
    before = next(r for r in records if r["kind"] == "eval")
    train = [r for r in records if r["kind"] == "train"]
    print0(f"\nR1-Zero summary ({seconds:.0f} s wall clock, figure: {figure})")
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
    return before


def print_memory_estimate(cfg: GRPOConfig) -> None:
    """--estimate-memory: memory_estimate for --init-from's model and this command line's sizes."""
    model = GPTConfig(**load_checkpoint(cfg.init_from)["model_config"])
    prompt_len = longest_prompt(task_from_config(cfg), get_tokenizer())
    parts = memory_estimate(model, cfg, prompt_len, world_size())
    print(f"{cfg.init_from}: {parts.pop('params (B)'):.2f}B parameters; longest prompt {prompt_len} tokens")
    for name, gib in parts.items():
        print(f"  {name:<22} {gib:6.1f} GiB")
    print(f"  {'total (estimate)':<22} {sum(parts.values()):6.1f} GiB per process, plus allocator slack and CUDA's own ~1 GiB")


def main(argv=None):
    cfg = config_from_args(GRPOConfig, argv, presets=PRESETS, description=__doc__.split("\n")[0], check=check_files)
    if cfg.estimate_memory:
        print_memory_estimate(cfg)
        return
    run(cfg)


if __name__ == "__main__":
    main()
