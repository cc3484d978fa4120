"""The DeepSeek-R1 pipeline (R1 v1 section 2.3): cold start, reasoning RL with a language-consistency
reward, rejection sampling + SFT of the base model, and a final RL stage, each stage a checkpoint
directory that the next one starts from, each measured in one table at the end.

    python pipeline.py                      # seed 0: out/base, out/grpo (R1-Zero), out/r1/<stage>/, out/r1/data/
    python pipeline.py --seed 1             # out/base-s1, out/grpo-s1, out/r1-s1/<stage>/, out/r1-s1/data/
    python pipeline.py --reference-data data   # stages 1 and 3 train on data/'s reference copies instead
    python pipeline.py --language-weights 0,0.1,1   # also the stage-2 trade-off: accuracy vs mixing per weight

`run` reads like the paper's pipeline figure, one call per stage:

    base     pretrain.py                     the base model (out/base), as R1-Zero's
    r1_zero  grpo.py from base               R1-Zero (out/grpo): reasons, but mixes languages
    cold     make_cold_start(r1_zero)        out/r1/data/cold_start.jsonl: R1-Zero's correct samples, cleaned
    stage 1  sft.py: base on cold            out/r1/cold_start
    stage 2  grpo.py from stage 1, + L * language-consistency reward    out/r1/reasoning_rl
    rs       rejection_sample(stage 2) + plain text    out/r1/data/rejection_sampled.jsonl
    stage 3  sft.py: BASE on rs              out/r1/rejection_sft
    stage 4  grpo.py from stage 3            out/r1/final_rl
    table    every model on the same held-out questions (evaluate.py's protocol)

Every dataset is built from this run's own models, and records what it was built from (the source
checkpoint's SHA-256, the generating config and code: common.dataset_provenance); every stage's
checkpoint records the SHA-256 of the model it started from and of the data it trained on. A
finished stage (its `done.json`) or dataset is reused only when those match what this run would
use now; otherwise it is rebuilt, and a line says what differed. A stage interrupted half way
resumes from its checkpoint. data/ holds reference copies (an earlier run's, with their records):
only --reference-data trains on them. This script is an orchestrator: it imports the stage scripts (pretrain, grpo,
sft) on purpose and calls their `run`, each with the config its command line would build.

Deliberate deviations from the paper: 1,500 cold-start rows (paper: thousands) written from
R1-Zero's own correct samples by a program instead of human annotators (questions with no correct
sample get a template-written search, and each row says which it is); stage 3's non-reasoning data
is the synthetic web's plain text (paper: ~200K writing, QA, translation samples); stage 4 uses the
rule rewards of stage 2 (the paper adds reward models for helpfulness and harmlessness on general
prompts: there are none here); stage 2 weighs the language-consistency reward 0.5 (the paper adds
it to accuracy directly: `--language-weights` sweeps it).
"""
from __future__ import annotations

import deps  # noqa: F401  first: a missing package is one line and exit 2, not a traceback

import json
import os
import random
import time
from dataclasses import dataclass

import grpo      # deliberate reuse: the pipeline's RL stages are grpo.run with other --init-from
import pretrain  # deliberate reuse: the base model, as R1-Zero's
import sft       # deliberate reuse: stages 1 and 3 are sft.run on the datasets made here
from common import (DEFAULT_TASK, check_ranges, config_from_args, dataset, derive_seed, get_device, hf_dir,
                    load_checkpoint, print0, read_metrics, reference_dataset, run_dir, run_stage, write_dataset)
from corpus import plain_text, readable_search
from evaluate import completion_stats, evaluate_checkpoints, parse_tries, print_table, sample_training_set, trace_filter
from rewards import chain_of_thought, extract_answer
from tasks import format_prompt, get_task
from tokenizer import EOT

STAGES = ("cold_start", "reasoning_rl", "rejection_sft", "final_rl")
CODE = ("pipeline.py",)  # this script's code makes its datasets too (their provenance covers it)


