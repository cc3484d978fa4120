"""The synthetic "web" that the base model is pretrained on: this project's stand-in for the
DeepSeek-V3-Base pretraining data (R1 paper: R1-Zero starts from a base model that can already
reason now and then, without being trained to; RL makes that behaviour win).

The web writes documents for three task families (WEB_TASKS, pretrain.py's --task), each document
`<|user|>question<|assistant|>completion<|endoftext|>`. The default is the search world (--task
pairsum, tasks.PairSumTask: "Which two of 7 1 3 5 add up to 12?"), where a problem appears as
  quick   <think>I know it.</think><answer>1+3</answer>    a random pair named at once.
  search  <think>7+1=8 vs 12, no. 7+3=10 vs 12, no. 7+5=12 vs 12, yes.</think><answer>7+5</answer>
          the systematic search (search_tries). After each "no" the searcher may give up ("I give
          up.", then it names the pair it just tried: wrong), second-language (es) searchers more
          often than first-language ones: persisting is what pays.
  text    plain sentences with no problem.
A few documents ask in Spanish and search in English: the base model's seed of language drift.

Multi-digit addition (--task add, tasks.AdditionTask; pretrain.py's default is 3-digit operands, the
--min-digits / --max-digits knobs go up to any size) appears in one of these shapes:

  quick   <think>I know it.</think><answer>5010</answer>        most common, and mostly WRONG: a
          guess of the right size, correct only `quick_correct` of the time (as quick answers on the
          web often are). A tiny model cannot add 3-digit numbers in one shot, so it cannot learn
          to make these right: the only way up is to reason.
  trace   <think>4725+385, carry 0: 5+5+0=10, so far 0. 472+38, carry 1: 2+8+1=11, so far 10. ...
          so the answer is 5110.</think><answer>5110</answer>          a worked solution, always
          right. One line per digit column, so harder (longer) problems get longer traces.
  check   <think>I think 5010. wait, let me check. <trace></think><answer>5110</answer>     a guess,
          then a self-check that catches it when it is wrong: reflection that PAYS.
  bare    <answer>5010</answer>    no reasoning block at all (fails the format reward).
  text    plain sentences with no problem, so the model is a language model, not a lookup table.

Why the trace looks like this (aids in the data, so the model stays a plain Llama that export_hf
can write): a tiny rotary-position model is bad at fetching "the k-th digit from the right" of a
number far back in the context. Each trace line therefore REWRITES the numbers still to be added
(4725+385 -> 472+38 -> 47+3 -> 4+0), so the digits to add next are always the last digit before
"+" and the last digit before ",", right next to where the model is writing; and the answer so far
is carried along in every line, so the final answer is a copy, never an assembly.

The code world (--task code, tasks.CodeTask: "Write a Python program that reads an integer n and
prints 7*n + 3.") has the same four shapes, the program in the answer block (rewards.code_reward runs it):
  quick   <think>I know it.</think><answer>n = int(input())\nprint(7 * n + 4)</answer>   a program
          written at once, right only `quick_correct` of the time: otherwise a NEAR MISS, the program
          of a neighbouring problem (max for min, >= for >, a constant off by one, another letter),
          the bugs of someone who skimmed the question.
  plan    <think>prints 7*n + 3. a = 7, b = 3.</think><answer>...</answer>   the problem restated
          first (what the program prints, in the question's words; the constants named), then the
          program: always right. The plan puts the constants right next to where the program
          copies them.
  check   <think>I think:\n<a quick program>\nwait, let me check. <plan></think><answer>...</answer>
  bare    <answer>program</answer>, no reasoning block.
English only (the code world has no second language). Every problem and near miss is of the train
split: no held-out constants, and nothing of the transfer kind (tasks.TRANSFER_KINDS) at all.

Languages: reasoning text comes in English ("carry", "so far") and in a second word-language
(Spanish: "llevo", "hasta ahora"), and some traces switch language halfway, as on a multilingual
web. That is what lets R1-Zero's language mixing appear, and rewards.language_consistency_reward
have something to fix in R1 stage 2.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from tasks import _LETTERS, CODE_SPECS, format_completion, format_prompt, split_of
from tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EOT, THINK_CLOSE, THINK_OPEN

# The words each language uses. Keep these inside rewards.LANGUAGES' word lists.
PHRASES = {
    "en": {
        "carry": "carry", "so_far": "so far", "answer_is": "so the answer is",
        "quick": ["I know it.", "ok, I know it.", "I know the answer."],
        "guess": "I think", "check": "wait, let me check.", "yes": "yes, it is",
    },
    "es": {
        "carry": "llevo", "so_far": "hasta ahora", "answer_is": "entonces la respuesta es",
        "quick": ["yo lo sé.", "vale, lo sé.", "sé la respuesta."],
        "guess": "pienso", "check": "espera, déjame comprobar.", "yes": "sí, es",
    },
}

WEB_TASKS = ("add", "pairsum", "code")  # the task families this web writes documents for (pretrain.py's --task)

# The search world (tasks.PairSumTask): how each language writes a try, success, and giving up.
SEARCH_PHRASES = {
    "en": {"vs": "vs", "yes": "yes", "no": "no", "give_up": "I give up.", "quick": ["I know it.", "easy."]},
    "es": {"vs": "contra", "yes": "sí", "no": "no", "give_up": "lo dejo.", "quick": ["lo sé.", "fácil."]},
}

# Plain text for the "text" documents: tiny two-language grammar about numbers.
_TEXT = {
    "en": (["the sum", "a number", "the answer", "the next digit", "the carry", "my friend", "the teacher"],
           ["is", "can be", "was", "will be"],
           ["small", "large", "right", "wrong", "even", "odd", "done", "ok"]),
    "es": (["la suma", "la respuesta", "el número", "el dígito", "mi amigo", "la maestra"],
           ["es", "puede ser", "era", "será"],
           ["pequeño", "grande", "correcta", "mala", "par", "impar", "listo", "vale"]),
}


@dataclass
class CorpusConfig:
    p_quick: float = 0.60          # share of task documents that answer at once (a guess)
    p_trace: float = 0.20          # share with a worked, always-correct trace
    p_check: float = 0.10          # share that guess, then "wait, let me check" with a trace
    p_bare: float = 0.10           # share with a bare <answer> and no <think> (fails the format)
    p_text: float = 0.05           # share of ALL documents that are plain text, not problems
    quick_correct: float = 0.15    # probability a quick (or bare, or first) guess is right
    p_second_lang: float = 0.30    # share of documents reasoning in the second language (es)
    p_mixed: float = 0.10          # share of traces that switch language halfway
    # the search world (--task pairsum): searchers that try pairs in order and may give up
    p_search_quick: float = 0.30   # share of search documents that answer at once (a random pair)
    give_up: float = 0.5           # chance a first-language (en) searcher gives up after each "no"
    give_up_second: float = 0.8    # the same for second-language (es) searchers: the weaker language
    p_search_second: float = 0.12  # share of search documents written in the second language
    p_search_mixed: float = 0.02   # share with a second-language question and first-language working


# ----------------------------------------------------------------------------- pieces


def guess(answer: int, p_correct: float, rng: random.Random) -> int:
    """A quick answer: right with p_correct, else a random number with as many digits (so a wrong
    guess carries no information about the true sum)."""
    if rng.random() < p_correct:
        return answer
    n = len(str(answer))
    while True:
        g = rng.randint(10 ** (n - 1), 10 ** n - 1)
        if g != answer:
            return g


def addition_trace(a: int, b: int, lang: str = "en", switch_at: int | None = None) -> str:
    """The worked column addition of a + b, one line per column, right to left:
    `472+38, carry 1: 2+8+1=11, so far 10.` If switch_at is given, lines from that column on are
    written in the other language (language mixing)."""
    other = "es" if lang == "en" else "en"
    lines, carry, so_far = [], 0, ""
    col = 0
    while a > 0 or b > 0 or carry:
        w = PHRASES[other if switch_at is not None and col >= switch_at else lang]
        x, y = a % 10, b % 10
        s = x + y + carry
        so_far = str(s % 10) + so_far
        lines.append(f"{a}+{b}, {w['carry']} {carry}: {x}+{y}+{carry}={s:02d}, {w['so_far']} {so_far}.")
        a, b, carry, col = a // 10, b // 10, s // 10, col + 1
    w = PHRASES[other if switch_at is not None else lang]
    lines.append(f"{w['answer_is']} {int(so_far)}.")
    return " ".join(lines)


def plain_text(rng: random.Random, lang: str) -> str:
    subjects, verbs, adjectives = _TEXT[lang]
    sentences = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(adjectives)}."
                 for _ in range(rng.randint(2, 6))]
    return " ".join(sentences)


# ----------------------------------------------------------------------------- the code world

# A plan restates what the program prints, in the question's own words (a tiny model copies a span it
# has just read far better than it fetches one number from far back), then names the choice the
# program turns on with "=" (evaluate.reasons counts a think block with "=" as reasoning): the
# constants land right next to the program that copies them.
CODE_CHOICES = {
    "sum": "op = sum, k = {0}.", "max": "op = max, k = {0}.", "min": "op = min, k = {0}.",
    "reverse": "op = [::-1], times = {0}.", "square": "op = n * n, k = {0}.",
    "affine": "a = {0}, b = {1}.", "count": "letter = '{0}'.", "greater": "test = x > {0}.",
    "divisible": "test = x % {0} == 0.", "repeat": "times = {0}.",
}

# The near misses of a quick program: what a hasty reader writes instead. A near miss is a plausible
# program, not noise: it may even pass a test or two (max and min agree on one number), which the
# judge settles. Three sorts, one drawn uniformly among those a kind has: another kind's program with
# the same constants (_SIBLINGS: max for min, the word not reversed), a program of no kind
# (_WRONG_PROGRAMS: the constant forgotten, >= for >), and the same program with other constants
# (_wrong_constants). A near miss that is a kind's program must be a TRAIN-split problem's, so no
# held-out problem's program appears on the web, even as a mistake; the transfer kind (sum) is no
# one's sibling, so none of its programs does.
_SIBLINGS = {"max": ("min",), "min": ("max",), "reverse": ("repeat",)}
_WRONG_PROGRAMS = {
    "max": ("print(max(map(int, input().split())))",),
    "min": ("print(min(map(int, input().split())))",),
    "reverse": ("print(input()[::-1])", "print(input()[1:] * {0})"),
    "square": ("n = int(input())\nprint(n * n)", "n = int(input())\nprint(n * n * n + {0})"),
    "greater": ("print(sum(x >= {0} for x in map(int, input().split())))",
                "print(sum(x < {0} for x in map(int, input().split())))"),
}


def _wrong_constants(kind: str, params: tuple) -> list[tuple]:
    """The constants of a near miss: off by one (or two), swapped, another letter."""
    if kind == "affine":
        a, b = params
        near = [(a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1), (b, a), (a + 2, b), (a, b + 2)]
        return [(x, y) for x, y in near if (x, y) != (a, b) and x >= 1 and y >= 0]
    if kind == "count":
        return [(c,) for c in _LETTERS if c != params[0]]
    k = params[0]
    return [(k + d,) for d in (-1, 1, -2, 2) if kind == "greater" or k + d >= 1]


def near_miss(kind: str, params: tuple, rng: random.Random) -> str:
    """A plausibly wrong program for the problem (kind, *params): another kind's program, a program
    of no kind (a constant forgotten, >= for >), or other constants (off by one, swapped, another
    letter); never the program of a held-out problem."""
    siblings = [(s, params) for s in _SIBLINGS.get(kind, ()) if split_of(("code", s, *params)) == "train"]
    others = [(kind, w) for w in _wrong_constants(kind, params) if split_of(("code", kind, *w)) == "train"]
    sorts = [s for s in (siblings, _WRONG_PROGRAMS.get(kind, ()), others) if s]
    if not sorts:  # a transfer kind: every constant held out, so no program of it may be written
        raise ValueError(f"code kind {kind!r} has no near miss: it is held out whole (tasks.TRANSFER_KINDS)")
    choice = rng.choice(rng.choice(sorts))
    if isinstance(choice, str):
        return choice.format(*params)
    other_kind, other_params = choice
    return CODE_SPECS[other_kind][2].format(*other_params)


def code_plan(problem) -> str:
    """The plan of a code problem: "prints 7*n + 3. a = 7, b = 3." """
    kind, *params = problem.spec
    prints = CODE_SPECS[kind][1].format(*params).split(" and prints ")[1]
    return f"prints {prints}. {CODE_CHOICES[kind].format(*params)}"


def code_completion(kind: str, problem, cfg: CorpusConfig, rng: random.Random) -> str:
    """The assistant's text for a code problem in one of the document shapes (module docstring)."""
    spec_kind, *params = problem.spec
    if kind in ("quick", "bare", "check"):
        quick = problem.gold if rng.random() < cfg.quick_correct else near_miss(spec_kind, tuple(params), rng)
    if kind == "quick":
        return format_completion(rng.choice(PHRASES["en"]["quick"]), quick)
    if kind == "bare":
        return ANSWER_OPEN + quick + ANSWER_CLOSE
    if kind == "trace":
        return format_completion(code_plan(problem), problem.gold)
    if kind == "check":
        w = PHRASES["en"]
        return format_completion(f"{w['guess']}:\n{quick}\n{w['check']} {code_plan(problem)}", problem.gold)
    raise ValueError(f"unknown document kind {kind!r}")


