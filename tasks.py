"""Verifiable task families: the rule-rewarded problems of R1-Zero (R1 paper v1, section 2.2.2: "accuracy
rewards" for math answers in a required format, and for code run against test cases), the prompt
template every stage uses, and the train/test split.

    python tasks.py        # prints a few problems of every family with their split

The families, each a small class with a `name`, `sample(rng) -> Problem` and a difficulty knob set
at construction:

  pairsum    PairSumTask(n_numbers=(4, 5), max_number=9, p_second_lang=0.5): the default, the search
             world. "Which two of 7 1 3 5 add up to 8?" (or in Spanish), gold "3+5"; any two numbers
             of the list with the right sum are right (rewards.pairsum_reward). Knobs: how many
             numbers, the share of questions in the second language.
  add        AdditionTask(min_digits=3, max_digits=5)
             "What is 4725 + 385?", gold "5110". Each operand independently gets a digit count drawn
             uniformly from [min_digits, max_digits] (0 counts as a 1-digit number), then a value
             uniformly among the numbers with that many digits. Knob: the digit range.
  code       CodeTask(kinds=CODE_KINDS)
             "Write a Python program that reads an integer n and prints 7*n + 3."
             Each problem carries 3-5 generated stdin/stdout test cases and a reference program as
             `gold`; rewards.accuracy_reward runs the program in the answer block against them and
             passes it only when every test passes (a judge). The inputs of "greater than k" sit at
             or next to k half the time and those of "divisible by k" are multiples of k half the
             time, so the near misses (>= for >, k off by one) fail. Knob: which kinds of program
             (every kind takes constants, e.g. "prints 7*n + 3"). The split holds out constants
             per kind: every kind has test problems, (kind, constants) never seen in training, and
             the transfer kind ("sum plus k", TRANSFER_KINDS) is held out whole.
  countdown  CountdownTask(n_numbers=(3, 4), max_number=25, target_range=(1, 100)): TinyZero's task
             for real base models (--init-from hf:DIR); the synthetic web (corpus.py) writes no
             countdown documents, so our models have no base for it. The question is TinyZero's:
             "Using the numbers [3, 7, 25, 5], create an equation that equals 84. You can use basic
             arithmetic operations (+, -, *, /) and each number can only be used once. Show your
             work in <think> </think> tags. And return the final answer in <answer> </answer>
             tags, for example <answer> (1 + 2) / 3 </answer>."
             The generator builds a random expression tree over the numbers and takes its value as
             the target, so every problem is solvable by construction, and keeps that expression as
             `gold` (one reference solution; any other expression that is right scores as well).
             Generator rule (Countdown's): every intermediate value is a positive integer, so a
             division is only used where it is exact. The reward (rewards.countdown_reward) judges
             the final value, which can only be more permissive. Knob: how many numbers, how large.

A family is only a generator. Whether a completion solves a problem is decided in one place,
rewards.accuracy_reward(completion, problem.as_dict()), which the RL reward and evaluation both call.
Adding a family therefore takes three pieces: a class here (the generator, registered in TASKS), a
branch in rewards.accuracy_reward (the judge) and one in rewards.answer_key (which answers mean the
same, for cons@k's vote).

Splits: a problem's identity is `Problem.key` (("add", 385, 4725); the operands of + are sorted, so
"a + b" and "b + a" are the same problem). `split_of` hashes repr(key) with SHA-256 (not Python's
salted hash()) to a number u in [0, 1) and puts the problem in "test" when u < test_fraction
(default 0.1). The split is thus a fixed partition of each family's problem space: it holds for every
seed, process and machine, and does not depend on how problems are sampled. Code splits within each
kind instead (held_out_constants: a share of every kind's constants, and all of a transfer kind's),
so no kind falls wholly in one split by chance. `sample_problems` rejection-samples a family's
generator for n distinct problems of one split; `test_set` is the fixed held-out evaluation set
(for code, round-robin over the kinds, so 100 questions hold 10 of each; report them per kind with
problem_kind). The corpus, SFT, distillation and RL only ever draw "train" problems.

Deliberate deviations from the paper:
1. The prompt is the short form `<|user|>question<|assistant|>`; the paper's instruction text is
   kept in R1_ZERO_SYSTEM, and only a real base model (--init-from hf:DIR) gets it: as plain text,
   with "<think>" pre-filled (format_prompt, prefill).
2. Synthetic families (a pair search, addition, tiny stdin/stdout programs) stand in for
   competition math and LeetCode-style code: a small model on a CPU can learn them, and their
   answers can be checked exactly.
"""
from __future__ import annotations

