"""Evaluation as the R1 paper does it (R1 v1 section 3, "Evaluation Setup"; docs/PAPER.md): k samples
per held-out question at temperature 0.6, top-p 0.95; pass@1 = (1/k) sum_i p_i averaged over
questions; cons@k = majority vote over the k answers' meanings (rewards.answer_key: "110", "110.0"
and "0110" are one vote; rewards.majority_vote breaks ties toward the answer seen first), scored
by the winner's correctness. Greedy decoding is avoided, as in the paper.

Besides accuracy it measures what the R1-Zero story is about: format rate, mean response length,
the share of completions that reason (their <think> block works something out, i.e. holds an "="),
the share with a self-check ("wait" / "espera"), the share that mix languages, and accuracy split by
"reasoned" vs "answered directly". With --forced it also forces each way of answering (a completion
prefix from corpus.forced_prefixes) and compares accuracy: the gap RL can exploit.

    python evaluate.py --ckpt out/base                 # the base-model report
    python evaluate.py --ckpt out/grpo --k 8 --n-problems 200

Deliberate deviations: none in the metrics; the k and question counts are small for CPU time.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from common import (check_fits, check_ranges, checkpoint_path, config_from_args, get_device, load_checkpoint, load_model,
                    print0)
from corpus import WEB_TASKS, forced_prefixes
from model import sample_completions
from rewards import (accuracy_reward, answer_key, chain_of_thought, format_reward, language_consistency_reward,
                     majority_vote)
from tasks import TASKS, format_prompt, get_task, longest_prompt, task_from_config, test_set
from tokenizer import get_tokenizer

EVAL_MAX_NEW_TOKENS = 320  # the one default cap on an evaluated completion's length, tokens
SELF_CHECK = re.compile(r"\b(wait|espera)\b", re.IGNORECASE)
# one try of the search world (corpus.search_tries): "7+1=8 vs 8, no." / "7+1=8 contra 8, sí."
SEARCH_TRY = re.compile(r"(\d+)\+(\d+)=(\d+) (?:vs|contra) (\d+), (yes|sí|no)\.")
GIVE_UP = re.compile(r"I give up|lo dejo")
TRIES_BUCKETS = ((0, 1), (2, 3), (4, 7), (8, 99))  # accuracy against the number of tries, in these groups


@dataclass
class EvalConfig:
    ckpt: str = "out/base"          # checkpoint directory (or file) to evaluate
    task: str = ""                  # task family from tasks.TASKS; "" = the one the checkpoint was trained on
    n_problems: int = 100           # held-out (test split) questions
    k: int = 4                      # samples per question (pass@1 over k, cons@k)
    temperature: float = 0.6        # sampling temperature (paper: 0.6)
    top_p: float = 0.95             # nucleus sampling (paper: 0.95)
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS  # cap on completion length, tokens
    batch_size: int = 128           # sequences sampled together
    forced: bool = True             # also report accuracy with the direct answer vs reasoning forced
    seed: int = 0                   # sampling seed
    device: str = ""                # "" = auto (cuda, mps, cpu)

    def __post_init__(self):
        check_ranges(self, positive=("n_problems", "k", "max_new_tokens", "batch_size"),
                     non_negative=("temperature",), choices={"task": ("", *TASKS)})
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must lie in (0, 1] (got {self.top_p})")


def check_files(cfg: EvalConfig) -> None:
    """--ckpt must be a checkpoint, and its model must hold the longest prompt + --max-new-tokens."""
    if not os.path.exists(checkpoint_path(cfg.ckpt)):
        raise ValueError(f"--ckpt {cfg.ckpt}: no checkpoint there")
    ckpt = load_checkpoint(cfg.ckpt)
    task = get_task(cfg.task) if cfg.task else task_from_config(ckpt["config"])
    check_fits(longest_prompt(task, get_tokenizer()), cfg.max_new_tokens, ckpt["model_config"]["max_seq_len"])
    if cfg.device:
        get_device(cfg.device)  # a ValueError if that device is not available here


# ----------------------------------------------------------------------------- per-completion facts


def reasons(completion: str) -> bool:
    """Does the completion work something out before answering? (its think block holds an "=")"""
    return "=" in chain_of_thought(completion)


def mixes_languages(completion: str) -> bool:
    """Words of both languages inside one chain of thought (R1-Zero's language mixing)."""
    en = language_consistency_reward(completion, "en")  # scores the think block when there is one
    es = language_consistency_reward(completion, "es")
    return 0.0 < en < 1.0 and 0.0 < es < 1.0


def off_language(completion: str, language: str) -> bool:
    """The chain of thought is NOT in the question's language: at most half of its words are (an
    English search on a Spanish question scores 0.5: only its "no"s are Spanish too)."""
    return language_consistency_reward(completion, language) <= 0.5


def behaviour(completion: str, language: str = "en") -> dict:
    """What a completion does, as counts the R1-Zero story is about: reasoning, self-checks,
    language mixing and drift, and, in the search world, tries, backtracking ("no" after a try, or
    "wait"), giving up, repeated tries, per-try arithmetic and false claims of success."""
    thought = chain_of_thought(completion)
    tries = SEARCH_TRY.findall(thought)
    pairs = [frozenset((int(a), int(b))) for a, b, *_ in tries]
    return {
        "reasons": float(reasons(completion)),
        "self_check": float(bool(SELF_CHECK.search(completion))),
        "mixed": float(mixes_languages(completion)),
        "off_lang": float(off_language(completion, language)),
        "tries": len(tries),
        "backtracks": sum(verdict == "no" for *_, verdict in tries) + len(SELF_CHECK.findall(thought)),
        "give_up": float(bool(GIVE_UP.search(thought))),
        "repeats": len(pairs) - len(set(pairs)),
        "tries_right": sum(int(a) + int(b) == int(s) for a, b, s, *_ in tries),
        "false_yes": float(any(verdict != "no" and not (int(a) + int(b) == int(s) == int(t))
                               for a, b, s, t, verdict in tries)),
    }


def completion_stats(problem, completion: str, n_tokens: int) -> dict:
    """The facts of one completion: correct (rewards.accuracy_reward, the one judge), format,
    length in tokens, its behaviour, the question's language, and the key cons@k votes on."""
    mapping = problem.as_dict()
    return {
        "correct": accuracy_reward(completion, mapping),
        "format": format_reward(completion),
        "length": n_tokens,
        "language": problem.language,
        **behaviour(completion, problem.language),
        "key": answer_key(completion, mapping),  # what cons@k votes on: the answer's meaning
    }


def summarize_behaviour(stats: list[dict]) -> dict:
    """Means of the behaviour counts over completions; per-try correctness over all tries; language
    drift = the share of second-language (es) questions whose chain of thought is not in Spanish."""
    n = max(1, len(stats))
    second = [s for s in stats if s["language"] != "en"]
    tries = sum(s["tries"] for s in stats)
    out = {k: sum(s[k] for s in stats) / n for k in ("reasons", "self_check", "mixed", "tries", "backtracks",
                                                     "give_up", "repeats", "false_yes")}
    out["try_acc"] = sum(s["tries_right"] for s in stats) / tries if tries else float("nan")
    out["drift"] = sum(s["off_lang"] for s in second) / len(second) if second else float("nan")
    if tries and "correct" in stats[0]:  # the search world: does trying more pay? accuracy by tries
        for lo, hi in TRIES_BUCKETS:
            rows = [s for s in stats if lo <= s["tries"] <= hi]
            out[f"acc_tries_{lo}-{hi}"] = sum(s["correct"] for s in rows) / len(rows) if rows else float("nan")
    return out


def summarize(problems, stats: list[list[dict]]) -> dict:
    """Aggregate per-completion stats ([question][sample] -> dict) into the paper's metrics."""
    flat = [s for row in stats for s in row]
    mean = lambda key, rows=flat: sum(s[key] for s in rows) / max(1, len(rows))  # noqa: E731
    reasoned = [s for s in flat if s["reasons"]]
    direct = [s for s in flat if not s["reasons"]]
    cons = 0.0
    for row in stats:  # cons@k: the majority answer's correctness, 0 when no sample answered
        winner = majority_vote([s["key"] for s in row])
        cons += row[winner]["correct"] if winner is not None else 0.0
    return {
        "pass@1": mean("correct"),
        "cons@k": cons / max(1, len(problems)),
        "format": mean("format"),
        "length": mean("length"),
        "acc_reasoned": mean("correct", reasoned) if reasoned else float("nan"),
        "acc_direct": mean("correct", direct) if direct else float("nan"),
        **summarize_behaviour(flat),
    }


# ----------------------------------------------------------------------------- evaluation


def evaluate(model, tok, problems, k: int = 4, temperature: float = 0.6, top_p: float = 0.95,
             max_new_tokens: int = EVAL_MAX_NEW_TOKENS, batch_size: int = 128, seed: int = 0, prefix_fn=None,
             progress: bool = False) -> dict:
    """pass@1 over k samples, cons@k and the behaviour metrics on `problems`. With `prefix_fn`
    (problem -> completion prefix), every completion is forced to start with that prefix."""
    prompts, prefixes = [], []
    for p in problems:
        prefix = prefix_fn(p) if prefix_fn else ""
        prompts += [format_prompt(p.question) + prefix] * k
        prefixes += [prefix] * k
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    _, ids, texts = sample_completions(model, tok, prompts, max_new_tokens, temperature, top_p, gen,
                                       batch_size, progress)
    stats = [[completion_stats(p, prefixes[i * k + j] + texts[i * k + j], len(ids[i * k + j]))
              for j in range(k)] for i, p in enumerate(problems)]
    return summarize(problems, stats)


def report(model, tok, task, problems, cfg: EvalConfig, forced_fn=None) -> dict:
    """The base-model report: the paper's metrics, and (with forced_fn) accuracy with the direct
    answer forced vs reasoning forced. Prints a table and returns the numbers."""
    kw = dict(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
              batch_size=cfg.batch_size, seed=cfg.seed)
    metrics = evaluate(model, tok, problems, progress=True, **kw)
    if forced_fn is not None:
        for way in forced_fn(problems[0]):
            forced = evaluate(model, tok, problems, prefix_fn=lambda p, w=way: forced_fn(p)[w],
                              progress=True, **kw)
            metrics[f"forced_{way}_pass@1"] = forced["pass@1"]
    print0(f"report on {len(problems)} held-out problems of {task}, k={cfg.k}, "
           f"T={cfg.temperature}, top-p={cfg.top_p}")
    for key, value in metrics.items():
        print0(f"  {key:<22} {value:.3f}")
    if forced_fn is not None:
        gap = metrics["forced_reason_pass@1"] - metrics["forced_direct_pass@1"]
        verdict = "reasoning pays: RL has something to find" if gap >= 0.2 else \
            "WARNING: reasoning barely pays in this base model; RL has little to find"
        print0(f"  gap reason-direct      {gap:+.3f}  ({verdict})")
    return metrics


def main(argv=None):
    cfg = config_from_args(EvalConfig, argv, description=__doc__.split("\n")[0], check=check_files)
    device = get_device(cfg.device or None)
    model, ckpt = load_model(cfg.ckpt, device)
    model.eval()
    # the task and difficulty the model was trained on (saved in its checkpoint), unless --task says
    task = get_task(cfg.task) if cfg.task else task_from_config(ckpt["config"])
    problems = test_set(task, n=cfg.n_problems, seed=cfg.seed)
    forced = cfg.forced and task.name in WEB_TASKS  # forced prefixes are written for the web's tasks
    report(model, get_tokenizer(), task, problems, cfg, forced_prefixes if forced else None)


if __name__ == "__main__":
    main()