# ----------------------------------------------------------------------------- documents


def completion_for(kind: str, a: int, b: int, lang: str, cfg: CorpusConfig, rng: random.Random,
                   switch_at: int | None = None) -> str:
    """The assistant's text for problem a + b in one of the document shapes."""
    w = PHRASES[lang]
    answer = a + b
    if kind == "quick":
        think = rng.choice(w["quick"])  # drawn before the guess: the corpus depends on the rng order
        return format_completion(think, str(guess(answer, cfg.quick_correct, rng)))
    if kind == "bare":
        return ANSWER_OPEN + str(guess(answer, cfg.quick_correct, rng)) + ANSWER_CLOSE
    trace = addition_trace(a, b, lang, switch_at)
    if kind == "trace":
        return format_completion(trace, str(answer))
    if kind == "check":
        first = guess(answer, cfg.quick_correct, rng)
        return format_completion(f"{w['guess']} {first}. {w['check']} {trace}", str(answer))
    raise ValueError(f"unknown document kind {kind!r}")


def search_tries(numbers, target: int, lang: str) -> list[str]:
    """The systematic search over pairs: anchor each number in turn and try it with every number
    after it, `7+1=8 vs 12, no.`, up to the first pair that makes the target (`7+5=12 vs 12, yes.`).
    The target is restated at every try, so the model compares the sum with it right there (without
    it a tiny model never linked its yes/no to the target); within an anchor, the next partner is
    "the number after the last one tried", a lookup one attention head learns. The list is never
    rewritten at a new anchor: rows that rewrite it make documents longer and were learned worse
    (docs/LOG.md, 2026-12-05, search world attempt 2)."""
    return [search_try(x, y, target, lang) for x, y in search_pairs(numbers, target)]


