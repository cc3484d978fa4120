"""Distillation (R1 v1 sections 2.4 and 4.1, Table 6): a SMALLER student fine-tuned, with SFT only
and no RL, on a strong teacher's reasoning traces, against the same student trained by its own RL.

    python pipeline.py                                          # the teacher: out/r1/final_rl
    python pretrain.py --model pico --out-dir out/base-pico      # the student's base (distill.py makes it if missing)
    python grpo.py --init-from out/base-pico --out-dir out/grpo-pico   # arm (a): the student's own RL
    python distill.py                                           # arm (b): teacher traces -> out/data/distill.jsonl
                                                                # -> SFT -> out/distill, then the toy Table 6
    python distill.py --reference-data data/distill.jsonl       # SFT on the shipped reference traces instead
    python distill.py --seed 1                                  # out/r1-s1/final_rl -> out/distill-s1 (arm (a):
                                                                # --seed 1 and -s1 directories above)

The teacher (default: the last stage of `python pipeline.py`) answers --questions training questions
--k times each with the paper's sampling settings (T 0.6, top-p 0.95); the samples that pass
rejection sampling's filter (evaluate.trace_filter: correct, well-formed, one language, no repeated
pair, faithful), each (question, text) once, are the dataset. It records the teacher checkpoint it
was sampled from (common.dataset_provenance) and is reused only while that and the config match. The student is fine-tuned on it with sft.py's loss (sft.run: a deliberate reuse, as is
pretrain.ensure_base_model for the student's base). At the end, one table: the teacher, the student's
base, the student after its own RL (--rl-student, when that run exists) and the distilled student,
on the same held-out questions, with the compute each arm used (wall clock from its logs, and
completion tokens sampled, by the policy or the teacher, and trained on).

Deliberate deviations from the paper: the student is a smaller preset of the same architecture
pretrained on the same synthetic web (paper: Qwen2.5 / Llama bases); ~1K traces (paper: the 800K of
R1's stage 3); the RL arm is tens of GRPO steps (paper: >10K).
"""
from __future__ import annotations

import deps  # noqa: F401  first: a missing package is one line and exit 2, not a traceback

import os
import time
from dataclasses import dataclass

import pretrain  # deliberate reuse: the student's base, pretrained by pretrain.py if missing
import sft       # deliberate reuse: distillation is SFT with sft.py's loss on the teacher's samples
from common import (DEFAULT_TASK, check_one_tokenizer, check_ranges, checkpoint_path, checkpoint_sha256,
                    config_from_args, dataset, derive_seed, get_device, load_checkpoint, print0, read_metrics,
                    reference_dataset, run_dir, run_stage, tokenizer_name, write_dataset)
from evaluate import evaluate_checkpoints, print_table, sample_training_set, trace_filter
from tasks import get_task
from tokenizer import get_tokenizer


@dataclass
class DistillConfig:
    teacher: str = ""                   # the teacher checkpoint (or hf:DIR); "" = out/r1/final_rl (out/r1-sN/... for --seed N)
    student_base: str = ""              # the student's base, or hf:DIR (sharing the teacher's tokenizer); "" = out/base-pico(-sN), pretrained (--student-model) if missing
    student_model: str = "pico"         # model preset of the student's base when it must be pretrained
    rl_student: str = ""                # the student after its own GRPO (the other arm); "" = out/grpo-pico(-sN)
    data: str = ""                      # the teacher's filtered traces, built here; "" = out/data/distill.jsonl
                                        # (out/data/distill-sN.jsonl for --seed N)
    reference_data: str = ""            # a traces file to distill on instead of sampling the teacher
                                        # (data/distill.jsonl: the reference copy, an earlier run's)
    out_dir: str = ""                   # the distilled student; "" = out/distill (out/distill-sN)
    questions: int = 1500               # training questions the teacher answers
    k: int = 4                          # teacher samples per question (T 0.6, top-p 0.95)
    max_new_tokens: int = 256           # cap on a teacher sample, tokens
    epochs: float = 8.0                 # SFT epochs over the traces
    lr: float = 1e-3                    # SFT peak learning rate
    eval_problems: int = 100            # held-out questions in the table
    eval_k: int = 4                     # samples per question in the table (pass@1 over k, cons@k)
    seed: int = 0                       # sampling, data order and evaluation seed
    device: str = ""                    # "" = auto (cuda, mps, cpu)

    def __post_init__(self):
        self.teacher = self.teacher or os.path.join(run_dir("out/r1", self.seed), "final_rl")
        self.student_base = self.student_base or run_dir("out/base-pico", self.seed)
        self.rl_student = self.rl_student or run_dir("out/grpo-pico", self.seed)
        self.out_dir = self.out_dir or run_dir("out/distill", self.seed)
        self.data = self.data or run_dir("out/data/distill", self.seed) + ".jsonl"
        check_ranges(self, positive=("questions", "k", "max_new_tokens", "epochs", "lr", "eval_problems", "eval_k"))


