"""Supervised fine-tuning (SFT) on (prompt, completion) pairs: DeepSeek-R1's cold start (stage 1) and
its rejection-sampling SFT (stage 3); distillation is the same loss on a teacher's samples.

    python sft.py --init-from out/base --data data/cold_start.jsonl --out-dir out/sft   # the reference cold start
    torchrun --standalone --nproc_per_node=N sft.py --init-from out/base --data data/cold_start.jsonl

The data: one JSON object per line with a "prompt" (the text the model is given, tasks.format_prompt's
form) and a "completion" (what it must learn to write after it, usually ending with <|endoftext|>);
other fields (where the row came from) are carried along and ignored. The loss is next-token
cross-entropy on the completion's tokens only: the prompt's tokens are context, never targets
(`sft_loss`; R1 v1 section 2.3.1: "fine-tune DeepSeek-V3-Base on the cold-start data"). The batch is
padded, and the mask of `common.pack` marks the completion's positions. At the end, the held-out
evaluation with the paper's sampling settings (pass@1 over k samples at T 0.6, top-p 0.95).

Deliberate deviations from the paper: rows are padded per micro-batch rather than packed across
examples (a few hundred short rows: padding costs little and keeps the mask obvious); a few epochs
over a few hundred rows, not two epochs over ~800K samples.
"""
from __future__ import annotations

import deps  # noqa: F401  first: a missing package is one line and exit 2, not a traceback

import dataclasses
import itertools
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass

from common import (DEFAULT_TASK, LoopConfig, MetricsLogger, check_processes, check_ranges, check_resume,
                    checkpoint_path, checkpoint_sha256, config_from_args, derive_seed, file_sha256, get_device,
                    load_checkpoint, load_model, make_optimizer, pack, print0, progress, restore, seed_everything,
                    setup_ddp, sum_over_ranks, teardown_ddp, start_fresh, train, unwrap, wrap)
from evaluate import EvalConfig, held_out_set, report
from model import token_logprobs
from tasks import TASKS, format_prompt, prefill, task_from_config
from tokenizer import ASSISTANT, EOT, USER, get_tokenizer


@dataclass
class SFTConfig:
    init_from: str = "out/base"         # checkpoint to fine-tune (the base model, or any stage's), or hf:DIR (a local Hugging Face base model)
    data: str = "data/cold_start.jsonl"  # JSONL rows {"prompt": ..., "completion": ...}
    out_dir: str = "out/sft"            # checkpoint + metrics.jsonl
    task: str = DEFAULT_TASK            # the task family the held-out evaluation (and later stages) use
    epochs: float = 3.0                 # passes over the data; the step count is ceil(epochs * rows / batch_size)
    steps: int = 0                      # optimizer steps; 0 = from --epochs
    batch_size: int = 32                # rows per optimizer step (summed over ranks)
    micro_batch_size: int = 32          # rows per forward/backward (gradient accumulation; exact for any size)
    lr: float = 1e-3                    # peak learning rate (AdamW)
    warmup_steps: int = 10              # linear warmup steps
    min_lr_ratio: float = 0.1           # final lr / peak lr (cosine decay)
    weight_decay: float = 0.0           # AdamW weight decay on matrices
    grad_clip: float = 1.0              # max global grad norm (0 = off)
    log_every: int = 10                 # console line every N steps
    ckpt_every: int = 50                # checkpoint every N steps (0 = only at the end; Ctrl-C saves too)
    eval_problems: int = 100            # held-out questions in the final evaluation (0 = skip)
    eval_k: int = 4                     # samples per question (pass@1 over k, cons@k)
    resume: bool = False                # continue from out_dir/ckpt.pt
    seed: int = 0                       # seed for the data order and the evaluation
    device: str = ""                    # "" = auto (cuda, mps, cpu)
    compile: bool = False               # torch.compile the training forward/backward (opt-in; bench.py measures it)

    def __post_init__(self):
        check_ranges(self, positive=("epochs", "batch_size", "micro_batch_size", "lr", "log_every", "eval_k"),
                     non_negative=("steps", "warmup_steps", "weight_decay", "grad_clip", "ckpt_every",
                                   "eval_problems"),
                     fraction=("min_lr_ratio",), choices={"task": tuple(TASKS)})