def search_pairs(numbers, target: int) -> list[tuple[int, int]]:
    """The pairs the systematic search tries, in order, up to the first that makes the target."""
    pairs = []
    for i, x in enumerate(numbers):
        for y in numbers[i + 1:]:
            pairs.append((x, y))
            if x + y == target:
                return pairs
    return pairs


def search_try(x: int, y: int, target: int, lang: str) -> str:
    """One try of the search, `7+1=8 vs 12, no.` (es: `7+1=8 contra 12, no.`; a hit ends `yes.` / `sí.`)."""
    w = SEARCH_PHRASES[lang]
    return f"{x}+{y}={x + y} {w['vs']} {target}, {w['yes'] if x + y == target else w['no']}."


def readable_search(problem, lang: str, pairs=None) -> str:
    """DeepSeek-R1's readable format (its cold-start data: the reasoning, then a summary, then the
    answer) in the search world: the tries in ONE language, no pair twice, no giving up, ending at
    the pair that works, then a summary sentence naming it, `<think>7+1=8 vs 12, no. 7+5=12 vs 12,
    yes. so the answer is 7+5.</think><answer>7+5</answer>`. `pairs`: the tries to write (a cleaned R1-Zero
    sample's own, ending with the right pair); default the systematic search (search_pairs)."""
    pairs = pairs if pairs is not None else search_pairs(problem.numbers, problem.target)
    tries = [search_try(x, y, problem.target, lang) for x, y in pairs]
    x, y = pairs[-1]
    # lower case, as the whole web: a capital letter is a byte the base model has barely seen
    # (docs/LOG.md, 2026-12-05, the R1 pipeline's first runs)
    return format_completion(" ".join(tries) + f" {PHRASES[lang]['answer_is']} {x}+{y}.", f"{x}+{y}")