CODE = ("distill.py",)  # this script's code makes its traces too (their provenance covers it)


def check_files(cfg: DistillConfig) -> None:
    pretrain.check_base(cfg.student_base)  # pretrained here when missing: never reused from another recipe
    sampled = [] if cfg.reference_data else [("--teacher", cfg.teacher)]  # the teacher samples in this process
    check_one_tokenizer([("--student-base", cfg.student_base), *sampled])
    if cfg.reference_data and not os.path.exists(cfg.reference_data):
        raise ValueError(f"--reference-data {cfg.reference_data}: no such file")
    if not cfg.reference_data and not os.path.exists(checkpoint_path(cfg.teacher)):
        raise ValueError(f"--teacher {cfg.teacher}: no checkpoint there (python pipeline.py makes out/r1/final_rl)")
    if cfg.device:
        get_device(cfg.device)


def distill_filter(samples: list[tuple]) -> tuple[list[dict], dict]:
    """The teacher's samples through rejection sampling's filter (evaluate.trace_filter): keep the
    correct, well-formed, single-language, non-repetitive, faithful ones, each (question, completion)
    once; a student copies its teacher's working, wrong steps included. Returns the rows ("source":
    "teacher") and the counts: sampled, one per rule, duplicate, kept."""
    return trace_filter(samples, "teacher")


def traces_config(cfg: DistillConfig) -> dict:
    """What the traces depend on besides the teacher: the generating config of their provenance."""
    return {"seed": cfg.seed, "questions": cfg.questions, "k": cfg.k, "max_new_tokens": cfg.max_new_tokens}


def make_traces(cfg: DistillConfig, task, provenance: dict | None = None) -> dict:
    """The teacher's samples on training questions, filtered, written to cfg.data (+ statistics)."""
    t0 = time.time()
    samples, ids = sample_training_set(cfg.teacher, task, cfg.questions, cfg.k, cfg.max_new_tokens,
                                       (derive_seed(cfg.seed, "distill"), derive_seed(cfg.seed, "distill-sample")),
                                       cfg.data + ".partial", get_device(cfg.device or None))
    rows, stats = distill_filter(samples)
    if not rows:
        raise SystemExit(f"error: the teacher {cfg.teacher} got none of {cfg.questions} x {cfg.k} samples right and "
                         f"well-formed ({stats}): nothing to distill")
    stats["teacher_tokens"] = sum(len(i) for i in ids)  # tokens the teacher generated
    stats["teacher_seconds"] = round(time.time() - t0, 1)  # loading the teacher and sampling
    write_dataset(cfg.data, rows, stats, provenance)
    return stats


def run_cost(out_dir: str) -> dict:
    """What a training run cost, from its log: seconds (summed step times, evaluations included)
    and completion tokens sampled and trained on. GRPO samples each step's rollouts once (mean
    length x rollouts) and trains on them once per update pass (x mu); SFT samples nothing and
    trains on its rows' completion tokens (the dataset's mean x rows per step x steps)."""
    records = read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    train = [r for r in records if r["kind"] == "train"]
    config = load_checkpoint(out_dir)["config"]
    seconds = sum(r.get("dt", 0.0) for r in train)
    if "group_size" in config:  # a GRPO run: one record per update pass, "pass" 1..mu when mu > 1
        rollouts = config["prompts_per_step"] * config["group_size"]
        sampled = int(sum(r["len"] for r in train if r.get("pass", 1) == 1) * rollouts)
        return {"seconds": seconds, "sampled": sampled, "trained": int(sum(r["len"] for r in train) * rollouts)}
    rows = sft.tokenize_rows(sft.load_rows(config["data"]), get_tokenizer())
    per_row = sum(len(c) for _, c in rows) / len(rows)
    return {"seconds": seconds, "sampled": 0, "trained": int(per_row * config["batch_size"] * len(train))}