@dataclass
class PipelineConfig:
    seed: int = 0                       # one seed for every stage (R1-Zero's run is python grpo.py --seed SEED)
    base: str = ""                      # the base model; "" = out/base (out/base-sN), pretrained there if missing
    r1_zero: str = ""                   # the R1-Zero run; "" = out/grpo (out/grpo-sN), python grpo.py's, run if missing
    out_root: str = ""                  # stage directories; "" = out/r1 (out/r1-sN for --seed N)
    data_dir: str = ""                  # the datasets this run builds; "" = OUT_ROOT/data
    reference_data: str = ""            # a directory of datasets (data/: the reference copies, an earlier run's)
                                        # that stages 1 and 3 train on instead of this run's own
    cold_questions: int = 1500          # training questions of the cold-start set (one row each)
    cold_k: int = 4                     # R1-Zero samples per cold-start question (T 0.6, top-p 0.95)
    sft_epochs: float = 4.0             # epochs of each SFT stage (stages 1 and 3)
    sft_lr: float = 1e-3                # peak learning rate of each SFT stage
    language_weight: float = 0.5        # L in stage 2's reward "accuracy + 0.1*format + L*language"
    rl_steps: int = 20                  # GRPO steps of stages 2 and 4 (R1-Zero: python grpo.py's 40)
    rs_questions: int = 1500            # training questions for rejection sampling
    rs_k: int = 4                       # samples per question from the stage-2 model (T 0.6, top-p 0.95)
    text_share: float = 0.25            # non-reasoning rows as a share of stage 3's data (paper: 200K of 800K)
    eval_problems: int = 100            # held-out questions in the final table
    eval_k: int = 4                     # samples per question in the final table (pass@1 over k, cons@k)
    language_weights: str = ""          # comma list, e.g. "0,0.1,1": also run stage 2 with each weight (a plot)
    sweep_from: str = "cold_start"      # where the weight sweep's RL starts: cold_start (stage 2) | base (R1-Zero + language reward)
    stage_preset: str = "cpu"           # every stage's preset: cpu (the defaults) | smoke (tiny: tests)
    device: str = ""                    # "" = auto (cuda, mps, cpu)

    def __post_init__(self):
        self.base = self.base or run_dir("out/base", self.seed)
        self.r1_zero = self.r1_zero or run_dir("out/grpo", self.seed)
        self.out_root = self.out_root or run_dir("out/r1", self.seed)
        self.data_dir = self.data_dir or os.path.join(self.out_root, "data")
        check_ranges(self, positive=("cold_questions", "cold_k", "sft_epochs", "sft_lr", "rl_steps", "rs_questions",
                                     "rs_k", "eval_problems", "eval_k"),
                     non_negative=("language_weight",), fraction=("text_share",),
                     choices={"stage_preset": ("cpu", "smoke"), "sweep_from": ("cold_start", "base")})
        try:
            self.weights()
        except ValueError:
            raise ValueError(f"--language-weights must be a comma list of numbers >= 0 (got {self.language_weights!r})") from None

    def weights(self) -> list[float]:
        ws = [float(w) for w in self.language_weights.split(",") if w.strip()]
        if any(w < 0 for w in ws):
            raise ValueError
        return ws


DATASETS = ("cold_start.jsonl", "rejection_sampled.jsonl")  # the files of a --data-dir or --reference-data


def check_files(cfg: PipelineConfig) -> None:
    if any(hf_dir(path) is not None for path in (cfg.base, cfg.r1_zero)):
        raise ValueError("pipeline.py runs the project's own models; with a real one (hf:DIR), run the stages "
                         "one by one: grpo.py, sft.py, evaluate.py (docs/REAL_MODELS.md)")
    pretrain.check_base(cfg.base)  # pretrained here when missing: never reused from another recipe
    if cfg.device:
        get_device(cfg.device)
    for name in DATASETS if cfg.reference_data else ():
        if not os.path.exists(os.path.join(cfg.reference_data, name)):
            raise ValueError(f"--reference-data {cfg.reference_data}: no {name} there")