import functools
import hashlib
import math
import random
from dataclasses import dataclass, fields
from typing import ClassVar

from tokenizer import ANSWER_CLOSE, ANSWER_OPEN, ASSISTANT, THINK_CLOSE, THINK_OPEN, USER, get_tokenizer

# ----------------------------------------------------------------------------- prompt template

# R1 paper, Table 1: the template of DeepSeek-R1-Zero ("prompt" is replaced by the question), in two
# parts: who speaks and how the assistant works, then the tags. Our models are not given it by
# default (with byte-level tokens it cost ~350 tokens per sample, several times the question, and a
# model pretrained on our corpus already knows the short form); a real base model gets it, as text.
R1_ZERO_INTRO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer."
)
R1_ZERO_TAGS = (
    "The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>."
)
R1_ZERO_SYSTEM = R1_ZERO_INTRO + " " + R1_ZERO_TAGS

# A real base model's prompt (issue 25): R1-Zero's template as plain text, as TinyZero writes it
# for base models, which also pre-fills the start of the assistant's turn up to "<think>".
TEXT_TEMPLATE = "{system}\nUser: {question}\nAssistant: Let me solve this step by step.\n"
TEXT_PREFILL = THINK_OPEN


def uses_text_template() -> bool:
    """Whether prompts are R1-Zero's plain-text template (a real model's tokenizer is in use, which has
    no <|user|> / <|assistant|> tokens and was never taught them) rather than our short chat form."""
    return get_tokenizer().template == "text"


def format_prompt(question: str, system: bool = False) -> str:
    """The prompt of every stage: all the model is given before it writes its completion.

    Our models (the project's tokenizer): the short form `<|user|>question<|assistant|>`; the
    completion is expected to start with "<think>". system=True prepends R1's instruction
    (R1_ZERO_SYSTEM), an extension point passed by no command here.

    A real base model (a Hugging Face tokenizer in use, tokenizer.use_tokenizer): TEXT_TEMPLATE,
    ending with the pre-filled "<think>" (prefill()). Its system line is R1's instruction, or only
    its first part when the question says itself how to use the tags (TinyZero's countdown
    question), so the prompt states the format once: for countdown it is TinyZero's prompt exactly."""
    if uses_text_template():
        header = R1_ZERO_INTRO if ANSWER_OPEN in question else R1_ZERO_SYSTEM
        return TEXT_TEMPLATE.format(system=header, question=question) + TEXT_PREFILL
    return (R1_ZERO_SYSTEM if system else "") + USER + question + ASSISTANT


def prefill() -> str:
    """The start of the assistant's answer that format_prompt already wrote ("<think>" for a real
    model, "" for ours). Whatever judges or shows a completion reads prefill() + completion, so the
    tag the template wrote counts once (rewards.format_reward, and every metric)."""
    return TEXT_PREFILL if uses_text_template() else ""


def format_completion(think: str, answer: str) -> str:
    """A completion in exactly the shape rewards.format_reward accepts (reasoning, then answer)."""
    return THINK_OPEN + think + THINK_CLOSE + ANSWER_OPEN + answer + ANSWER_CLOSE


