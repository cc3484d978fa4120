"""Pretrain this project's base model (its "DeepSeek-V3-Base") on the synthetic web of corpus.py.

R1-Zero (R1 paper, "DeepSeek-R1-Zero") starts RL from a pretrained base model that already
produces reasoning now and then. We have no weights to download, so we make one here, in minutes,
by next-token prediction on documents in which the task's problems appear the way they would on the
web: pair-sum questions (the default) with a quick random guess or a search that tries pairs and
often gives up; additions (--task add) with a quick (usually wrong) answer, a worked trace or a
self-check; tiny stdin/stdout programs (--task code), written at once (usually a near miss) or after a
plan; plus plain text. See corpus.py for every choice and why.

    python pretrain.py                         # the cpu preset (model nano), out/base/, minutes on 2 cores
    python pretrain.py --seed 1                # another base model, out/base-s1/
    python pretrain.py --task add              # the addition web's base model, out/base-add/
    python pretrain.py --task code             # the code web's base model (tiny programs), out/base-code/
    python pretrain.py --preset gpu            # a larger model (model preset tiny) for one GPU
    torchrun --standalone --nproc_per_node=N pretrain.py --preset gpu

At the end it prints the base-model report (evaluate.report): pass@1, format rate, length, how
often it reasons, and accuracy with the direct answer forced vs reasoning forced.

Deliberate deviations from the paper:
1. The pretraining data is synthetic and tiny (a few million tokens of one task family), not 14.8T
   tokens of web text: the point is a base model whose behaviour RL can change, in minutes.
2. Every row of a batch starts at a document boundary (documents are packed, never split across
   rows): an aid for a tiny rotary model, which learns "where am I in this problem" faster then.
3. A curriculum in two phases. Phase 1 sees worked traces only, until the model has mastered them:
   every --mastery-every steps it answers --mastery-problems (64) training problems greedily, and
   phase 1 ends once --mastery (0.8) of them are right at --mastery-checks (2) consecutive checks (or
   at --max-warm-steps, with a warning). Phase 2 is --steps steps on the web's real mix, which sets
   how often the base model reasons. When a tiny model "gets" the trace varies from seed to seed
   (docs/LOG.md: at a fixed switch step it was a coin flip), so the switch is gated on the skill, not
   on a step count: the base model is the same by design, not by luck.
4. Muon (common.Muon: momentum whose update is orthogonalised by a float32 Newton-Schulz iteration)
   trains the blocks' matrices, AdamW the embeddings and gains, as in nanochat and the
   modded-nanogpt speedruns; DeepSeek-V3 was pretrained with AdamW. Here it halves the steps to
   mastery (docs/LOG.md, issue 23). --muon-lr 0 is AdamW throughout.
5. The tokenizer is byte-level BPE with only 256 merges learned from this synthetic web
   (tokenizer.py), digits kept single; DeepSeek-V3's has 128K tokens.
"""
from __future__ import annotations

import deps  # noqa: F401  first: a missing package is one line and exit 2, not a traceback

import dataclasses
import itertools
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import (DEFAULT_TASK, LoopConfig, MetricsLogger, all_reduce, check_fits, check_processes, check_ranges, check_resume,
                    checkpoint_path, config_from_args, derive_seed, flag, get_device, hf_dir, load_checkpoint,
                    make_optimizer, print0, progress, restore, run_dir, seed_everything, setup_ddp,
                    sum_over_ranks, start_fresh, teardown_ddp, train, unwrap, wrap)
from corpus import WEB_TASKS, CorpusConfig, forced_prefixes, sample_document
from evaluate import EVAL_MAX_NEW_TOKENS, EvalConfig, evaluate, held_out_set, report
from model import GPT, PRESETS as MODEL_PRESETS, GPTConfig
from tasks import longest_prompt, sample_problems, task_from_config
from tokenizer import get_tokenizer