# ----------------------------------------------------------------------------- the datasets


def clean_r1_zero(completion: str, problem) -> str | None:
    """Rewrite one R1-Zero sample in the readable format (corpus.readable_search), as the paper's
    annotators rewrote R1-Zero outputs: its own tries, in order, in the QUESTION's language, each pair
    once, tries of numbers not in the list dropped, up to the first pair that makes the target, then
    the summary and the answer. None when the sample cannot become a correct readable trace: its
    answer is wrong, or none of its tries found the pair it answers with."""
    answer = extract_answer(completion)
    if answer is None or completion_stats(problem, completion, 0)["correct"] != 1.0:
        return None
    pairs, seen = [], set()
    for x, y, *_ in parse_tries(chain_of_thought(completion)):
        key = frozenset((x, y))
        if key in seen or x == y or x not in problem.numbers or y not in problem.numbers:
            continue
        seen.add(key)
        pairs.append((x, y))
        if x + y == problem.target:
            break
    if not pairs or pairs[-1][0] + pairs[-1][1] != problem.target or \
            frozenset(pairs[-1]) != frozenset(int(v) for v in answer.split("+")):
        return None
    return readable_search(problem, problem.language, pairs) + EOT


def make_cold_start(model_dir: str, path: str, cfg: PipelineConfig, task, provenance: dict | None = None) -> dict:
    """OUT_ROOT/data/cold_start.jsonl: for each of cfg.cold_questions training questions, cfg.cold_k samples
    from the R1-Zero model; the first that clean_r1_zero can rewrite becomes the row ("source":
    "r1_zero_cleaned"), and a question with none gets the template-written search ("template")."""
    samples, _ = sample_training_set(model_dir, task, cfg.cold_questions, cfg.cold_k, rl_config(cfg).max_new_tokens,
                                     (derive_seed(cfg.seed, "cold-start"), derive_seed(cfg.seed, "cold-sample")),
                                     path + ".partial", get_device(cfg.device or None))
    rows = []
    for i in range(0, len(samples), cfg.cold_k):  # one row per question, from its cold_k samples
        p = samples[i][0]
        cleaned = [c for c in (clean_r1_zero(t, p) for _, t in samples[i:i + cfg.cold_k]) if c]
        source = "r1_zero_cleaned" if cleaned else "template"
        completion = cleaned[0] if cleaned else readable_search(p, p.language) + EOT
        rows.append({"prompt": format_prompt(p.question), "completion": completion, "source": source,
                     "language": p.language})
    stats = {"questions": len(rows), "samples": len(samples),
             "r1_zero_cleaned": sum(r["source"] == "r1_zero_cleaned" for r in rows),
             "template": sum(r["source"] == "template" for r in rows)}
    write_dataset(path, rows, stats, provenance)
    return stats


def rejection_filter(samples: list[tuple]) -> tuple[list[dict], dict]:
    """Stage 3's filter (R1 v1 section 2.3.3), the one distillation uses too (evaluate.trace_filter):
    of (problem, completion) samples, keep only the correct, well-formatted, single-language (the
    question's), non-repetitive (no pair tried twice, no giving up) and faithful (the working reaches
    the answer: evaluate.faithful) ones, each (question, completion) once. Returns the kept rows
    ("source": "stage2") and how many were sampled, kept and dropped by each rule (the first that
    fails, in that order)."""
    return trace_filter(samples, "stage2")