# ----------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    family: str                              # task name: "pairsum", "add", "code" or "countdown"
    question: str                            # the user's turn, goes inside format_prompt
    gold: str                                # reference answer: an integer, an expression or a program
    numbers: tuple[int, ...] | None = None   # pairsum, countdown: the list (countdown: each used exactly once)
    target: int | None = None                # pairsum, countdown: the value to make
    operands: tuple[int, ...] | None = None  # add: (a, b) in the order the question shows them
    op: str | None = None                    # add: "+"
    tests: tuple[dict, ...] | None = None    # code: ({"input": stdin, "output": expected stdout}, ...)
    spec: tuple | None = None                # code: (kind, *params), the program asked for
    language: str = "en"                     # the question's language (the language reward's target)

    @property
    def key(self) -> tuple:
        """Canonical identity of the problem, used for the split and for distinctness."""
        if self.numbers is not None:
            return (self.family, tuple(sorted(self.numbers)), self.target)
        if self.operands is not None:
            operands = sorted(self.operands) if self.op == "+" else self.operands  # a+b == b+a
            return (self.family, *operands)
        if self.spec is not None:
            return (self.family, *self.spec)
        return (self.family, self.question)

    def __hash__(self) -> int:  # `tests` holds dicts, so hash the identity instead of every field
        return hash(self.key)

    def as_dict(self) -> dict:
        """Plain dict for the rewards registry: family, question, gold and the family's fields."""
        d = {"family": self.family, "question": self.question, "gold": self.gold, "language": self.language}
        for name in ("numbers", "target", "operands", "op", "tests", "spec"):
            value = getattr(self, name)
            if value is not None:
                d[name] = [dict(t) for t in value] if name == "tests" else \
                    list(value) if isinstance(value, tuple) else value
        return d


# ----------------------------------------------------------------------------- countdown

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _random_expression(numbers: list[int], rng: random.Random) -> tuple[int, str, int]:
    """A random expression tree using each number once, in the given order: (value, text, precedence).
    Every intermediate value is a positive integer: "-" only when the result is > 0, "/" only exact."""
    if len(numbers) == 1:
        return numbers[0], str(numbers[0]), 3
    k = rng.randint(1, len(numbers) - 1)  # split the leaves: every tree shape can come out
    a, text_a, prec_a = _random_expression(numbers[:k], rng)
    b, text_b, prec_b = _random_expression(numbers[k:], rng)
    ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if a % b == 0 else [])
    op = rng.choice(ops)
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    prec = _PRECEDENCE[op]
    if prec_a < prec:                                          # (a + b) * c
        text_a = f"({text_a})"
    if prec_b < prec or (prec_b == prec and op in "-/"):       # a - (b + c), a / (b * c)
        text_b = f"({text_b})"
    return value, f"{text_a} {op} {text_b}", prec


# TinyZero's countdown question (its base-model prompt's user turn; format_prompt adds the rest)
COUNTDOWN_QUESTION = ("Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
                      "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
                      "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
                      "<answer> (1 + 2) / 3 </answer>.")


@dataclass
class CountdownTask:
    """Make a target from 3-4 numbers with + - * /, each number used exactly once (TinyZero's task,
    in its words: COUNTDOWN_QUESTION). For real base models (`grpo.py --init-from hf:DIR --task
    countdown`): the web writes no countdown documents, so pretrain.py makes no base for it.
    `python tasks.py` prints a few."""
    n_numbers: tuple[int, int] = (3, 4)        # fewest and most numbers given (inclusive)
    max_number: int = 25                       # numbers are drawn from 1..max_number (repeats allowed)
    target_range: tuple[int, int] = (1, 100)   # the target lies in this range (inclusive)
    name: ClassVar[str] = "countdown"

    def __post_init__(self):
        lo, hi = self.n_numbers
        if not 2 <= lo <= hi:
            raise ValueError(f"n_numbers must be (lo, hi) with 2 <= lo <= hi; got {self.n_numbers}")
        if self.max_number < 1 or self.target_range[0] > self.target_range[1]:
            raise ValueError(f"need max_number >= 1 and a non-empty target_range; got {self}")

    def sample(self, rng: random.Random) -> Problem:
        lo, hi = self.target_range
        for _ in range(10_000):  # draw numbers and a tree until the value is a target in range
            numbers = [rng.randint(1, self.max_number) for _ in range(rng.randint(*self.n_numbers))]
            target, solution, _ = _random_expression(numbers, rng)
            if lo <= target <= hi:
                break
        else:
            raise ValueError(f"{self}: no expression value fell in target_range in 10000 tries")
        rng.shuffle(numbers)  # the question must not show the solution's order
        question = COUNTDOWN_QUESTION.format(numbers=numbers, target=target)
        return Problem(self.name, question, solution, numbers=tuple(numbers), target=target)