@dataclass
class PretrainConfig(CorpusConfig):
    model: str = "nano"             # model preset (model.PRESETS)
    max_seq_len: int = 512          # model context length, tokens
    task: str = DEFAULT_TASK        # task family the web's problems come from (corpus.WEB_TASKS: pairsum, add, code)
    min_digits: int = 3             # fewest digits of an operand (difficulty knob)
    max_digits: int = 3             # most digits of an operand (difficulty knob)
    mastery: float = 0.8            # phase 1 (traces only) ends at this greedy accuracy on train problems (0 = no phase 1)
    mastery_problems: int = 64      # training problems each mastery check answers greedily
    mastery_every: int = 50         # check mastery every N steps of phase 1
    mastery_checks: int = 2         # phase 1 ends after this many consecutive checks at or above --mastery
    max_warm_steps: int = 1500      # phase 1 ends here even without mastery (with a warning)
    steps: int = 100                # phase 2: optimizer steps on the web's real mix
    batch_size: int = 16            # rows per step (summed over ranks)
    seq_len: int = 256              # tokens per row
    lr: float = 3e-3                # peak learning rate (AdamW: embeddings and gains; everything with --muon-lr 0)
    muon_lr: float = 0.02           # Muon's peak lr, blocks' matrices (common.Muon; the rest: AdamW at --lr); 0 = AdamW
    warmup_steps: int = 30          # linear warmup steps
    min_lr_ratio: float = 0.1       # final lr / peak lr (cosine decay)
    weight_decay: float = 0.1       # AdamW weight decay on matrices
    grad_clip: float = 1.0          # max global grad norm
    log_every: int = 20             # console line every N steps
    ckpt_every: int = 200           # checkpoint every N steps
    out_dir: str = ""               # checkpoint + metrics.jsonl; "" = out/base (out/base-sN for --seed N)
    resume: bool = False            # continue from out_dir/ckpt.pt
    eval_problems: int = 100        # held-out questions in the final report (0 = skip)
    eval_k: int = 4                 # samples per question in the final report
    seed: int = 0                   # seed for init and data
    device: str = ""                # "" = auto (cuda, mps, cpu)
    compile: bool = False           # torch.compile the training forward/backward (opt-in; bench.py measures it)

    def __post_init__(self):
        self.out_dir = self.out_dir or run_dir("out/base", self.seed, self.task)
        if self.task not in WEB_TASKS:  # the families corpus.py writes documents for
            raise ValueError(f"--task must be one of {', '.join(WEB_TASKS)} (got {self.task!r}): the "
                             f"synthetic web of corpus.py is written for these; other families are for RL "
                             f"and evaluation")
        check_ranges(self, positive=("max_seq_len", "mastery_problems", "mastery_every", "mastery_checks",
                                     "max_warm_steps", "steps", "batch_size", "seq_len", "lr", "log_every", "eval_k"),
                     non_negative=("muon_lr", "warmup_steps", "weight_decay", "grad_clip", "ckpt_every", "eval_problems"),
                     fraction=("mastery", "min_lr_ratio", "p_quick", "p_trace", "p_check", "p_bare", "p_text",
                               "quick_correct", "p_second_lang", "p_mixed", "p_search_quick", "give_up",
                               "give_up_second", "p_search_second", "p_search_mixed"),
                     choices={"model": tuple(MODEL_PRESETS)})
        if self.task != "pairsum" and self.p_trace <= 0 and (self.mastery > 0 or self.p_quick + self.p_check + self.p_bare <= 0):
            raise ValueError("--p-trace is 0: phase 1 (worked traces only) would have no documents, and the base "
                             "model nothing to reason with")
        if self.seq_len > self.max_seq_len:
            raise ValueError(f"--seq-len {self.seq_len} > --max-seq-len {self.max_seq_len}")
        check_fits(longest_prompt(task_from_config(self), get_tokenizer()), EVAL_MAX_NEW_TOKENS, self.max_seq_len,
                   what="the evaluation budget")  # a bad difficulty knob fails here too, before any work


# The recipe's name, saved in every base checkpoint: bumped whenever a default above changes what a
# base model is, so ensure_base_model never silently reuses a base made by another recipe.
RECIPE = "bpe256-muon-mastery0.8x64-phase2x100"

# what an exact --resume depends on: the checkpoint's values must equal the command line's
RESUME_MUST_MATCH = ("task", "seed", "model", "max_seq_len", "batch_size", "seq_len", "mastery", "mastery_problems",
                     "mastery_every", "mastery_checks", "max_warm_steps", "muon_lr")


def check_files(cfg: PretrainConfig) -> None:
    """The checks that read files or the environment, before any work."""
    check_resume(cfg.out_dir, cfg.resume, dataclasses.asdict(cfg), RESUME_MUST_MATCH)
    if cfg.device:
        get_device(cfg.device)  # a ValueError if that device is not available here
    check_processes(cfg.batch_size, "--batch-size")


PRESETS = {
    "cpu": {},                                                            # the defaults: model nano, minutes
    "smoke": {"steps": 2, "batch_size": 2, "seq_len": 128, "max_seq_len": 512, "eval_problems": 0,
              "log_every": 1, "warmup_steps": 1, "mastery": 0.0},        # tests: seconds
    "gpu": {"model": "tiny", "steps": 2000, "batch_size": 64, "lr": 1.5e-3},  # one GPU
}