# the toy Table 6: (header, key, width, number format) per column (evaluate.print_table; "-": no cost)
TABLE_COLUMNS = (("model", "model", "<26", ""), ("params", "params", ">8", ","),
                 ("pass@1", "pass@1", ">7", ".3f"), ("cons@k", "cons@k", ">7", ".2f"),
                 ("length", "length", ">7", ".1f"), ("format", "format", ">7", ".3f"),
                 ("seconds", "seconds", ">8", ".0f"), ("sampled", "sampled", ">10", ","),
                 ("trained", "trained", ">10", ","))
RL_ARM, DISTILLED_ARM = "student + own RL (GRPO)", "student distilled (SFT)"


def table(cfg: DistillConfig, task, data_stats: dict) -> list[dict]:
    """The toy Table 6: every model on the same held-out questions, and what each arm cost. An arm
    with no checkpoint, or an RL arm that did not start from the student's base, is left out with a
    line saying why."""
    arms = []
    for name, path in [("teacher", cfg.teacher), ("student base", cfg.student_base), (RL_ARM, cfg.rl_student),
                       (DISTILLED_ARM, cfg.out_dir)]:
        if not os.path.exists(checkpoint_path(path)):
            print0(f"({name}: no checkpoint in {path}; run: python grpo.py --init-from {cfg.student_base} "
                   f"--out-dir {path})")
            continue
        made_with = tokenizer_name(path)
        if made_with != get_tokenizer().name:  # e.g. our teacher beside a real student
            print0(f"({name}: {path} was made with another tokenizer ({made_with}) than the student's; "
                   f"one process holds one: left out)")
            continue
        started = load_checkpoint(path).get("init_sha256") if name == RL_ARM else None
        if name == RL_ARM and started != checkpoint_sha256(cfg.student_base):  # not the other arm of this student
            print0(f"({name}: {path} did not start from the student's base {cfg.student_base} (its checkpoint "
                   f"records {(started or 'no starting model')[:12]}); left out: rerun python "
                   f"grpo.py --init-from {cfg.student_base} --out-dir {path})")
            continue
        arms.append((name, path))
    rows = evaluate_checkpoints(arms, cfg.eval_problems, cfg.eval_k, derive_seed(cfg.seed, "table"),
                                get_device(cfg.device or None), task=task)
    for r in rows:  # what each student arm cost
        if r["model"] == RL_ARM:
            r.update(run_cost(r["dir"]))
        elif r["model"] == DISTILLED_ARM:  # the teacher's sampling is this arm's cost too
            cost = run_cost(r["dir"])
            r.update(cost, seconds=cost["seconds"] + data_stats.get("teacher_seconds", 0.0),
                     sampled=data_stats.get("teacher_tokens", 0))
    print0(f"\nheld-out (evaluate.held_out): {cfg.eval_problems} questions x {cfg.eval_k} samples, T 0.6, top-p 0.95")
    print_table(rows, TABLE_COLUMNS)
    return rows


def run(cfg: DistillConfig) -> list[dict]:
    task = get_task(DEFAULT_TASK)
    pretrain.ensure_base_model(cfg.student_base, model=cfg.student_model, seed=cfg.seed, device=cfg.device)
    if cfg.reference_data:
        data, data_stats = cfg.reference_data, reference_dataset("the teacher's traces", cfg.reference_data)
    else:
        data, data_stats = cfg.data, dataset("the teacher's traces", cfg.data, lambda prov: make_traces(cfg, task, prov),
                                             source=cfg.teacher, config=traces_config(cfg), code=CODE)
    run_stage("the student's SFT on the traces", cfg.out_dir, lambda resume: sft.run(sft.SFTConfig(
        init_from=cfg.student_base, data=data, out_dir=cfg.out_dir, resume=resume, epochs=cfg.epochs, lr=cfg.lr,
        eval_problems=0, seed=cfg.seed, device=cfg.device)), init=cfg.student_base, data=data)
    return table(cfg, task, data_stats)


def main(argv=None):
    cfg = config_from_args(DistillConfig, argv, description=__doc__.split("\n")[0], check=check_files)
    run(cfg)


if __name__ == "__main__":
    main()