# what an exact --resume depends on: the checkpoint's values must equal the command line's
RESUME_MUST_MATCH = ("init_from", "data", "task", "epochs", "steps", "batch_size", "seed")


def load_rows(path: str) -> list[dict]:
    """The JSONL rows of an SFT dataset; a bad row is a one-line ValueError naming the line."""
    if not os.path.exists(path):
        raise ValueError(f"--data {path}: no such file (python pipeline.py makes the datasets of data/)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--data {path} line {n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "completion")):
                raise ValueError(f"--data {path} line {n}: needs string fields \"prompt\" and \"completion\"")
            if not row["prompt"] or not row["completion"]:
                raise ValueError(f"--data {path} line {n}: an empty prompt or completion")
            rows.append(row)
    if not rows:
        raise ValueError(f"--data {path}: no rows")
    return rows


def tokenize_rows(rows: list[dict], tok) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per row; special tokens in the text are the tokenizer's. A row in
    our chat form (`<|user|>question<|assistant|>`, what data/ holds) given to a real model is first
    re-written in its template (model_template)."""
    rows = [model_template(r["prompt"], r["completion"], tok) for r in rows]
    return [(tok.encode(p, allow_special=True), tok.encode(c, allow_special=True)) for p, c in rows]


CHAT_PROMPT = re.compile(re.escape(USER) + "(.*)" + re.escape(ASSISTANT), re.S)


def model_template(prompt: str, completion: str, tok) -> tuple[str, str]:
    """(prompt, completion) as the model in use reads them: as they are for our models; for a real
    model (a text template, tasks.format_prompt), a chat-form prompt becomes format_prompt(question)
    and the completion loses the "<think>" that prompt pre-fills; and our <|endoftext|> (how every
    row spells the end of text, evaluate.sample_training_set) becomes the tokenizer's own."""
    if tok.template != "text":
        return prompt, completion
    m = CHAT_PROMPT.fullmatch(prompt)
    if m is not None:
        prompt, completion = format_prompt(m.group(1)), completion.removeprefix(prefill())
    return prompt, completion.replace(EOT, tok.decode([tok.eot_id]))


def check_files(cfg: SFTConfig) -> None:
    """The checks that read files, before any work: --init-from is a checkpoint, --data is a valid
    dataset whose every row fits the model's context, --resume has a checkpoint of the same run."""
    if not os.path.exists(checkpoint_path(cfg.init_from)):
        raise ValueError(f"--init-from {cfg.init_from}: no checkpoint there")
    max_seq_len = load_checkpoint(cfg.init_from)["model_config"]["max_seq_len"]
    rows = load_rows(cfg.data)
    for n, (p, c) in enumerate(tokenize_rows(rows, get_tokenizer()), 1):
        if len(p) + len(c) > max_seq_len:
            raise ValueError(f"--data {cfg.data} row {n}: prompt + completion is {len(p) + len(c)} tokens, over "
                             f"the model's max_seq_len {max_seq_len}")
    check_resume(cfg.out_dir, cfg.resume, dataclasses.asdict(cfg), RESUME_MUST_MATCH)
    check_processes(cfg.batch_size, "--batch-size")
    if cfg.device:
        get_device(cfg.device)


def n_steps(cfg: SFTConfig, n_rows: int) -> int:
    return cfg.steps or max(1, math.ceil(cfg.epochs * n_rows / cfg.batch_size))


def batches(examples, cfg: SFTConfig, pad_id: int, rank: int, world_size: int, start_step: int = 0):
    """Yield (micro_batches, info) per step, forever. The data is read in epochs, each a fresh
    permutation seeded by (seed, epoch); step s takes positions s*B .. s*B+B-1 of that stream (B =
    batch_size), so a resumed run sees exactly the rows it would have seen. This rank takes every
    world_size-th of them. A micro-batch is {"tokens" (b, T), "mask" (b, T-1), "n_tokens"}, the last
    the whole batch's completion-token count over all ranks (the loss is a share of the batch's)."""
    n, perms = len(examples), {}

    def row(position):
        epoch = position // n
        if epoch not in perms:
            perms[epoch] = random.Random(derive_seed(cfg.seed, "sft-epoch", epoch)).sample(range(n), n)
        return examples[perms[epoch][position % n]]

    for step in itertools.count(start_step):
        this_rank_rows = [row(step * cfg.batch_size + j) for j in range(rank, cfg.batch_size, world_size)]
        n_tokens = sum_over_ranks(sum(len(c) for _, c in this_rank_rows))
        micro = []
        for s in range(0, len(this_rank_rows), cfg.micro_batch_size):
            chunk = this_rank_rows[s:s + cfg.micro_batch_size]
            tokens, mask = pack([p for p, _ in chunk], [c for _, c in chunk], pad_id)
            micro.append({"tokens": tokens, "mask": mask, "n_tokens": n_tokens})
        yield micro, {}


def sft_loss(model, mb):
    """Cross-entropy on the completion tokens only (mask = 1), as this micro-batch's SHARE of the
    whole batch's mean over completion tokens: prompt and padding positions carry no loss."""
    device = next(model.parameters()).device
    logp = token_logprobs(model, mb["tokens"].to(device))                  # (b, T-1)
    mask = mb["mask"].to(device)                                           # (b, T-1)
    return -(logp * mask).sum() / mb["n_tokens"], {}


def run(cfg: SFTConfig) -> dict:
    """Fine-tune cfg.init_from on cfg.data; returns the held-out metrics ({} without an evaluation)."""
    dist = setup_ddp(cfg.device or None)
    seed_everything(cfg.seed, dist.rank)
    model, init = load_model(cfg.init_from, dist.device)  # first: a real model puts its tokenizer in use
    tok = get_tokenizer()
    examples = tokenize_rows(load_rows(cfg.data), tok)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, keep = 0, None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.out_dir, map_location=dist.device, fallback=True)
        step, keep = restore(model, optimizer, ckpt), ckpt["keep"]
        print0(f"resumed from {cfg.out_dir} at step {step}")
    else:
        start_fresh(cfg.out_dir)
    total = n_steps(cfg, len(examples))
    print0(f"SFT of {cfg.init_from} on {cfg.data}: {len(examples)} rows, "
           f"{sum(len(c) for _, c in examples):,} completion tokens; {total} steps x {cfg.batch_size} rows "
           f"({total * cfg.batch_size / len(examples):.1f} epochs), {dist.world_size} process(es) on {dist.device}")
    wrapped = wrap(model, dist, cfg.compile)
    loop_cfg = LoopConfig(**{**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(LoopConfig)},
                             "steps": total})
    t0 = time.time()
    # the checkpoint carries the SFT config plus the task knobs of the model it came from, so that
    # grpo.py --init-from and evaluate.py rebuild the same task
    knobs = {k: v for k, v in init["config"].items() if k in ("min_digits", "max_digits")}
    with progress(total=total, initial=step, desc="SFT", unit="step") as bar:
        train(wrapped, optimizer, loop_cfg, batches(examples, cfg, tok.pad_id, dist.rank, dist.world_size, step),
              sft_loss, start_step=step, logger=MetricsLogger(cfg.out_dir, keep=keep),
              config_dict={**knobs, **dataclasses.asdict(cfg)},
              extra={"init_sha256": checkpoint_sha256(cfg.init_from), "data_sha256": file_sha256(cfg.data)}, bar=bar)
    print0(f"SFT took {time.time() - t0:.0f} s; checkpoint in {cfg.out_dir}/")
    metrics = {}
    if cfg.eval_problems > 0 and dist.is_main:
        unwrap(model).eval()
        task = task_from_config({**knobs, "task": cfg.task})
        metrics = report(model, tok, task, held_out_set(task, cfg.eval_problems), EvalConfig(k=cfg.eval_k, seed=cfg.seed))
    teardown_ddp()
    return metrics


def main(argv=None):
    cfg = config_from_args(SFTConfig, argv, description=__doc__.split("\n")[0], check=check_files)
    run(cfg)


if __name__ == "__main__":
    main()