def batches(cfg: PretrainConfig, tok, task, rank: int, world_size: int, start_step: int = 0,
            traces_only: bool = False):
    """Yield ([micro_batch], info) per step, forever: rows of whole documents packed from position 0,
    rows of this rank only; micro_batch = {"x", "y", "n_targets"}, the last the whole batch's number
    of target tokens over all ranks (the loss is a share, common.optimizer_step). Data for step s
    comes from a generator seeded by (seed, s, rank), so a resumed run sees exactly the batches it
    would have seen. traces_only: the curriculum's phase 1: every problem has a worked trace."""
    rows = cfg.batch_size // world_size
    corpus = dataclasses.replace(cfg, p_quick=0.0, p_check=0.0, p_bare=0.0, p_search_quick=0.0, give_up=0.0,
                                 give_up_second=0.0) if traces_only else cfg
    for step in itertools.count(start_step):
        rng = random.Random(derive_seed(cfg.seed, "pretrain-data", step, rank))
        x = torch.full((rows, cfg.seq_len), tok.pad_id, dtype=torch.long)   # (B, T)
        y = torch.full((rows, cfg.seq_len), -1, dtype=torch.long)           # (B, T), -1 = no loss
        for r in range(rows):
            ids: list[int] = []
            while len(ids) < cfg.seq_len + 1:
                _, text = sample_document(task, corpus, rng)
                ids += tok.encode(text, allow_special=True)
            ids = torch.tensor(ids[:cfg.seq_len + 1])
            x[r] = ids[:-1]
            y[r] = ids[1:]
        yield [{"x": x, "y": y, "n_targets": sum_over_ranks((y != -1).sum().item())}], {}


def loss_fn(model, mb):
    """Next-token cross-entropy: this micro-batch's share of the whole batch's mean over targets."""
    device = next(model.parameters()).device
    logits = model(mb["x"].to(device))                                      # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), mb["y"].to(device).flatten(), ignore_index=-1, reduction="sum")
    return loss / mb["n_targets"], {}