def rejection_sample(model_dir: str, path: str, cfg: PipelineConfig, task, provenance: dict | None = None) -> dict:
    """OUT_ROOT/data/rejection_sampled.jsonl: cfg.rs_k samples per training question from the stage-2 model,
    rejection_filter, plus plain-text documents of the synthetic web as non-reasoning data
    (cfg.text_share of all rows; prompt: the end-of-text token that precedes any web document)."""
    samples, _ = sample_training_set(model_dir, task, cfg.rs_questions, cfg.rs_k, rl_config(cfg).max_new_tokens,
                                     (derive_seed(cfg.seed, "rejection"), derive_seed(cfg.seed, "rs-sample")),
                                     path + ".partial", get_device(cfg.device or None))
    rows, stats = rejection_filter(samples)
    if not rows:
        raise SystemExit(f"error: the stage-2 model {model_dir} got none of {len(samples)} samples right, well-formed "
                         f"and clean ({stats}): nothing to fine-tune the base on")
    rng = random.Random(derive_seed(cfg.seed, "non-reasoning"))
    n_text = round(len(rows) * cfg.text_share / (1 - cfg.text_share)) if cfg.text_share < 1 else len(rows)
    rows += [{"prompt": EOT, "completion": plain_text(rng, rng.choice(("en", "es"))) + EOT, "source": "text",
              "language": ""} for _ in range(n_text)]
    stats["text_rows"] = n_text
    write_dataset(path, rows, stats, provenance)
    return stats


# ----------------------------------------------------------------------------- stages


def reached_last_step(out_dir: str) -> bool:
    """Did the GRPO run in out_dir reach its last step? (e.g. `python grpo.py`, run before the
    pipeline: its directory has no done.json, and is not run again)"""
    path = os.path.join(out_dir, "ckpt.pt")
    if not os.path.exists(path):
        return False
    ckpt = load_checkpoint(path)
    return ckpt["step"] >= ckpt["config"]["steps"]


def rl_config(cfg: PipelineConfig, **fields) -> grpo.GRPOConfig:
    """A GRPO stage's config: python grpo.py's defaults (or its smoke preset), the pipeline's seed."""
    return grpo.GRPOConfig(**{**grpo.PRESETS[cfg.stage_preset], "seed": cfg.seed, "device": cfg.device, **fields})


def rl_stage(init_from: str, out_dir: str, cfg: PipelineConfig, weight: float):
    """A GRPO stage, as run_stage calls it (fn(resume)): from init_from, the reward with language
    weight `weight`, cfg.rl_steps steps."""
    reward = "accuracy + 0.1*format" + (f" + {weight:g}*language" if weight else "")
    return lambda resume: grpo.run(rl_config(cfg, init_from=init_from, out_dir=out_dir, resume=resume, reward=reward,
                                             steps=cfg.rl_steps))


def sft_stage(init_from: str, data: str, out_dir: str, cfg: PipelineConfig):
    """An SFT stage, as run_stage calls it (fn(resume)): init_from fine-tuned on `data`."""
    smoke = {"steps": 2, "log_every": 1} if cfg.stage_preset == "smoke" else {}
    return lambda resume: sft.run(sft.SFTConfig(**{"init_from": init_from, "data": data, "out_dir": out_dir,
                                                   "resume": resume, "epochs": cfg.sft_epochs, "lr": cfg.sft_lr,
                                                   "eval_problems": 0, "seed": cfg.seed, "device": cfg.device, **smoke}))