# ----------------------------------------------------------------------------- addition


def _random_int_with_digits(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


@dataclass
class AdditionTask:
    """'What is a + b?' with each operand's digit count uniform in [min_digits, max_digits]."""
    min_digits: int = 3   # fewest digits of an operand (difficulty knob)
    max_digits: int = 5   # most digits of an operand (difficulty knob)
    name: ClassVar[str] = "add"

    def __post_init__(self):
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits; got {self.min_digits}, {self.max_digits}")

    def sample(self, rng: random.Random) -> Problem:
        a, b = (_random_int_with_digits(rng, rng.randint(self.min_digits, self.max_digits)) for _ in range(2))
        return Problem(self.name, f"What is {a} + {b}?", str(a + b), operands=(a, b), op="+")


# ----------------------------------------------------------------------------- pair-sum search

PAIRSUM_QUESTION = {"en": "Which two of {numbers} add up to {target}?",
                    "es": "¿Qué dos de {numbers} suman {target}?"}


@dataclass
class PairSumTask:
    """"Which two of 7 1 3 5 add up to 8?" A search task: checking one pair is a one-digit sum a
    tiny model gets right, finding the pair in one shot is a guess, so trying
    pairs one by one, and not giving up, pays. The answer is `a+b` with a and b two different
    numbers of the list (any such pair with the right sum is right). Numbers are distinct, from
    1..max_number; the target is the sum of a pair drawn uniformly. "One shot" is 1 in 6 to 1 in 10. Knobs: how many numbers (more
    numbers, more pairs to try), and the share of questions in the second language (es)."""
    n_numbers: tuple[int, int] = (4, 5)        # fewest and most numbers in the list (inclusive)
    max_number: int = 9                        # numbers are distinct, drawn from 1..max_number
    p_second_lang: float = 0.5                 # share of questions in the second language (es)
    name: ClassVar[str] = "pairsum"

    def __post_init__(self):
        lo, hi = self.n_numbers
        if not 2 <= lo <= hi <= self.max_number:
            raise ValueError(f"need 2 <= n_numbers[0] <= n_numbers[1] <= max_number; got {self}")
        if not 0.0 <= self.p_second_lang <= 1.0:
            raise ValueError(f"p_second_lang must lie in [0, 1]; got {self.p_second_lang}")

    def sample(self, rng: random.Random) -> Problem:
        numbers = rng.sample(range(1, self.max_number + 1), rng.randint(*self.n_numbers))
        i, j = sorted(rng.sample(range(len(numbers)), 2))
        target = numbers[i] + numbers[j]
        language = "es" if rng.random() < self.p_second_lang else "en"
        question = PAIRSUM_QUESTION[language].format(numbers=" ".join(map(str, numbers)), target=target)
        return Problem(self.name, question, f"{numbers[i]}+{numbers[j]}", numbers=tuple(numbers), target=target,
                       language=language)


# ----------------------------------------------------------------------------- code

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _ints(rng, *_):
    return " ".join(str(rng.randint(-50, 50)) for _ in range(rng.randint(1, 6)))


def _ints_about(rng, special):  # 2-6 integers, about half of them special(rng), the rest in -50..50
    return " ".join(str(special(rng) if rng.random() < 0.5 else rng.randint(-50, 50)) for _ in range(rng.randint(2, 6)))


def _ints_near(rng, k):  # about half the numbers at or next to k, so `>` and `>=` (or k off by one) differ
    return _ints_about(rng, lambda r: k + r.randint(-2, 2))


def _ints_multiples(rng, k):  # about half the numbers multiples of k, so the count is not always 0 or 1
    return _ints_about(rng, lambda r: k * r.randint(-6, 6))


def _int(rng, *_):
    return str(rng.randint(-100, 100))


def _word(rng, *_, alphabet=_LETTERS):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))