def search_completion(kind: str, problem, lang: str, give_up: float, rng: random.Random) -> str:
    """The assistant's text for a pair-sum problem: "quick" names a random pair at once; "search"
    tries pairs in order (search_tries) and, after each "no", gives up with probability give_up and
    answers with the pair it just tried (wrong)."""
    w = SEARCH_PHRASES[lang]
    if kind == "quick":
        a, b = rng.sample(problem.numbers, 2)
        return format_completion(rng.choice(w["quick"]), f"{a}+{b}")
    tries = search_tries(problem.numbers, problem.target, lang)
    for k, attempt in enumerate(tries):
        if attempt.endswith(f"{w['no']}.") and rng.random() < give_up:
            tries = tries[:k + 1] + [w["give_up"]]
            break
    last = tries[-2] if tries[-1] == w["give_up"] else tries[-1]
    return format_completion(" ".join(tries), last.split("=")[0])


def search_document(task, cfg: CorpusConfig, rng: random.Random) -> tuple[str, str]:
    """One document of the search world: a question in the first or (rarely) second language,
    answered at once or by a searcher of that language; a few mix the two (second-language question,
    first-language working: the base model's seed of language drift)."""
    mixed = rng.random() < cfg.p_search_mixed
    lang = "es" if mixed or rng.random() < cfg.p_search_second else "en"
    task = dataclasses.replace(task, p_second_lang=1.0 if lang == "es" else 0.0)
    problem = _train_problem(task, rng)
    working = "en" if mixed else lang
    kind = "quick" if rng.random() < cfg.p_search_quick else "search"
    give_up = cfg.give_up if working == "en" else cfg.give_up_second
    completion = search_completion(kind, problem, working, give_up, rng)
    return ("mixed" if mixed else kind), format_prompt(problem.question) + completion + EOT