def run(cfg: PipelineConfig) -> list[dict]:
    t0 = time.time()
    task = get_task(DEFAULT_TASK)
    root, data = cfg.out_root, cfg.reference_data or cfg.data_dir
    base, r1_zero = cfg.base, cfg.r1_zero
    stages = {name: os.path.join(root, name) for name in STAGES}
    cold_path, rs_path = (os.path.join(data, name) for name in DATASETS)
    max_new = rl_config(cfg).max_new_tokens
    cold_config = {"seed": cfg.seed, "questions": cfg.cold_questions, "k": cfg.cold_k, "max_new_tokens": max_new}
    rs_config = {"seed": cfg.seed, "questions": cfg.rs_questions, "k": cfg.rs_k, "max_new_tokens": max_new,
                 "text_share": cfg.text_share}

    pretrain.ensure_base_model(base, **{**pretrain.PRESETS[cfg.stage_preset], "seed": cfg.seed, "device": cfg.device})
    run_stage("R1-Zero (python grpo.py)", r1_zero, lambda resume: None if reached_last_step(r1_zero) else grpo.run(
        rl_config(cfg, init_from=base, out_dir=r1_zero, resume=resume)), init=base, given=True)
    if cfg.reference_data:
        reference_dataset("cold-start data", cold_path)
    else:
        dataset("cold-start data", cold_path, lambda prov: make_cold_start(r1_zero, cold_path, cfg, task, prov),
                source=r1_zero, config=cold_config, code=CODE)
    run_stage("stage 1: cold-start SFT of the base model", stages["cold_start"],
              sft_stage(base, cold_path, stages["cold_start"], cfg), init=base, data=cold_path)
    run_stage("stage 2: reasoning RL + language consistency", stages["reasoning_rl"],
              rl_stage(stages["cold_start"], stages["reasoning_rl"], cfg, cfg.language_weight),
              init=stages["cold_start"])
    if cfg.reference_data:
        reference_dataset("rejection sampling", rs_path)
    else:
        dataset("rejection sampling", rs_path,
                lambda prov: rejection_sample(stages["reasoning_rl"], rs_path, cfg, task, prov),
                source=stages["reasoning_rl"], config=rs_config, code=CODE)
    run_stage("stage 3: SFT of the BASE model on the rejection-sampled data", stages["rejection_sft"],
              sft_stage(base, rs_path, stages["rejection_sft"], cfg), init=base, data=rs_path)
    run_stage("stage 4: RL for all scenarios", stages["final_rl"],
              rl_stage(stages["rejection_sft"], stages["final_rl"], cfg, cfg.language_weight),
              init=stages["rejection_sft"])
    for w in cfg.weights():  # the trade-off: the same RL with other language weights
        out = sweep_dir(cfg, w)
        if out != stages["reasoning_rl"]:
            start = stages["cold_start"] if cfg.sweep_from == "cold_start" else base
            run_stage(f"RL from {cfg.sweep_from} with language weight {w:g}", out, rl_stage(start, out, cfg, w),
                      init=start)

    models = [("base", base), ("R1-Zero", r1_zero), ("stage 1: cold start", stages["cold_start"]),
              ("stage 2: reasoning RL", stages["reasoning_rl"]), ("stage 3: rejection SFT", stages["rejection_sft"]),
              ("stage 4: final RL", stages["final_rl"])]
    rows = table(models, cfg, task, r1_zero)
    with open(os.path.join(root, "table.json"), "w") as f:
        json.dump(rows, f, indent=1, default=float)
    if cfg.weights():
        trade_off(cfg, task)
    print0(f"\npipeline: {(time.time() - t0) / 60:.1f} min wall clock; table in {root}/table.json")
    return rows


# ----------------------------------------------------------------------------- the measurements


def steps_to(metrics_path: str, target: float) -> int | None:
    """The first RL step whose held-out pass@1 reached `target` (evaluations every 5 steps), or None."""
    for r in read_metrics(metrics_path):
        if r["kind"] == "eval" and r["pass@1"] >= target:
            return r["step"]
    return None


# the final table: (header, key, width, number format) per column (evaluate.print_table)
TABLE_COLUMNS = (("model", "model", "<24", ""), ("pass@1", "pass@1", ">7", ".3f"),
                 ("cons@k", "cons@k", ">7", ".2f"), ("length", "length", ">7", ".1f"),
                 ("mixing", "lang_mix", ">7", ".3f"), ("drift", "drift", ">6", ".2f"),
                 ("format", "format", ">7", ".3f"), ("readable", "readable", ">8", ".3f"),
                 ("RL steps", "rl_steps_text", ">8", ""))
TABLE_METRICS = ("pass@1", "cons@k", "length", "lang_mix", "drift", "format", "readable")  # kept in table.json


