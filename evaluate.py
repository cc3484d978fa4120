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
    python evaluate.py --compare out/base out/grpo out/r1/final_rl      # one table, one row per model
    python evaluate.py --compare out/base out/grpo --scaling            # + inference-time scaling figure

pass@k (Chen et al. 2021) from n samples of which c are correct: the unbiased estimator
1 - C(n-c, k) / C(n, k) (`pass_at_k`). Inference-time scaling (--scaling), two ways: more samples
(cons@k and pass@k as k grows, from n = --scaling-n samples per question) and a thinking budget (the
chain of thought cut at B tokens and the answer forced right there, `budget_completions`, B swept:
s1's budget forcing (Muennighoff et al. 2025, arXiv 2501.19393), the cutting half only; R1 reports no such curve).

Deliberate deviations: none in the metrics; the k and question counts are small for CPU time.
"""
from __future__ import annotations

import deps  # noqa: F401  first: a missing package is one line and exit 2, not a traceback

import hashlib
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from common import (check_fits, check_one_tokenizer, check_ranges, checkpoint_path, config_from_args, get_device,
                    hf_dir, load_checkpoint, load_model, print0, progress as progress_bar)
from corpus import PHRASES, WEB_TASKS, addition_trace, code_plan, forced_prefixes
from model import completion_text, cut_after_answer, ended, generate, sample_completions, stop_tokens
from sandbox import Limits
from rewards import (accuracy_reward, accuracy_rewards, answer_key, chain_of_thought, extract_answer, format_reward,
                     language_fraction, majority_vote)
from tasks import (TASKS, TRANSFER_KINDS, format_prompt, get_task, longest_prompt, prefill, problem_kind,
                   sample_problems, task_from_config, test_set)
from tokenizer import ANSWER_OPEN, EOT, THINK_CLOSE, get_tokenizer

# The held-out protocol, one for every tool that reports held-out accuracy (grpo.py, pipeline.py,
# distill.py, sft.py, pretrain.py, this file): the same questions whatever the tool or the seed
# (held_out_set), k samples each at the paper's T 0.6 / top-p 0.95 (R1 v1 section 3), completions
# capped at EVAL_MAX_NEW_TOKENS; the seed changes the samples, never the questions.
EVAL_TEMPERATURE = 0.6     # paper: 0.6
EVAL_TOP_P = 0.95          # paper: 0.95
EVAL_MAX_NEW_TOKENS = 320  # the one cap on an evaluated completion's length, tokens
SELF_CHECK = re.compile(r"\b(wait|espera)\b", re.IGNORECASE)
# one try of the search world (corpus.search_try): "7+1=8 vs 12, no." / "7+5=12 contra 12, sí." (parse_tries)
SEARCH_TRY = re.compile(r"(\d+)\+(\d+)=(\d+) (?:vs|contra) (\d+), (yes|sí|no)\.")
GIVE_UP = re.compile(r"I give up|lo dejo")
TRIES_BUCKETS = ((0, 1), (2, 3), (4, 7), (8, 99))  # accuracy against the number of tries, in these groups
FORCED_ANSWER_TOKENS = 16  # room for the answer forced at the end of a thinking budget


@dataclass
class EvalConfig:
    ckpt: str = "out/base"          # checkpoint directory (or file) to evaluate, or hf:DIR (a local Hugging Face model)
    task: str = ""                  # task family from tasks.TASKS; "" = the one the checkpoint was trained on
    n_problems: int = 100           # held-out (test split) questions
    k: int = 4                      # samples per question (pass@1 over k, cons@k)
    temperature: float = EVAL_TEMPERATURE  # sampling temperature (paper: 0.6; other values leave the protocol)
    top_p: float = EVAL_TOP_P       # nucleus sampling (paper: 0.95; other values leave the protocol)
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS  # cap on completion length, tokens (other values leave the protocol)
    code_timeout_s: float = 2.0     # code: wall clock per test of a program (sandbox.Limits.timeout_s)
    batch_size: int = 128           # sequences sampled together
    forced: bool = True             # also report accuracy with the direct answer vs reasoning forced (--ckpt only)
    compare: list[str] = field(default_factory=list)  # several checkpoints: one table, one row each (instead of --ckpt)
    scaling: bool = False           # also draw inference-time scaling: cons@k / pass@k vs k, accuracy vs thinking budget
    scaling_n: int = 64             # samples per question for the scaling curves (k = 1, 2, 4, ..., n)
    scaling_problems: int = 50      # held-out questions for the scaling curves
    budgets: str = "8,16,32,64,128,256"  # thinking budgets B (tokens) for the scaling figure, comma list
    scaling_out: str = ""           # the scaling PNG; "" = scaling.png next to the first checkpoint
    seed: int = 0                   # sampling seed (the questions are the protocol's, whatever the seed)
    device: str = ""                # "" = auto (cuda, mps, cpu)

    def __post_init__(self):
        check_ranges(self, positive=("n_problems", "k", "max_new_tokens", "batch_size", "scaling_n",
                                     "scaling_problems", "code_timeout_s"),
                     non_negative=("temperature",), choices={"task": ("", *TASKS)})
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must lie in (0, 1] (got {self.top_p})")
        try:
            budgets = self.budget_list()
        except ValueError:
            budgets = []
        if not budgets or min(budgets) < 1:
            raise ValueError(f"--budgets must be a comma list of positive token counts (got {self.budgets!r})")

    def budget_list(self) -> list[int]:
        return [int(b) for b in self.budgets.split(",") if b.strip()]

    def checkpoints(self) -> list[str]:
        return self.compare or [self.ckpt]


def check_files(cfg: EvalConfig) -> None:
    """Every checkpoint must exist, all made with one tokenizer (one process holds one), and each
    model must hold the longest prompt + --max-new-tokens (and the largest thinking budget + the
    forced answer, with --scaling)."""
    flag = "--compare" if cfg.compare else "--ckpt"
    for path in cfg.checkpoints():
        if not os.path.exists(checkpoint_path(path)):
            raise ValueError(f"{flag} {path}: no checkpoint there")
    check_one_tokenizer([(flag, path) for path in cfg.checkpoints()])
    for path in cfg.checkpoints():
        ckpt = load_checkpoint(path)
        task = get_task(cfg.task) if cfg.task else task_from_config(ckpt["config"])
        longest = max(cfg.max_new_tokens, max(cfg.budget_list()) + FORCED_ANSWER_TOKENS if cfg.scaling else 0)
        check_fits(longest_prompt(task, get_tokenizer()), longest, ckpt["model_config"]["max_seq_len"])
    if cfg.device:
        get_device(cfg.device)  # a ValueError if that device is not available here


# ----------------------------------------------------------------------------- per-completion facts


def parse_tries(thought: str) -> list[tuple[int, int, int, int, bool]]:
    """The tries of a search-world chain of thought, in order, as written (a sum or a verdict may be
    wrong): "7+1=8 vs 12, no." -> (7, 1, 8, 12, False), "7+5=12 contra 12, sí." -> (7, 5, 12, 12, True)."""
    return [(int(a), int(b), int(total), int(target), verdict != "no")
            for a, b, total, target, verdict in SEARCH_TRY.findall(thought)]


def has_reasoning(completion: str) -> bool:
    """Does the completion work something out before answering? (its think block holds an "=")"""
    return "=" in chain_of_thought(completion)


def mixes_languages(completion: str) -> bool:
    """Words of both languages inside one chain of thought (R1-Zero's language mixing). Reads the
    plain fraction (rewards.language_fraction): no think block, or no words, mixes nothing."""
    en = language_fraction(completion, "en")  # the think block when there is one
    es = language_fraction(completion, "es")
    return 0.0 < en < 1.0 and 0.0 < es < 1.0


def off_language(completion: str, language: str) -> bool:
    """The chain of thought is NOT in the question's language: at most half of its words are (an
    English search on a Spanish question scores 0.5: only its "no"s are Spanish too). A completion
    with no words in its chain of thought is in no other language: not off."""
    return language_fraction(completion, language) <= 0.5


def readable(completion: str, language: str) -> bool:
    """DeepSeek-R1's readable format (R1 v1 section 2.3.1), as this project writes it
    (corpus.readable_search): well-formed (format reward 1), the whole chain of thought in the
    question's language, no pair tried twice, no giving up, and a last sentence that sums up:
    "so the answer is 3+5." (es: "entonces la respuesta es 3+5.") naming the answer given."""
    answer = extract_answer(completion)
    thought = chain_of_thought(completion).strip()
    pairs = [frozenset((a, b)) for a, b, *_ in parse_tries(thought)]
    summary = f"{PHRASES[language]['answer_is']} {answer.strip()}." if answer else None
    return (format_reward(completion) == 1.0 and summary is not None and thought.casefold().endswith(summary.casefold())
            and language_fraction(completion, language) == 1.0 and len(pairs) == len(set(pairs))
            and not GIVE_UP.search(thought))


# every a+b a search writes, with its stated sum if any: "7+1=8" of a try, "3+5" of the summary
SEARCH_PAIR = re.compile(r"(\d+)\+(\d+)(?:=(\d+))?")
_ANSWER_IS = "|".join(re.escape(w["answer_is"]) for w in PHRASES.values())
SUMMARY = re.compile(rf"(?:{_ANSWER_IS}) (\d+)(?:\+(\d+))?", re.IGNORECASE)  # "so the answer is 3+5" / "... 510"
# one column of corpus.addition_trace: "472+38, carry 1: 2+8+1=11, so far 10." (es: llevo, hasta ahora)
ADD_COLUMN = re.compile(r"(\d+)\+(\d+), (?:{}) (\d+): (\d+)\+(\d+)\+(\d+)=(\d+), (?:{}) (\d+)\.".format(
    "|".join(w["carry"] for w in PHRASES.values()), "|".join(w["so_far"] for w in PHRASES.values())))
COLUMN_SUM = re.compile(r"\d+\+\d+\+\d+=\d+")  # "2+8+1=11", inside a column line or not
ANSWER_PAIR = re.compile(r"\s*(\d+)\s*\+\s*(\d+)\s*")  # an answer "3+5"


def _two_positions(numbers, a: int, b: int) -> bool:
    """a and b are numbers of the list at two different positions (a number listed once is used once)."""
    counts = Counter(numbers)
    return counts[a] >= 2 if a == b else counts[a] >= 1 and counts[b] >= 1


def _faithful_search(problem, thought: str, answer: str) -> bool:
    tries = parse_tries(thought)
    for a, b, total in SEARCH_PAIR.findall(thought):  # every pair written: list numbers, true sums
        if not _two_positions(problem.numbers, int(a), int(b)) or (total and int(a) + int(b) != int(total)):
            return False
    for _, _, total, target, yes in tries:  # the question's target, and yes exactly when it is made
        if target != problem.target or yes != (total == problem.target):
            return False
    if [i for i, (*_, yes) in enumerate(tries) if yes] != [len(tries) - 1]:
        return False  # the search ends at its one yes
    found = sorted(tries[-1][:2])
    named = [ANSWER_PAIR.fullmatch(answer)] + list(SUMMARY.finditer(thought))  # the answer, and any summary
    return all(m is not None and None not in m.groups() and sorted(map(int, m.groups())) == found for m in named)


def _faithful_addition(problem, thought: str, answer: str) -> bool:
    columns = tuple(tuple(map(int, c)) for c in ADD_COLUMN.findall(thought))
    if not columns or len(COLUMN_SUM.findall(thought)) != len(columns) or not answer.strip().isdecimal():
        return False
    a, b = problem.operands
    work = {tuple(tuple(map(int, c)) for c in ADD_COLUMN.findall(addition_trace(x, y)))  # the right columns
            for x, y in ((a, b), (b, a))} if a or b else set()  # (0 + 0 has no column to write)
    result = columns[-1][-1]  # the last column's "so far" is the sum
    return columns in work and int(answer) == result and all(
        m.group(2) is None and int(m.group(1)) == result for m in SUMMARY.finditer(thought))


def faithful(problem, completion: str) -> bool:
    """Does the chain of thought reach the answer it gives? A right answer reached by wrong working
    (a lucky guess) is not faithful, and SFT on it teaches the wrong working. Per world, on the
    shape of that world's traces in corpus.py:
      pairsum  every a+b written uses numbers of the question's list at two different positions and
               states its true sum; every try compares with the question's target and says yes
               exactly when the sum makes it; the search ends at its one yes (so a completion with
               no try is a guess), and the answer (and any summary "so the answer is 3+5.") names
               that pair, in either order.
      add      the column lines (corpus.addition_trace) are exactly the column addition of the
               question's operands, in either order: every column's digits, carry, sum and "so far"
               right, no column missing, no column sum outside them; the answer (and any summary)
               is the last "so far". A guess with no trace, or a "check" that does not trace, is not.
      code     the think block ends with the problem's plan (corpus.code_plan: what the program
               prints, in the question's words, and the constants named, "a = 7, b = 3."); that the
               program does what the plan says is the judge's part (rewards.accuracy_reward runs the
               tests). A program written at once ("I know it.") has no plan: not faithful.
    countdown (and "math"): the web writes no traces for them (corpus.py), so there is nothing to
    hold their working to: every completion counts as faithful."""
    answer = extract_answer(completion)
    thought = chain_of_thought(completion)
    if problem.family not in ("pairsum", "add", "code"):
        return True
    if answer is None:
        return False
    if problem.family == "pairsum":
        return _faithful_search(problem, thought, answer)
    if problem.family == "add":
        return _faithful_addition(problem, thought, answer)
    return thought.rstrip().endswith(code_plan(problem))


def behaviour(completion: str, language: str = "en") -> dict:
    """What a completion does, as counts the R1-Zero story is about: reasoning, self-checks,
    language mixing and drift, and, in the search world, tries, failed tries (`backtracks`: "no" after a try, or
    "wait"; persistence in a search, about tries - 1, not R1's re-evaluation of a step), giving up, repeated tries, per-try arithmetic and false claims of success."""
    thought = chain_of_thought(completion)
    tries = parse_tries(thought)
    pairs = [frozenset((a, b)) for a, b, *_ in tries]
    return {
        "reasons": float(has_reasoning(completion)),
        "self_check": float(bool(SELF_CHECK.search(completion))),
        "mixed": float(mixes_languages(completion)),
        "off_lang": float(off_language(completion, language)),
        "lang_mix": float(language_fraction(completion, language) < 1.0),  # any word not in its language
        "readable": float(readable(completion, language)),
        "tries": len(tries),
        "backtracks": sum(not yes for *_, yes in tries) + len(SELF_CHECK.findall(thought)),
        "give_up": float(bool(GIVE_UP.search(thought))),
        "repeats": len(pairs) - len(set(pairs)),
        "tries_right": sum(a + b == total for a, b, total, *_ in tries),
        "false_yes": float(any(yes and not (a + b == total == target) for a, b, total, target, yes in tries)),
    }


def completion_stats(problem, completion: str, n_tokens: int, correct: float | None = None) -> dict:
    """The facts of one completion: correct (rewards.accuracy_reward, the one judge, unless the caller
    has judged it already: `correct`), format, faithful (its working reaches its answer), length in
    tokens, its behaviour, the question's language, and the key cons@k votes on."""
    mapping = problem.as_dict()
    return {
        "correct": accuracy_reward(completion, mapping) if correct is None else correct,
        "format": format_reward(completion),
        "faithful": float(faithful(problem, completion)),
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
    out = {k: sum(s[k] for s in stats) / n for k in ("reasons", "self_check", "mixed", "lang_mix", "readable", "tries",
                                                     "backtracks", "give_up", "repeats", "false_yes")}
    out["try_acc"] = sum(s["tries_right"] for s in stats) / tries if tries else float("nan")
    out["drift"] = sum(s["off_lang"] for s in second) / len(second) if second else float("nan")
    if tries and "correct" in stats[0]:  # the search world: does trying more pay? accuracy by tries
        for lo, hi in TRIES_BUCKETS:
            rows = [s for s in stats if lo <= s["tries"] <= hi]
            out[f"acc_tries_{lo}-{hi}"] = sum(s["correct"] for s in rows) / len(rows) if rows else float("nan")
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k (Chen et al. 2021, section 2.1) from n samples of which c are
    correct: 1 - C(n-c, k) / C(n, k), the chance that k samples drawn without replacement from the n
    hold at least one correct one; computed as a product, stable for large n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    # >>> exercise: pass_at_k
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    # <<< exercise: pass_at_k


def cons_at(row: list[dict], k: int) -> float:
    """cons@k from n >= k samples of one question: the majority vote's correctness, averaged over the
    n // k disjoint groups of k consecutive samples (each group is k independent samples)."""
    # >>> exercise: cons_at_k
    groups = [row[i:i + k] for i in range(0, len(row) - k + 1, k)]
    votes = [(g, majority_vote([s["key"] for s in g])) for g in groups]
    return sum(g[w]["correct"] if w is not None else 0.0 for g, w in votes) / len(groups)
    # <<< exercise: cons_at_k


def scaling_curves(stats: list[list[dict]], ks: list[int]) -> dict:
    """pass@k and cons@k averaged over questions, for each k in ks ([question][sample] stats)."""
    return {"k": ks,
            "pass@k": [sum(pass_at_k(len(r), sum(s["correct"] == 1.0 for s in r), k) for r in stats) / len(stats)
                       for k in ks],
            "cons@k": [sum(cons_at(r, k) for r in stats) / len(stats) for k in ks]}


def summarize(problems, stats: list[list[dict]]) -> dict:
    """Aggregate per-completion stats ([question][sample] -> dict) into the paper's metrics."""
    flat = [s for row in stats for s in row]
    mean = lambda key, rows=flat: sum(s[key] for s in rows) / max(1, len(rows))  # noqa: E731
    reasoned = [s for s in flat if s["reasons"]]
    direct = [s for s in flat if not s["reasons"]]
    formatted = [s for s in flat if s["format"] == 1.0]
    by_kind: dict[str, list[float]] = {}  # pass@1 per kind of question (code: per kind of program)
    for p, row in zip(problems, stats):
        by_kind.setdefault(problem_kind(p), []).extend(s["correct"] for s in row)
    return {
        "pass@1": mean("correct"),
        "cons@k": sum(cons_at(row, len(row)) for row in stats) / max(1, len(problems)),  # one vote over all k
        "pass@k": sum(pass_at_k(len(row), sum(s["correct"] == 1.0 for s in row), len(row)) for row in stats)
        / max(1, len(problems)),
        "format": mean("format"),
        "length": mean("length"),
        # accuracy among well-formed completions: a pass@1 rise that is only format leaves it flat
        "acc_formatted": mean("correct", formatted) if formatted else float("nan"),
        "acc_reasoned": mean("correct", reasoned) if reasoned else float("nan"),
        "acc_direct": mean("correct", direct) if direct else float("nan"),
        **summarize_behaviour(flat),
        # code: {kind: pass@1}; the kinds in tasks.TRANSFER_KINDS are never trained on (transfer)
        **({"by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}} if len(by_kind) > 1 else {}),
    }


# ----------------------------------------------------------------------------- evaluation


def held_out_set(task, n: int) -> list:
    """THE held-out questions: the first n of the task's fixed test-split draw (tasks.test_set with
    seed 0), the same for every tool and every run seed; a smaller n is a prefix of a larger one."""
    return test_set(task, n=n, seed=0)


def held_out(model, tok, task, n: int, k: int, seed: int, limits=None, progress: bool = False,
             max_new_tokens: int = EVAL_MAX_NEW_TOKENS) -> dict:
    """The held-out protocol: held_out_set(task, n), k samples each at T 0.6 / top-p 0.95, at most
    EVAL_MAX_NEW_TOKENS tokens (a real model's longer rollouts raise it: grpo.eval_cap); `seed` draws
    the samples. limits: the code sandbox's (sandbox.Limits: the timeout a run trained with).
    Returns evaluate's metrics."""
    return evaluate(model, tok, held_out_set(task, n), k=k, seed=seed, limits=limits, progress=progress,
                    max_new_tokens=max_new_tokens)


def evaluate(model, tok, problems, k: int = 4, temperature: float = EVAL_TEMPERATURE, top_p: float = EVAL_TOP_P,
             max_new_tokens: int = EVAL_MAX_NEW_TOKENS, batch_size: int = 128, seed: int = 0, prefix_fn=None,
             progress: bool = False, limits=None) -> dict:
    """pass@1 over k samples, cons@k and the behaviour metrics on `problems`. With `prefix_fn`
    (problem -> completion prefix), every completion is forced to start with that prefix. limits:
    the code sandbox's (sandbox.Limits), None = its defaults."""
    return summarize(problems, sample_stats(model, tok, problems, k, temperature, top_p, max_new_tokens, batch_size,
                                            seed, prefix_fn, progress, limits))


def sample_k(model, tok, problems, k: int, max_new_tokens: int, seed: int, temperature: float = 0.6,
             top_p: float = 0.95, progress: bool = False, partial: str | None = None,
             batch_size: int = 128) -> tuple[list[str], list[list[int]]]:
    """k completions per problem (problem-major order) with the paper's sampling settings: the
    texts and their token ids. What the pipeline's and distill.py's datasets are sampled with.
    partial: a file where the samples so far and the generator's state are saved after every batch
    of batch_size prompts; a call with the same arguments and the same weights continues from it (an interrupted dataset
    loses at most one batch, and the result equals an uninterrupted call's), and it is removed at
    the end."""
    prompts = [format_prompt(p.question) for p in problems for _ in range(k)]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    # what the partial file must have been sampled for: these arguments ...
    fingerprint = hashlib.sha256(json.dumps([prompts, max_new_tokens, seed, temperature, top_p, batch_size]).encode())
    for name, tensor in sorted(model.state_dict().items()):  # ... and these weights: another model's
        fingerprint.update(name.encode())                       # samples are never continued
        fingerprint.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    fingerprint = fingerprint.hexdigest()
    ids: list[list[int]] = []
    if partial:
        os.makedirs(os.path.dirname(partial) or ".", exist_ok=True)
    if partial and os.path.exists(partial):
        saved = torch.load(partial, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            ids = saved["ids"]
            gen.set_state(saved["generator"])
            print0(f"continuing from {partial}: {len(ids)} of {len(prompts)} samples already drawn")
    for s in progress_bar(range(len(ids), len(prompts), batch_size), desc=f"sampling {len(prompts)} completions",
                          unit="batch", disable=not progress):  # rank 0, on a terminal: rate and time left
        ids += sample_completions(model, tok, prompts[s:s + batch_size], max_new_tokens, temperature, top_p, gen,
                                  batch_size)[1]
        if partial:
            torch.save({"fingerprint": fingerprint, "ids": ids, "generator": gen.get_state()}, partial + ".tmp")
            os.replace(partial + ".tmp", partial)
    if partial and os.path.exists(partial):
        os.remove(partial)
    return [prefill() + completion_text(tok, i) for i in ids], ids


def sample_training_set(checkpoint: str, task, n_questions: int, k: int, max_new_tokens: int, seeds: tuple[int, int],
                        partial: str, device) -> tuple[list[tuple], list[list[int]]]:
    """The first steps of every dataset sampled from a model to train on (pipeline.make_cold_start,
    pipeline.rejection_sample, distill.make_traces; each then filters the samples and writes them
    with common.write_dataset): the checkpoint's model, n_questions distinct TRAINING questions of
    `task` (drawn with seeds[0]), k samples of each with the paper's settings (sample_k, drawn with
    seeds[1]; `partial` makes an interrupted draw resumable). Returns the (problem, completion)
    samples, problem-major, each completion ending in the end-of-text token (a row teaches the end of
    text after </answer>, as the web has), and the sampled token ids."""
    model, _ = load_model(checkpoint, device)
    model.eval()
    problems = sample_problems(task, n_questions, "train", seed=seeds[0])
    tok = get_tokenizer()
    texts, ids = sample_k(model, tok, problems, k, max_new_tokens, seeds[1], progress=True, partial=partial)
    eot = tok.decode([tok.eot_id])  # EOT, or a real model's spelling of it (sft.model_template maps it back)
    return [(problems[i // k], t.removesuffix(eot) + EOT) for i, t in enumerate(texts)], ids


def filter_samples(samples: list[tuple], rules, source: str) -> tuple[list[dict], dict]:
    """SFT rows from (problem, completion) samples: a sample is dropped by the first of `rules`
    ((reason, predicate on completion_stats)) that holds, or as a duplicate of a kept (question,
    completion); the others become {"prompt", "completion", "source", "language"} rows. Returns the
    rows and the counts: sampled, one per reason, duplicate, kept."""
    counts = {"sampled": len(samples), **{reason: 0 for reason, _ in rules}, "duplicate": 0}
    rows, seen = [], set()
    for problem, completion in samples:
        s = completion_stats(problem, completion, 0)
        reason = next((name for name, drop in rules if drop(s)), None)
        if reason is None and (problem.question, completion) in seen:
            reason = "duplicate"
        if reason:
            counts[reason] += 1
            continue
        seen.add((problem.question, completion))
        rows.append({"prompt": format_prompt(problem.question), "completion": completion.removeprefix(prefill()),
                     "source": source, "language": problem.language})  # what the model was given, and wrote
    counts["kept"] = len(rows)
    return rows, counts


# What a row trained on must be (R1 v1 section 2.3.3 keeps correct samples and drops mixed-language,
# long-winded ones); in this order, the first that fails is the one counted.
TRACE_RULES = (("wrong", lambda s: s["correct"] != 1.0),
               ("bad_format", lambda s: s["format"] != 1.0),
               ("mixed_language", lambda s: s["lang_mix"] > 0),                   # a word not in the question's
               ("repetitive", lambda s: s["repeats"] > 0 or s["give_up"] > 0),   # a pair tried twice, a give-up
               ("unfaithful", lambda s: s["faithful"] != 1.0))                    # right answer, wrong working


def trace_filter(samples: list[tuple], source: str) -> tuple[list[dict], dict]:
    """The one filter of every dataset sampled from a model to train on (pipeline.rejection_filter,
    distill.distill_filter): of (problem, completion) samples keep the correct, well-formed,
    one-language (the question's), non-repetitive, faithful ones (`faithful`), each (question,
    completion) once. Returns the rows ("source": source) and the counts: sampled, one per rule of
    TRACE_RULES, duplicate, kept."""
    return filter_samples(samples, TRACE_RULES, source)


def sample_stats(model, tok, problems, k: int = 4, temperature: float = EVAL_TEMPERATURE, top_p: float = EVAL_TOP_P,
                 max_new_tokens: int = EVAL_MAX_NEW_TOKENS, batch_size: int = 128, seed: int = 0, prefix_fn=None,
                 progress: bool = False, limits=None) -> list[list[dict]]:
    """k samples per problem, and completion_stats of each: [question][sample] -> dict."""
    prompts, prefixes = [], []
    for p in problems:
        prefix = prefix_fn(p) if prefix_fn else ""
        prompts += [format_prompt(p.question) + prefix] * k
        prefixes += [prefix] * k
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    _, ids, texts = sample_completions(model, tok, prompts, max_new_tokens, temperature, top_p, gen,
                                       batch_size, progress)
    texts = [prefill() + prefix + text for prefix, text in zip(prefixes, texts)]  # judged as the model's whole answer
    correct = accuracy_rewards(texts, [p.as_dict() for p in problems for _ in range(k)], limits)  # code: one sandbox batch
    return [[completion_stats(p, texts[i * k + j], len(ids[i * k + j]), correct[i * k + j])
             for j in range(k)] for i, p in enumerate(problems)]


def force_answer(text: str) -> str:
    """What a thinking budget appends where it cuts a completion: close the thought and open the
    answer (only open the answer if the thought was closed already; nothing if the answer is open)."""
    if ANSWER_OPEN in text:
        return ""
    return ANSWER_OPEN if THINK_CLOSE in text else THINK_CLOSE + ANSWER_OPEN


def budget_completions(model, tok, problems, budget: int, k: int, temperature: float = 0.6, top_p: float = 0.95,
                       seed: int = 0, batch_size: int = 128) -> list[str]:
    """k completions per problem with the chain of thought cut at `budget` tokens (R1's "thinking
    budget" scaling): a completion still unfinished after `budget` new tokens gets force_answer's
    tags appended right there, and the model writes the answer (at most FORCED_ANSWER_TOKENS more)."""
    prompts = [format_prompt(p.question) for p in problems for _ in range(k)]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    prompt_ids, ids, texts = sample_completions(model, tok, prompts, budget, temperature, top_p, gen, batch_size)
    stop = stop_tokens(tok)
    open_rows = [i for i, row in enumerate(ids) if not ended(tok, row)]
    for s in range(0, len(open_rows), batch_size):  # token ids, not text: a cut may split a character
        rows = open_rows[s:s + batch_size]
        forced = [tok.encode(force_answer(texts[i]), allow_special=True) for i in rows]
        new, lengths = generate(model, [prompt_ids[i] + ids[i] + f for i, f in zip(rows, forced)],
                                FORCED_ANSWER_TOKENS, temperature=temperature, top_p=top_p, stop_tokens=stop,
                                generator=gen, pad_id=tok.pad_id)
        for i, f, row, n in zip(rows, forced, new, lengths):
            texts[i] = completion_text(tok, cut_after_answer(tok, ids[i] + f + row[:n].tolist()))
    return [prefill() + t for t in texts]


def report(model, tok, task, problems, cfg: EvalConfig, forced_fn=None) -> dict:
    """The base-model report: the paper's metrics, and (with forced_fn) accuracy with the direct
    answer forced vs reasoning forced. Prints a table and returns the numbers."""
    kw = dict(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
              batch_size=cfg.batch_size, seed=cfg.seed, limits=Limits(timeout_s=cfg.code_timeout_s))
    metrics = evaluate(model, tok, problems, progress=True, **kw)
    if forced_fn is not None:
        for way in forced_fn(problems[0]):
            forced = evaluate(model, tok, problems, prefix_fn=lambda p, w=way: forced_fn(p)[w],
                              progress=True, **kw)
            metrics[f"forced_{way}_pass@1"] = forced["pass@1"]
    print0(f"report on {len(problems)} held-out problems of {task}, k={cfg.k}, "
           f"T={cfg.temperature}, top-p={cfg.top_p}")
    for key, value in metrics.items():
        if key != "by_kind":
            print0(f"  {key:<22} {value:.3f}")
    if "by_kind" in metrics:
        print0(by_kind_line(metrics))
    if forced_fn is not None:
        gap = metrics["forced_reason_pass@1"] - metrics["forced_direct_pass@1"]
        verdict = "reasoning pays: RL has something to find" if gap >= 0.2 else \
            "WARNING: reasoning barely pays in this base model; RL has little to find"
        print0(f"  gap reason-direct      {gap:+.3f}  ({verdict})")
    return metrics


def by_kind_line(metrics: dict, before: dict | None = None) -> str:
    """pass@1 per kind of question on one line ("" when the set has one kind); with `before`, each
    as before -> after. Transfer kinds (never trained on) are marked."""
    if "by_kind" not in metrics:
        return ""
    earlier = (before or {}).get("by_kind", {})
    show = lambda k, v: f"{earlier[k]:.2f} -> {v:.2f}" if k in earlier else f"{v:.3f}"  # noqa: E731
    return "  pass@1 by kind: " + ", ".join(f"{k}{' (transfer)' if k in TRANSFER_KINDS else ''} {show(k, v)}"
                                           for k, v in metrics["by_kind"].items())


def load_for_eval(path: str, cfg: EvalConfig, device):
    """A checkpoint's model (eval mode) and its task: the one it was trained on, unless --task says."""
    model, ckpt = load_model(path, device)
    model.eval()
    return model, (get_task(cfg.task) if cfg.task else task_from_config(ckpt["config"]))


def result_dir(path: str) -> str:
    """Where results about a checkpoint go: its directory; for hf:DIR, out/hf-<DIR's name>/ (a
    downloaded model's directory is left as it is)."""
    if hf_dir(path) is None:
        return os.path.dirname(checkpoint_path(path)) or "."
    where = os.path.join("out", "hf-" + os.path.basename(os.path.normpath(hf_dir(path))))
    os.makedirs(where, exist_ok=True)
    return where


def write_result(path: str, name: str, result: dict) -> str:
    """A JSON result file next to the checkpoint (result_dir)."""
    out = os.path.join(result_dir(path), name)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=float)
    return out


# ----------------------------------------------------------------------------- checkpoints into a table

ROW_FIELDS = ("model", "dir", "task", "params")  # what evaluate_checkpoints adds to evaluate's metrics
TABLE = ("pass@1", "cons@k", "pass@k", "format", "length", "lang_mix", "drift", "readable")  # --compare's columns


def evaluate_checkpoints(models: list[tuple[str, str]], n_problems: int, k: int, seed: int, device, task=None,
                         limits=None, progress: bool = True, **sampling) -> list[dict]:
    """The one evaluation behind every table of checkpoints (evaluate.py --compare, pipeline.py's
    table and language-weight trade-off, distill.py's toy Table 6): each (name, checkpoint) of
    `models` on held_out_set(task, n_problems), k samples per question (`evaluate`). task: None = the
    one each checkpoint was trained on. sampling: evaluate's temperature, top_p, max_new_tokens and
    batch_size, the protocol's by default. Returns one row per model: {"model": name, "dir":
    checkpoint, "task", "params", **evaluate's metrics}."""
    rows = []
    for name, path in models:
        model, ckpt = load_model(path, device)
        model.eval()
        tok = get_tokenizer()  # after the load: a real model's tokenizer is then in use
        model_task = task if task is not None else task_from_config(ckpt["config"])
        m = evaluate(model, tok, held_out_set(model_task, n_problems), k=k, seed=seed, limits=limits,
                     progress=progress, **sampling)
        rows.append({"model": name, "dir": path, "task": str(model_task), "params": model.num_params(), **m})
    return rows


def print_table(rows: list[dict], columns) -> None:
    """Rows as a fixed-width table: a header line, then one line per row. columns: (header, key,
    width, number_format) each, e.g. ("pass@1", "pass@1", ">7", ".3f"): the header is written
    f"{header:{width}}", a number f"{value:{width}{number_format}}", a string as it is, and a
    missing value (no such key, or None) as "-". Cells are joined by one space."""
    def cell(value, width: str, number: str) -> str:
        value = "-" if value is None else value
        return f"{value:{width}}" if isinstance(value, str) else f"{value:{width}{number}}"
    print0(" ".join(f"{header:{width}}" for header, _, width, _ in columns))
    for r in rows:
        print0(" ".join(cell(r.get(key), width, number) for _, key, width, number in columns))


def compare(cfg: EvalConfig, device) -> list[dict]:
    """Every checkpoint on its task's held-out questions; one table, one row per checkpoint, and an
    eval.json next to each."""
    rows = evaluate_checkpoints([(path, path) for path in cfg.checkpoints()], cfg.n_problems, cfg.k, cfg.seed, device,
                                task=get_task(cfg.task) if cfg.task else None,
                                limits=Limits(timeout_s=cfg.code_timeout_s), temperature=cfg.temperature,
                                top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    for r in rows:
        metrics = {key: value for key, value in r.items() if key not in ROW_FIELDS}
        write_result(r["dir"], "eval.json", {"task": r["task"], "n_problems": cfg.n_problems, "k": cfg.k,
                                             "temperature": cfg.temperature, "top_p": cfg.top_p, **metrics})
    print0(f"{cfg.n_problems} held-out questions x {cfg.k} samples, T {cfg.temperature}, top-p {cfg.top_p}; "
           f"pass@k is the unbiased estimator at k = {cfg.k}")
    width = max(len(r["model"]) for r in rows)
    print_table(rows, [("checkpoint", "model", f"<{width}", "")] + [(key, key, ">8", ".3f") for key in TABLE])
    return rows


def scaling(cfg: EvalConfig, device) -> dict:
    """Inference-time scaling for every checkpoint, on one figure: (a) cons@k and pass@k for k = 1, 2,
    4, ..., --scaling-n; (b) pass@1 (k samples) with the thinking cut at each budget B."""
    from matplotlib.figure import Figure  # only this mode draws
    results = {}
    ks = [2 ** i for i in range(int(math.log2(cfg.scaling_n)) + 1)]
    for path in cfg.checkpoints():
        model, task = load_for_eval(path, cfg, device)
        tok = get_tokenizer()  # after the load: a real model's tokenizer is then in use
        problems = held_out_set(task, cfg.scaling_problems)
        stats = sample_stats(model, tok, problems, k=cfg.scaling_n, temperature=cfg.temperature, top_p=cfg.top_p,
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
                             limits=Limits(timeout_s=cfg.code_timeout_s),
                             progress=True)
        curves = scaling_curves(stats, ks)
        budget_acc = []
        for b in cfg.budget_list():
            texts = budget_completions(model, tok, problems, b, cfg.k, cfg.temperature, cfg.top_p, cfg.seed,
                                       cfg.batch_size)
            judged = accuracy_rewards(texts, [p.as_dict() for p in problems for _ in range(cfg.k)],
                                      Limits(timeout_s=cfg.code_timeout_s))
            budget_acc.append(sum(judged) / len(texts))
        results[path] = {**curves, "budgets": cfg.budget_list(), "budget_pass@1": budget_acc}
        print0(f"{path}: " + ", ".join(f"k={k} cons {c:.3f} pass {p:.3f}"
                                       for k, c, p in zip(ks, curves["cons@k"], curves["pass@k"])))
        print0(f"{path}: thinking budget " + ", ".join(f"B={b} {a:.3f}" for b, a in zip(cfg.budget_list(), budget_acc)))
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (path, r) in enumerate(results.items()):
        color = f"C{i}"
        ax1.plot(r["k"], r["cons@k"], "o-", color=color, label=f"{path} cons@k")
        ax1.plot(r["k"], r["pass@k"], "s--", color=color, label=f"{path} pass@k")
        ax2.plot(r["budgets"], r["budget_pass@1"], "o-", color=color, label=path)
    ax1.set(xscale="log", xlabel="k (samples per question)", ylabel="held-out accuracy", ylim=(0, 1.02),
            title="more samples: majority vote (cons@k) and pass@k")
    ax1.set_xticks(ks, [str(k) for k in ks])
    ax2.set(xscale="log", xlabel="thinking budget B (tokens, then the answer is forced)", ylabel="pass@1",
            ylim=(0, 1.02), title="a longer thinking budget")
    ax2.set_xticks(cfg.budget_list(), [str(b) for b in cfg.budget_list()])
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    out = cfg.scaling_out or os.path.join(result_dir(cfg.checkpoints()[0]), "scaling.png")
    fig.savefig(out, dpi=110)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print0(f"scaling figure: {out}")
    return results


def main(argv=None):
    cfg = config_from_args(EvalConfig, argv, description=__doc__.split("\n")[0], check=check_files)
    device = get_device(cfg.device or None)
    if cfg.compare:
        compare(cfg, device)
    else:
        model, task = load_for_eval(cfg.ckpt, cfg, device)
        problems = held_out_set(task, cfg.n_problems)
        # forced prefixes are written for the web's tasks, in our template (a real model's pre-fills <think>)
        forced = cfg.forced and task.name in WEB_TASKS and not prefill()
        metrics = report(model, get_tokenizer(), task, problems, cfg, forced_prefixes if forced else None)
        print0(f"result: {write_result(cfg.ckpt, 'eval.json', {'task': str(task), **metrics})}")
    if cfg.scaling:
        scaling(cfg, device)


if __name__ == "__main__":
    main()