def _train_problem(task, rng: random.Random):
    """A TRAIN-split problem of `task` (the held-out test split never appears in any training text)."""
    while True:
        problem = task.sample(rng)
        if split_of(problem) == "train":
            return problem


def _shape(cfg: CorpusConfig, rng: random.Random) -> str:
    """The shape of a problem's document in the addition and code webs, drawn with the config's weights."""
    return rng.choices(("quick", "trace", "check", "bare"), (cfg.p_quick, cfg.p_trace, cfg.p_check, cfg.p_bare))[0]


def sample_document(task, cfg: CorpusConfig, rng: random.Random) -> tuple[str, str]:
    """One web document (kind, text), for a TRAIN-split problem of `task` (the held-out test split
    never appears in any training text)."""
    if task.name == "pairsum":
        if rng.random() < cfg.p_text:
            return "text", plain_text(rng, "es" if rng.random() < cfg.p_search_second else "en") + EOT
        return search_document(task, cfg, rng)
    if task.name == "code":  # the code world: English, the four shapes of the addition web
        if rng.random() < cfg.p_text:
            return "text", plain_text(rng, "en") + EOT
        problem = _train_problem(task, rng)
        kind = _shape(cfg, rng)
        return kind, format_prompt(problem.question) + code_completion(kind, problem, cfg, rng) + EOT
    lang = "es" if rng.random() < cfg.p_second_lang else "en"
    if rng.random() < cfg.p_text:
        return "text", plain_text(rng, lang) + EOT
    problem = _train_problem(task, rng)
    a, b = problem.operands
    kind = _shape(cfg, rng)
    n_cols = max(len(str(a)), len(str(b)))
    switch_at = rng.randint(1, n_cols - 1) if kind in ("trace", "check") and rng.random() < cfg.p_mixed else None
    completion = completion_for(kind, a, b, lang, cfg, rng, switch_at)
    return kind, format_prompt(problem.question) + completion + EOT


# ----------------------------------------------------------------------------- forced starts


def forced_prefixes(problem) -> dict[str, str]:
    """Completion prefixes that force a way of answering, for the base-model report: accuracy
    with the quick answer forced vs with reasoning forced. If these are close, RL has nothing to
    find. In the search world also "one_try": the search cut after its first try, answer forced."""
    if problem.family == "pairsum":
        first = search_tries(problem.numbers, problem.target, "en")[0]
        return {"direct": THINK_OPEN + SEARCH_PHRASES["en"]["quick"][0] + THINK_CLOSE + ANSWER_OPEN,
                "reason": THINK_OPEN + first.split("=")[0] + "=",
                "one_try": THINK_OPEN + first + THINK_CLOSE + ANSWER_OPEN}
    if problem.family == "code":
        return {"direct": THINK_OPEN + PHRASES["en"]["quick"][0] + THINK_CLOSE + ANSWER_OPEN,
                "reason": THINK_OPEN + "prints"}
    a, b = problem.operands
    return {
        "direct": THINK_OPEN + PHRASES["en"]["quick"][0] + THINK_CLOSE + ANSWER_OPEN,
        "reason": THINK_OPEN + f"{a}+{b}, {PHRASES['en']['carry']} 0:",
    }