def _word_with(rng, letter):  # a word over three letters, one of them `letter`, so counts vary
    return _word(rng, alphabet=letter + "".join(rng.sample(_LETTERS, 2)))


def _nums(s):
    return [int(x) for x in s.split()]


# kind: (parameter tuples, what the program does, reference program, input maker, expected output).
# The expected output is computed by the lambda, independently of the reference program.
# Every kind takes constants, so every kind can be tested on constants it never saw in training (the
# split below): sum, max, min and square add a constant k to their result, and reverse repeats its
# result k times. Each is a one-line program plus one number copied from the question, the skill
# affine's b already asks for, so a tiny model that learns programs from the web learns them alike.
CODE_SPECS = {
    "sum": ([(k,) for k in range(1, 61)], "reads integers from one line of input and prints their sum plus {0}",
            "print(sum(map(int, input().split())) + {0})", _ints, lambda s, k: sum(_nums(s)) + k),
    "max": ([(k,) for k in range(1, 61)], "reads integers from one line of input and prints the largest plus {0}",
            "print(max(map(int, input().split())) + {0})", _ints, lambda s, k: max(_nums(s)) + k),
    "min": ([(k,) for k in range(1, 61)], "reads integers from one line of input and prints the smallest plus {0}",
            "print(min(map(int, input().split())) + {0})", _ints, lambda s, k: min(_nums(s)) + k),
    "reverse": ([(k,) for k in range(2, 41)], "reads a word and prints it reversed {0} times with no spaces",
                "print(input()[::-1] * {0})", _word, lambda s, k: s[::-1] * k),
    "square": ([(k,) for k in range(1, 61)], "reads an integer n and prints n*n + {0}",
               "n = int(input())\nprint(n * n + {0})", _int, lambda s, k: int(s) ** 2 + k),
    "affine": ([(a, b) for a in range(2, 21) for b in range(1, 61)],
               "reads an integer n and prints {0}*n + {1}",
               "n = int(input())\nprint({0} * n + {1})", _int, lambda s, a, b: a * int(s) + b),
    "count": ([(c,) for c in _LETTERS], "reads a word and prints how many times the letter {0} appears in it",
              "print(input().count('{0}'))", _word_with, lambda s, c: s.count(c)),
    "greater": ([(k,) for k in range(-20, 41)],
                "reads integers from one line of input and prints how many of them are greater than {0}",
                "print(sum(x > {0} for x in map(int, input().split())))", _ints_near,
                lambda s, k: sum(x > k for x in _nums(s))),
    "divisible": ([(k,) for k in range(2, 41)],
                  "reads integers from one line of input and prints how many of them are divisible by {0}",
                  "print(sum(x % {0} == 0 for x in map(int, input().split())))", _ints_multiples,
                  lambda s, k: sum(x % k == 0 for x in _nums(s))),
    "repeat": ([(k,) for k in range(2, 41)], "reads a word and prints it {0} times with no spaces",
               "print(input() * {0})", _word, lambda s, k: s * k),
}
CODE_KINDS = tuple(CODE_SPECS)

# Transfer: a kind held out ENTIRELY (every constant in the test split, never on the web, not even as a
# near miss), reported apart from the kinds trained on, as a test of composing a program never seen.
# "sum plus k" is chosen because the web shows all its pieces, in other programs: the template
# `print(max(map(int, input().split())) + k)` of max and min, and `sum(` in greater and divisible;
# and its question names the function ("their sum"). A kind whose pieces the web never shows (min,
# were `min` written nowhere) could only score 0, and would measure nothing.
TRANSFER_KINDS = ("sum",)
CODE_MIN_HELD_OUT = 10  # every trained kind holds out at least this many constants (10 per kind in 100 questions)