def run(cfg: PretrainConfig):
    """Pretrain; returns the report's metrics (or {} when eval_problems is 0)."""
    dist = setup_ddp(cfg.device or None)
    seed_everything(cfg.seed, dist.rank)
    tok = get_tokenizer()
    task = task_from_config(cfg)
    torch.manual_seed(cfg.seed)  # same init on every rank
    model = GPT(GPTConfig.from_preset(cfg.model, vocab_size=tok.vocab_size, max_seq_len=cfg.max_seq_len))
    model.to(dist.device)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, muon_lr=cfg.muon_lr)
    step, mastered_at, streak, keep = 0, None if cfg.mastery > 0 else 0, 0, None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.out_dir, map_location=dist.device, fallback=True)
        step, keep = restore(model, optimizer, ckpt), ckpt["keep"]
        mastered_at, streak = ckpt["config"]["mastered_at"], ckpt["config"]["mastery_streak"]
        print0(f"resumed from {cfg.out_dir} at step {step}")
    else:
        start_fresh(cfg.out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    print0(f"base model: preset {cfg.model}, {n_params / 1e6:.2f}M parameters, {dist.world_size} process(es) "
           f"on {dist.device}; {cfg.batch_size} rows x {cfg.seq_len} tokens per step")
    wrapped = wrap(model, dist, cfg.compile)
    loop_cfg = LoopConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(LoopConfig)})
    logger = MetricsLogger(cfg.out_dir, keep=keep)
    t0 = time.time()
    # Phase 1: worked traces only, at a constant lr after warmup, until greedy answers are right at
    # cfg.mastery_checks consecutive checks (one check is noisy: a few dozen problems, and accuracy swings)
    probe = sample_problems(task, cfg.mastery_problems, "train", seed=derive_seed(cfg.seed, "mastery-probe"))
    bar = progress(total=cfg.max_warm_steps, initial=step, desc="phase 1 (to mastery, at most)", unit="step",
                   disable=mastered_at is not None)  # its length is unknown until mastery: bounded by the cap
    while mastered_at is None:
        if step > 0 and (step % cfg.mastery_every == 0 or step >= cfg.max_warm_steps):  # at every chunk's end
            unwrap(model).eval()
            acc = evaluate(unwrap(model), tok, probe, k=1, temperature=0.0)["pass@1"]
            acc = all_reduce({"acc": acc})["acc"]  # identical on every rank; averaged to be sure
            streak = streak + 1 if acc >= cfg.mastery else 0
            print0(f"phase 1 (worked traces only), step {step}: greedy accuracy {acc:.2f} on {len(probe)} "
                   f"training problems (mastery at {cfg.mastery:.2f}, {streak} of {cfg.mastery_checks} checks)")
            if streak >= cfg.mastery_checks or step >= cfg.max_warm_steps:
                mastered_at = step
                if streak < cfg.mastery_checks:
                    print0(f"WARNING: the trace was not mastered in {step} steps (accuracy {acc:.2f}); the base "
                           f"model will rarely reason correctly and RL will have little to find")
                break
        end = min((step // cfg.mastery_every + 1) * cfg.mastery_every, cfg.max_warm_steps)  # this chunk's end
        train(wrapped, optimizer, dataclasses.replace(loop_cfg, steps=end, min_lr_ratio=1.0),
              batches(cfg, tok, task, dist.rank, dist.world_size, step, traces_only=True), loss_fn,
              start_step=step, logger=logger,
              config_dict={**dataclasses.asdict(cfg), "recipe": RECIPE, "mastered_at": None, "mastery_streak": streak},
              bar=bar)
        step = end
    bar.close()  # early, at mastery
    # Phase 2: the web's real mix for cfg.steps steps, lr on a cosine from where phase 1 left it
    # (lr_at's cosine starts where its warmup ends, so phase 1 counts as the warmup here)
    phase2 = dataclasses.replace(loop_cfg, steps=mastered_at + cfg.steps,
                                 warmup_steps=max(cfg.warmup_steps, mastered_at))
    with progress(total=phase2.steps, initial=step, desc="phase 2 (web mix)", unit="step") as bar:
        train(wrapped, optimizer, phase2, batches(cfg, tok, task, dist.rank, dist.world_size, step), loss_fn,
              start_step=step, logger=logger,
              config_dict={**dataclasses.asdict(cfg), "recipe": RECIPE, "mastered_at": mastered_at,
                           "mastery_streak": streak},
              bar=bar)
    print0(f"pretraining took {time.time() - t0:.0f} s ({mastered_at} steps of traces, then {cfg.steps} "
           f"of the web's mix); checkpoint in {cfg.out_dir}/")
    metrics = {}
    if cfg.eval_problems > 0 and dist.is_main:
        unwrap(model).eval()
        ecfg = EvalConfig(k=cfg.eval_k, seed=cfg.seed)
        problems = held_out_set(task, cfg.eval_problems)
        metrics = report(model, tok, task, problems, ecfg, forced_prefixes)  # a WEB_TASKS task (__post_init__)
    teardown_ddp()
    return metrics


def check_base(out_dir: str) -> None:
    """A ValueError in one line if out_dir holds a base model of another pretraining recipe (RECIPE):
    the scripts that pretrain a missing default base call it before any work, so an old base is
    never silently reused. A real model (hf:DIR) is not ours to check, but must be there: it is
    never pretrained here."""
    if hf_dir(out_dir) is not None:
        if not os.path.exists(checkpoint_path(out_dir)):
            raise ValueError(f"{out_dir}: no {checkpoint_path(out_dir)} (a Hugging Face model directory holds config.json)")
        return
    if os.path.exists(checkpoint_path(out_dir)):
        config = load_checkpoint(out_dir)["config"]
        made_by = config.get("recipe", "from before issue 23")
        if "max_warm_steps" in config and made_by != RECIPE:  # a pretrain.py checkpoint (not an SFT or RL one)
            raise ValueError(f"{out_dir}/ holds a base model of another pretraining recipe ({made_by}; this code's "
                             f"is {RECIPE}): move it aside (mv {out_dir} {out_dir}.old) and run again")


def ensure_base_model(out_dir: str, **overrides) -> None:
    """Pretrain a base model into out_dir unless it already holds one (PretrainConfig's defaults,
    with `overrides`, no final report): what `python grpo.py` and the notebooks do on a fresh clone.
    A base there from another recipe is refused (check_base), never reused."""
    check_base(out_dir)
    if os.path.exists(checkpoint_path(out_dir)):
        return
    flags = " ".join(f"{flag(k)} {v}" for k, v in overrides.items() if v != getattr(PretrainConfig, k))
    print0(f"no base model in {out_dir}/: pretraining one there first (python pretrain.py --out-dir {out_dir} {flags}".rstrip() + ")")
    run(PretrainConfig(**{"eval_problems": 0, **overrides, "out_dir": out_dir}))


def main(argv=None):
    cfg = config_from_args(PretrainConfig, argv, presets=PRESETS, description=__doc__.split("\n")[0],
                           check=check_files)
    run(cfg)


if __name__ == "__main__":
    main()