def table(models, cfg: PipelineConfig, task, r1_zero: str) -> list[dict]:
    """Every model on the same held-out questions (evaluate.py's protocol), one row each, printed;
    for an RL stage, the first of its own evaluations that reached R1-Zero's final pass@1."""
    r1_evals = [r for r in read_metrics(os.path.join(r1_zero, "metrics.jsonl")) if r["kind"] == "eval"]
    target = r1_evals[-1]["pass@1"]  # R1-Zero's final held-out accuracy, as its own run measured it
    rows = []
    for m in evaluate_checkpoints(models, cfg.eval_problems, cfg.eval_k, derive_seed(cfg.seed, "table"),
                                  get_device(cfg.device or None), task=task):
        metrics = os.path.join(m["dir"], "metrics.jsonl")
        rl_run = os.path.exists(metrics) and any(r["kind"] == "eval" for r in read_metrics(metrics))
        rows.append({"model": m["model"], "dir": m["dir"], **{k: m[k] for k in TABLE_METRICS},
                     "rl": rl_run, "rl_steps_to_target": steps_to(metrics, target) if rl_run else None})
    print0(f"\nheld-out (evaluate.held_out): {cfg.eval_problems} questions x {cfg.eval_k} samples, T 0.6, top-p 0.95; "
           f"RL steps to R1-Zero's final pass@1 ({target:.3f}) from each RL stage's own evaluations")
    print_table([{**r, "rl_steps_text": "-" if not r["rl"] else "never" if r["rl_steps_to_target"] is None
                  else str(r["rl_steps_to_target"])} for r in rows], TABLE_COLUMNS)
    return rows


def sweep_dir(cfg: PipelineConfig, w: float) -> str:
    """Where the weight sweep's run for weight w lives (stage 2 itself for its own weight)."""
    if cfg.sweep_from == "cold_start":
        return os.path.join(cfg.out_root, "reasoning_rl" if w == cfg.language_weight else f"reasoning_rl-L{w:g}")
    return os.path.join(cfg.out_root, f"r1_zero-L{w:g}")


def trade_off(cfg: PipelineConfig, task) -> None:
    """Accuracy against language mixing, one point per language weight (a PNG and a JSON)."""
    from matplotlib.figure import Figure
    weights = sorted(set(cfg.weights()) | ({cfg.language_weight} if cfg.sweep_from == "cold_start" else set()))
    rows = evaluate_checkpoints([(f"{w:g}", sweep_dir(cfg, w)) for w in weights], cfg.eval_problems, cfg.eval_k,
                                derive_seed(cfg.seed, "table"), get_device(cfg.device or None), task=task,
                                progress=False)
    points = [{"weight": w, "pass@1": r["pass@1"], "lang_mix": r["lang_mix"], "drift": r["drift"]}
              for w, r in zip(weights, rows)]
    print_table(rows, (("language weight", "model", ">15", ""), ("pass@1", "pass@1", ">7", ".3f"),
                       ("language mixing", "lang_mix", ">15", ".3f"), ("drift", "drift", ">6", ".3f")))
    fig = Figure(figsize=(5, 3.6))
    ax = fig.add_subplot()
    ax.plot([p["lang_mix"] for p in points], [p["pass@1"] for p in points], "o-")
    for i, p in enumerate(points):  # labels staggered: points with equal mixing sit on top of each other
        ax.annotate(f"L={p['weight']:g}", (p["lang_mix"], p["pass@1"]), textcoords="offset points",
                    xytext=(6, 4 + 11 * (i % 3)), fontsize=8)
    start = "the cold start (stage 2)" if cfg.sweep_from == "cold_start" else "the base (R1-Zero)"
    ax.set(xlabel="language mixing (share of completions)", ylabel="held-out pass@1",
           title=f"RL from {start} + L x language reward", xlim=(-0.02, None))
    fig.tight_layout()
    name = f"language_tradeoff_{cfg.sweep_from}"
    fig.savefig(os.path.join(cfg.out_root, name + ".png"), dpi=110)
    with open(os.path.join(cfg.out_root, name + ".json"), "w") as f:
        json.dump(points, f, indent=1)
    print0(f"trade-off figure: {os.path.join(cfg.out_root, name + '.png')}")


def main(argv=None):
    cfg = config_from_args(PipelineConfig, argv, description=__doc__.split("\n")[0], check=check_files)
    run(cfg)


if __name__ == "__main__":
    main()