def problem_kind(problem) -> str:
    """What a problem is reported under: the kind of program for code ("affine"), else the family
    ("add"). A Problem or its as_dict()."""
    spec = problem.get("spec") if isinstance(problem, dict) else problem.spec
    family = problem["family"] if isinstance(problem, dict) else problem.family
    return spec[0] if spec else family


@dataclass
class CodeTask:
    """Write a stdin/stdout Python program; judged by running it on generated test cases."""
    kinds: tuple[str, ...] = CODE_KINDS   # which programs may be asked for (difficulty knob)
    n_tests: tuple[int, int] = (3, 5)     # fewest and most test cases per problem (inclusive)
    name: ClassVar[str] = "code"

    def __post_init__(self):
        unknown = [k for k in self.kinds if k not in CODE_SPECS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown or no code kinds {unknown}; valid kinds: {', '.join(CODE_KINDS)}")

    def sample(self, rng: random.Random) -> Problem:
        kind = rng.choice(self.kinds)
        return self.problem(kind, rng.choice(CODE_SPECS[kind][0]), rng)

    def problem(self, kind: str, params: tuple, rng: random.Random) -> Problem:
        """The problem (kind, *params), with its test cases drawn from rng."""
        _, text, program, make_input, expected = CODE_SPECS[kind]
        tests, seen = [], set()
        n = rng.randint(*self.n_tests)
        for _ in range(20 * n):  # distinct inputs where the input space allows
            stdin = make_input(rng, *params)
            if stdin not in seen:
                seen.add(stdin)
                tests.append({"input": stdin + "\n", "output": str(expected(stdin, *params))})
            if len(tests) == n:
                break
        question = f"Write a Python program that {text.format(*params)}."
        return Problem(self.name, question, program.format(*params), tests=tuple(tests), spec=(kind, *params))


# ----------------------------------------------------------------------------- registry and splits

TASKS = {"countdown": CountdownTask, "add": AdditionTask, "code": CodeTask, "pairsum": PairSumTask}
TEST_FRACTION = 0.1  # share of each family's problem space held out for evaluation


def get_task(name: str, **kwargs):
    """A task family by name, its difficulty knobs as keyword arguments."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}")
    return TASKS[name](**kwargs)


_KNOBS = ("min_digits", "max_digits")  # the difficulty knobs a stage's config may carry


def task_from_config(cfg):
    """The task a stage's config names: `cfg.task` plus the difficulty knobs it carries
    (min_digits, max_digits for addition). `cfg` is a config dataclass or a dict (a
    checkpoint's saved config), so evaluation can rebuild the exact task a model was trained on."""
    values = cfg if isinstance(cfg, dict) else vars(cfg)
    name = values.get("task", "add")
    family = TASKS.get(name)
    has = {f.name for f in fields(family)} if family is not None else set()
    if not isinstance(cfg, dict):  # a command line: a knob the task does not have must not be silently ignored
        ignored = [k for k in _KNOBS if k in values and k not in has and values[k] != getattr(type(cfg), k, values[k])]
        if ignored and family is not None:
            flags = " and ".join("--" + k.replace("_", "-") for k in ignored)
            raise ValueError(f"{flags}: --task {name} has no such knob (only add has operand digits)")
    return get_task(name, **{k: values[k] for k in _KNOBS if k in has and k in values})


def _hash_unit(key) -> float:
    """repr(key) hashed with SHA-256 to a number uniform in [0, 1): the same in every process."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


@functools.lru_cache(maxsize=None)
def held_out_constants(kind: str, test_fraction: float = TEST_FRACTION) -> frozenset:
    """The constants of a code kind that are in the test split: all of a transfer kind's; of any
    other kind, the max(ceil(test_fraction * N), CODE_MIN_HELD_OUT) of its N constants whose key
    ("code", kind, *params) hashes lowest. Per kind, so every kind has test problems: one threshold over
    all code keys would leave a kind of 19 constants one held-out constant, or none."""
    params = CODE_SPECS[kind][0]
    if kind in TRANSFER_KINDS:
        return frozenset(params)
    n_test = max(math.ceil(test_fraction * len(params)), CODE_MIN_HELD_OUT)
    return frozenset(sorted(params, key=lambda p: _hash_unit(("code", kind, *p)))[:n_test])


def split_of(problem, test_fraction: float = TEST_FRACTION) -> str:
    """"train" or "test", a pure function of the problem's key (a Problem or the key itself). Code keys
    follow held_out_constants (a key outside its kind's constants is no problem, held out by none);
    every other key is "test" when it hashes below test_fraction."""
    key = problem.key if isinstance(problem, Problem) else problem
    if key[0] == "code" and len(key) > 1 and key[1] in CODE_SPECS:
        return "test" if tuple(key[2:]) in held_out_constants(key[1], test_fraction) else "train"
    return "test" if _hash_unit(key) < test_fraction else "train"


def sample_problems(task, n: int, split: str, seed: int = 0, test_fraction: float = TEST_FRACTION) -> list[Problem]:
    """n problems with distinct keys, all of `split`, deterministic per seed (rejection sampling).
    Raises ValueError when the generator keeps producing nothing new: the split is too small for n."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    rng = random.Random(seed)
    p_split = test_fraction if split == "test" else 1.0 - test_fraction
    max_misses = max(2000, int(50 / p_split))  # a run this long has chance ~e^-50 in a large space
    problems, seen, misses = [], set(), 0
    while len(problems) < n:
        problem = task.sample(rng)
        if problem.key in seen or split_of(problem, test_fraction) != split:
            misses += 1
            if misses > max_misses:
                raise ValueError(f"{task} supplied only {len(problems)} distinct {split!r} problems, "
                                 f"{n} asked: the problem space is too small (nothing new in "
                                 f"{max_misses} draws); widen the difficulty knob or ask for fewer")
            continue
        seen.add(problem.key)
        problems.append(problem)
        misses = 0
    return problems


def longest_prompt(task, tok, n: int = 300, seed: int = 0) -> int:
    """The longest prompt of `task` in tokens over n draws of its generator (both splits): what the
    model's context must hold besides the completion. Draws, not distinct problems, so a small
    problem space works too."""
    rng = random.Random(seed)
    return max(len(tok.encode(format_prompt(task.sample(rng).question), allow_special=True)) for _ in range(n))


def test_set(task, n: int = 200, seed: int = 0) -> list[Problem]:
    """The fixed held-out evaluation set: n distinct test-split problems (same n and seed, same set;
    a smaller n gives a prefix of a larger one). Code is stratified (code_test_set)."""
    if task.name == "code":
        return code_test_set(task, n, seed)
    return sample_problems(task, n, "test", seed=seed)


def code_test_set(task, n: int, seed: int = 0) -> list[Problem]:
    """The code test set, round-robin over task.kinds: one problem of every kind in turn, each on
    held-out constants drawn in a seeded order, so the first CODE_MIN_HELD_OUT * len(kinds) questions
    hold every kind equally; a kind whose held-out constants run out leaves the rotation."""
    rng = random.Random(seed)
    queues = []
    for kind in dict.fromkeys(task.kinds):  # each kind once, in order
        constants = sorted(held_out_constants(kind))  # sorted: a frozenset's order is not fixed
        rng.shuffle(constants)
        queues.append((kind, constants))
    total = sum(len(c) for _, c in queues)
    if n > total:
        raise ValueError(f"{task} has only {total} held-out problems, {n} asked: the problem space is too small")
    problems = []
    while len(problems) < n:
        for kind, constants in queues:
            if constants and len(problems) < n:
                problems.append(task.problem(kind, constants.pop(), rng))
    return problems


test_set.__test__ = False  # not a pytest test, despite the name


def main():
    rng = random.Random(0)
    for name in TASKS:
        task = get_task(name)
        for _ in range(2):
            p = task.sample(rng)
            print(f"[{name} {split_of(p)}] {p.question}\n    gold: {p.gold!r}")


if __name__ == "__main__":
    main()
