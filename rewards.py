"""Rule-based rewards for R1-Zero / R1 (DeepSeek-R1, arXiv v1: section 2.2.2 "Reward Modeling" for
accuracy and format, section 2.3.2 for the language-consistency reward). Pure functions
`str -> float`: exact, total (any string in, never an exception out) and fast. No neural reward
model: under RL a policy finds every hole in a reward, and a rule has fewer holes than a network.

    python rewards.py            # score a few example completions (a quick demo, no training)
    python bench_rewards.py      # completions/s and sandbox programs/s

A completion is the text the model wrote after the prompt, decoded. The prompt template ends with
`<|assistant|>`, so a well-formed completion is

    <think> reasoning </think> <answer> final answer </answer> <|endoftext|>

What is here:
  1. format_reward                       R1-Zero format reward (think, then answer)
  2. extract_answer                      the last <answer> block
  3. countdown_reward                    exact rational evaluation of an arithmetic expression: the
                                         judge of tasks.CountdownTask, an extension point kept for the
                                         later issue on real models (no command here trains on it)
  4. math_equal / math_reward            numeric answers (decimals, fractions, \\boxed, %, units): the
                                         judge of addition; the LaTeX, percent and unit forms and the
                                         "math" family (gold numbers of a dataset, no task here makes
                                         them) are an extension point for the later issue on real models
  5. code_reward / code_rewards          programs run against stdin/stdout tests in sandbox.py; as
                                         the paper's judge, code ACCURACY is 1 only when all tests
                                         pass; the fraction passed is the separate reward `tests`
  6. language_consistency_reward         R1 stage 2: fraction of CoT words in the target language,
     language_fraction                   0 with no chain of thought; the plain fraction, for metrics
  7. pairsum_reward                      the search world's judge: two numbers of the list, the target's sum
     accuracy_reward / accuracy_rewards  a problem family's judge (one completion / a batch, code in
     answer_key                          parallel), and the meaning of an answer
     majority_vote                       cons@k: the vote over answer_keys (110 = 110.0 = 0110)
  8. parse_reward_spec / RewardSpec      "accuracy + 0.1*format + 0.2*language" -> (total, components)

Deliberate deviations from the paper:
  1. Language is decided by word lists and a character class, not a language-identification model;
     the synthetic corpus reasons in two word-list "languages" (en, es) so mixing can be measured.
  2. No preference (neural) rewards: the R1 stage-4 reward model for non-reasoning data is out of scope.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable, Hashable, Iterable, Mapping

from tokenizer import (ANSWER_CLOSE, ANSWER_OPEN, ASSISTANT, EOT, PAD, SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN,
                       USER)

# ----------------------------------------------------------------------------- 1. format

# \s* <think> (.*) </think> \s* <answer> (.*) </answer> \s* [<|endoftext|> \s*]
_FORMAT_RE = re.compile(r"\s*{}(.*){}\s*{}(.*){}\s*(?:{}\s*)?".format(
    *map(re.escape, (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, EOT))), re.S)


def format_reward(completion: str, prefill: str = "") -> float:
    """1.0 iff the completion is exactly one non-empty `<think>` block, then one non-empty `<answer>`
    block, with only whitespace around them and at most one `<|endoftext|>` at the very end; else 0.0.

    Agreement with the prompt template: our template ends with `<|assistant|>`, so the model itself
    must write `<think>`. A template that pre-fills `<think>` (as some R1-Zero reproductions do) must
    pass it as `prefill="<think>"`: the text judged is `prefill + completion`, so the tag the template
    wrote counts once and a model that writes it again is rejected (two `<think>` tags).
    Any other special-token text (`<|user|>`, `<|pad|>`, a second tag, nesting) scores 0.
    Blocks are "non-empty" when they contain a non-whitespace character."""
    # >>> exercise: format_reward
    text = prefill + completion
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        if text.count(tag) != 1:
            return 0.0
    for tag in (PAD, USER, ASSISTANT):
        if tag in text:
            return 0.0
    m = _FORMAT_RE.fullmatch(text)
    if m is None or EOT in m.group(1) or EOT in m.group(2):
        return 0.0
    return 1.0 if m.group(1).strip() and m.group(2).strip() else 0.0
    # <<< exercise: format_reward


# ----------------------------------------------------------------------------- 2. answer extraction

def extract_answer(completion: str) -> str | None:
    """The text of the LAST complete `<answer>...</answer>` block, stripped: from the last `<answer>`
    that is followed by a `</answer>` up to the first such `</answer>`. Earlier blocks are drafts, an
    unclosed trailing `<answer>` (a cut-off completion) is ignored, and nesting yields the innermost
    text. None if there is no complete block."""
    # >>> exercise: extract_answer
    last_close = completion.rfind(ANSWER_CLOSE)
    start = completion.rfind(ANSWER_OPEN, 0, max(last_close, 0))
    if last_close < 0 or start < 0:
        return None
    end = completion.find(ANSWER_CLOSE, start)
    return completion[start + len(ANSWER_OPEN):end].strip()
    # <<< exercise: extract_answer


# ----------------------------------------------------------------------------- 3. countdown

_MAX_EXPR_CHARS = 1000  # longer answers score 0 without parsing
_MAX_DEPTH = 32         # parentheses nesting; keeps the recursive parser far from Python's stack limit
_MAX_DIGITS = 12        # longer literals are rejected (Countdown's numbers are small)


class _Reject(Exception):
    """Raised inside the countdown parser; always caught and turned into a 0.0 reward."""


def _tokenize_countdown(expr: str) -> list[str]:
    tokens, i = [], 0
    while i < len(expr):
        ch = expr[i]
        if ch == " ":
            i += 1
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        elif "0" <= ch <= "9":  # ASCII digits only: "٣".isdigit() is True, but it is not allowed here
            j = i
            while j < len(expr) and "0" <= expr[j] <= "9":
                j += 1
            tok = expr[i:j]
            if len(tok) > _MAX_DIGITS or (len(tok) > 1 and tok[0] == "0"):
                raise _Reject("literal too long or with a leading zero")
            tokens.append(tok)
            i = j
        else:
            raise _Reject(f"illegal character {ch!r}")  # letters, '.', '_', '=', tabs, unicode, ...
    return tokens


class _CountdownParser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ; factor := INT | '(' expr ')'.
    No unary minus, no '**' or '//' (two operators in a row fail to parse). Evaluates in Fractions."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.used = tokens, 0, []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _Reject("unexpected end")
        self.pos += 1
        return tok

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor(depth)
            if op == "/" and rhs == 0:
                raise _Reject("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self, depth: int) -> Fraction:
        tok = self.take()
        if tok == "(":
            if depth >= _MAX_DEPTH:
                raise _Reject("nesting too deep")
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise _Reject("missing ')'")
            return value
        if not tok.isdigit():
            raise _Reject(f"expected a number, got {tok!r}")
        self.used.append(int(tok))
        return Fraction(int(tok))


def _countdown_value(answer: str, numbers: Iterable[int]) -> Fraction | None:
    """The exact value of `answer` if it is a valid Countdown expression over `numbers`, else None.
    Valid: `+ - * /`, parentheses, ASCII integers and spaces, every number in `numbers` used exactly
    once (as a multiset), and, if there is a trailing `= n`, n equal to the value. Rejected: unary
    minus, `**`, `//`, decimals, names, leading zeros ("07"), unicode digits, division by zero,
    nesting deeper than 32, answers over 1000 chars. Rational arithmetic, so 7/2*2 is exactly 7."""
    if len(answer) > _MAX_EXPR_CHARS:
        return None
    expr, equals, rhs = answer.partition("=")
    try:
        parser = _CountdownParser(_tokenize_countdown(expr))
        value = parser.expr(0)
    except _Reject:
        return None
    if parser.pos != len(parser.tokens) or sorted(parser.used) != sorted(int(n) for n in numbers):
        return None
    if equals:
        rhs = rhs.strip()
        if not (rhs.isascii() and rhs.isdigit()) or len(rhs) > _MAX_DIGITS or int(rhs) != value:
            return None
    return value


def countdown_reward(completion: str, numbers: Iterable[int], target: int) -> float:
    """1.0 iff the answer block is a valid expression over `numbers` (_countdown_value) whose value is
    `target` EXACTLY (no float rounding can be exploited); else 0.0. A trailing `= target` is allowed.
    Only the answer block is judged; whether the completion is well formed is format_reward's job."""
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    return 1.0 if _countdown_value(answer, numbers) == Fraction(target) else 0.0


# ----------------------------------------------------------------------------- 4. numeric answers

_MAX_NUMBER_CHARS = 100     # digits in one number; longer ones are not parsed (int parsing is quadratic)
_MAX_MATH_CHARS = 10_000    # longer answers are not parsed at all

_LATEX_SUBS = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"(\1)/(\2)"),
    (re.compile(r"\\[dt]?frac\s*([0-9])\s*([0-9])"), r"\1/\2"),
    (re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\^\s*\{?\\circ\}?|°"), " "),
    (re.compile(r"\\[,;:! ]|\\left|\\right|\\%|%|\$|\\\(|\\\)|\\\[|\\\]"), " "),
    (re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))"), ""),       # thousands separators: 1,234,567
    (re.compile(r"\((\s*[-+]?[0-9.]+\s*)\)"), r"\1"),           # (3)/(4) -> 3/4
]
# A number: optional sign, ASCII digits with an optional decimal part, an optional "/ denominator",
# an optional glued unit of ASCII letters ("5kg"). Not glued to other word characters or digits
# (unicode-aware \w, \d), so "x5", "1e5", "0x1F", "3.5.2" and "٣2" contain no number. The atomic
# group (?>...) forbids backtracking into a number, which keeps the scan linear in the text length.
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?>([-+]?)([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:\s*/\s*([0-9]+(?:\.[0-9]+)?))?(?:[A-Za-z]+)?)(?!\w|\.\d)")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces matched; None if absent or unclosed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def _normalize_math(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\u2212", "-")  # unicode minus sign
    boxed = _last_boxed(text)
    if boxed is not None:
        text = boxed
    for pattern, repl in _LATEX_SUBS:
        text = pattern.sub(repl, text)
    return text.strip()


def parse_number(text: str) -> Fraction | None:
    """The single number in `text` as an exact Fraction, or None when there is none, more than one,
    a zero denominator, or more than 100 digits."""
    if len(text) > _MAX_MATH_CHARS:
        return None
    matches = _NUMBER_RE.findall(_normalize_math(text))
    if len(matches) != 1:
        return None
    sign, num, den = matches[0]
    if len(num) > _MAX_NUMBER_CHARS or len(den) > _MAX_NUMBER_CHARS:
        return None
    value = Fraction(num)
    if den:
        if Fraction(den) == 0:
            return None
        value /= Fraction(den)
    return -value if sign == "-" else value


def _math_value(text: str) -> Fraction | str:
    """What math_equal compares: the single number in `text` as an exact Fraction, else the
    normalised text with all whitespace removed (a str, never equal to a Fraction)."""
    number = parse_number(text)
    return number if number is not None else "".join(_normalize_math(text).split())


def math_equal(pred: str, gold: Any) -> bool:
    """True iff `pred` and `gold` hold the same number, compared EXACTLY as fractions.

    Handled: integers, signs (also U+2212 minus), thousands separators ("1,234,567"), decimals
    ("0.50" = "0.5" = "1/2"), fractions "a/b", "\\frac{a}{b}", "\\dfrac", "\\frac12", "\\boxed{...}"
    (the last one wins), "$...$", a percent sign (DROPPED: "50%" equals 50, not 0.5, because a problem
    asking for a percentage has the gold "50"), degrees, and words or units around ONE number
    ("The answer is 42 apples.", "5kg"). If either side is not a single number, the two are compared
    as strings after normalisation and whitespace removal (so "yes" = " yes ").

    Deliberately NOT handled (score False unless the strings match): any tolerance (0.333 != 1/3),
    several numbers (lists, "1 1/2", "5-3", "2 or 3"), expressions or symbols ("x+1", "\\sqrt{2}",
    "\\pi"), scientific notation ("1e5"), number words ("five"), non-ASCII digits ("٤٢"), space or
    European separators ("1 000", "0,5"), unit conversion (1 km vs 1000 m), more than 100 digits."""
    pred = pred if isinstance(pred, str) else str(pred)
    gold = gold if isinstance(gold, str) else str(gold)
    if len(pred) > _MAX_MATH_CHARS:  # too long to judge: equal to nothing
        return False
    try:
        p, g = _math_value(pred), _math_value(gold)
    except (ValueError, ZeroDivisionError, OverflowError):  # defensive: the regex makes these unreachable
        return False
    return p == g != ""  # an empty answer equals nothing


def math_reward(completion: str, gold: Any) -> float:
    """1.0 iff the answer block is math_equal to `gold`; 0.0 otherwise (also with no answer block)."""
    answer = extract_answer(completion)
    return 1.0 if answer is not None and math_equal(answer, gold) else 0.0


# ----------------------------------------------------------------------------- 5. code execution

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def extract_program(completion: str) -> str | None:
    """The program in the answer block: the last fenced block (```python ... ```, any or no language
    tag) if there is one, else the whole answer text. None when there is no answer or it is empty."""
    answer = extract_answer(completion)
    if answer is None:
        return None
    fences = _FENCE_RE.findall(answer)
    program = fences[-1][1] if fences else answer
    return program if program.strip() else None


def _rstrip_lines(text: str) -> str:
    """`text` without trailing whitespace: at the end of every line and at the end of the text."""
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def outputs_match(got: str, expected: str) -> bool:
    """Compare stdout with the expected output after stripping trailing whitespace: at the end of every
    line and at the end of the text (so "\\r\\n" = "\\n" and a missing final newline is fine).
    Leading whitespace and blank lines in the middle still count."""
    return _rstrip_lines(got) == _rstrip_lines(expected)


def code_rewards(completions: list[str], tests_list: list[list[Mapping[str, str]]], *, all_or_nothing: bool = False,
                 limits=None, max_workers: int | None = None, use_bwrap: bool | None = None) -> list[float]:
    """Batch version of code_reward: all programs run in parallel (sandbox.run_programs). As at a
    judge ("time limit exceeded on test 1"), a program's tests stop at the first one it fails in the
    sandbox: a timeout, output over the cap, a crash or a non-zero exit (sandbox.Limits.stop_after_failure).
    The tests after it are not run and count as failed, in the fraction too (a program that crashes
    on test 1 of 3 and would pass tests 2 and 3 scores 0, not 2/3), so a looping program costs one
    timeout, not one per test. A wrong output does not stop the run. Never raises, whatever the
    programs are: what a program does or leaves behind only fails its tests. use_bwrap: as in
    sandbox.run_program (None: bubblewrap when it works here)."""
    import sandbox  # lazy: importing rewards.py stays free of subprocess machinery

    limits = replace(limits or sandbox.Limits(), stop_after_failure=True)
    programs = [extract_program(c) for c in completions]
    todo = [i for i, p in enumerate(programs) if p is not None and tests_list[i]]
    results = sandbox.run_programs([programs[i] for i in todo],
                                   [[t["input"] for t in tests_list[i]] for i in todo],
                                   limits=limits, max_workers=max_workers, use_bwrap=use_bwrap)
    scores = [0.0] * len(completions)
    for i, runs in zip(todo, results):
        passed = [r.ok and outputs_match(r.stdout, t["output"]) for r, t in zip(runs, tests_list[i])]
        frac = sum(passed) / len(passed)
        scores[i] = float(frac == 1.0) if all_or_nothing else frac
    return scores


def code_reward(completion: str, tests: list[Mapping[str, str]], *, all_or_nothing: bool = False,
                limits=None, use_bwrap: bool | None = None) -> float:
    """Fraction of tests passed (all_or_nothing=True: 1.0 only if all pass) by the program in the
    answer block. `tests` = [{"input": stdin, "output": expected stdout}, ...]. A test passes iff the
    program exits with status 0, within its limits, and its stdout matches after stripping trailing
    whitespace (outputs_match). A non-zero exit FAILS even with the right output (a crash is not a
    solution); so do timeouts and output over the cap, and the tests after such a failure are not run
    and count as failed (code_rewards). No tests, no answer, or an empty program: 0.0. Never raises.
    The program runs in sandbox.py (bubblewrap when available; limits documented there).

    There is no assert-style test form, on purpose: an object whose __eq__ always returns True passes
    any `assert f(x) == y`, and `os._exit(0)` forges a clean exit. Comparing printed text is not
    foolable that way, and the expected output never enters the sandbox."""
    return code_rewards([completion], [tests], all_or_nothing=all_or_nothing, limits=limits, use_bwrap=use_bwrap)[0]


# ----------------------------------------------------------------------------- 6. language consistency

@dataclass(frozen=True)
class Language:
    name: str
    words: frozenset[str]                         # known words (casefolded, NFC)
    charclass: Callable[[str], bool] | None      # unknown words matching this belong to the language


LANGUAGES: dict[str, Language] = {}


def register_language(name: str, words: Iterable[str] = (), charclass: Callable[[str], bool] | None = None) -> Language:
    """Add a language, or extend one: words are added to its list, a given charclass replaces the old.
    A word belongs to language L if it is in L's list, or if it is in NO other language's list and
    L.charclass(word) holds. Words in several lists ("no") belong to each of them."""
    old = LANGUAGES.get(name)
    words = frozenset(unicodedata.normalize("NFC", w).casefold() for w in words)
    if old is not None:
        words, charclass = old.words | words, charclass or old.charclass
    LANGUAGES[name] = Language(name, words, charclass)
    return LANGUAGES[name]


register_language("en", charclass=str.isascii, words="""
    carry write so far the answer is wait let me check i know it think add digit ones tens yes no sum
    try then ok done and next a an of to in on at we you that this what need first now get got equals
    plus minus times result number numbers one two three four five six seven eight nine ten zero
    correct right wrong again also because but or not with which can hmm step use left""".split())
register_language("es", words="""
    llevo escribo hasta ahora la respuesta es espera déjame comprobar yo lo sé pienso sumo dígito
    unidades decenas sí no suma pruebo entonces vale listo y siguiente el los las de del que en un una
    uno dos tres cuatro cinco seis siete ocho nueve diez cero más menos por para pero porque resultado
    número números primero bien mal correcto igual veces otra vez hay tengo necesito paso a""".split())
# the search world's words (corpus.SEARCH_PHRASES): "7+1=8 vs 12, no. I give up." / "contra", "lo dejo"
register_language("en", words="vs give up easy".split())
register_language("es", words="contra dejo fácil".split())

_WORD_RE = re.compile(r"[^\W\d_]+")  # runs of unicode letters; digits, '_' and symbols are not words
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def chain_of_thought(text: str) -> str:
    """The think block's text if there is a `<think>` (up to `</think>`, `<answer>` or the end), else
    the whole text; special-token text removed either way."""
    start = text.find(THINK_OPEN)
    if start >= 0:
        text = text[start + len(THINK_OPEN):]
        ends = [i for i in (text.find(THINK_CLOSE), text.find(ANSWER_OPEN)) if i >= 0]
        text = text[:min(ends)] if ends else text
    return _SPECIAL_RE.sub(" ", text)


def _cot_words(text: str) -> list[str]:
    """The chain of thought's words: runs of unicode letters, NFC-normalised and casefolded."""
    return [w.casefold() for w in _WORD_RE.findall(unicodedata.normalize("NFC", chain_of_thought(text)))]


def _share_in(words: list[str], lang: Language) -> float:
    others = [L.words for L in LANGUAGES.values() if L.name != lang.name]
    hits = sum(1 for w in words if w in lang.words or (
        lang.charclass is not None and lang.charclass(w) and not any(w in o for o in others)))
    return hits / len(words)


def language_fraction(text: str, target_language: str) -> float:
    """The fraction of the chain-of-thought's words (chain_of_thought: the think block, or the whole
    text when there is none) that belong to `target_language` (a key of LANGUAGES; an unknown key is
    a config error and raises KeyError). Numbers and symbols are not words. Text with NO words
    scores 1.0: nothing in it is in another language. A measurement, for metrics (evaluate.py's
    language mixing and drift); the reward is language_consistency_reward."""
    lang, words = LANGUAGES[target_language], _cot_words(text)
    return _share_in(words, lang) if words else 1.0


def language_consistency_reward(text: str, target_language: str) -> float:
    """R1 stage 2 (section 2.3.2): the fraction of the chain-of-thought's words in `target_language`
    (language_fraction), earned only by a chain of thought: text with no `<think>` block, or whose
    think block holds no words (empty, digits and symbols only), scores 0.0. Were it 1.0, thinking
    nothing would be the cheapest way to full marks, a loophole RL takes (one English word in a
    Spanish search costs reward; no search at all would not). Not gated by the format reward: format
    has its own term and weight in the reward sum, and a gate would add this term's weight to that
    penalty; a think block cut off by the length cap still earns the share of its words."""
    # >>> exercise: language_reward
    lang, words = LANGUAGES[target_language], _cot_words(text)
    return _share_in(words, lang) if words and THINK_OPEN in text else 0.0
    # <<< exercise: language_reward


# ----------------------------------------------------------------------------- 7. judge and vote

# A problem is a plain mapping. Keys read here: "family" (always, for accuracy), then per family
# "numbers" + "target" (pairsum, countdown), "gold" (add, math), "tests" (code: [{"input", "output"}]),
# and the optional "language" (the language reward's target, default "en").
# A task family is judged here and nowhere else: a new family adds a branch to accuracy_reward
# (is it right?) and to answer_key (which answers mean the same?).

_PAIR_RE = re.compile(r"\s*(\d{1,3})\s*\+\s*(\d{1,3})\s*")


def _pair(answer: str) -> tuple[int, int] | None:
    """ "3+5" -> (3, 5); None if the answer is not two plain integers joined by '+'."""
    m = _PAIR_RE.fullmatch(answer)
    return (int(m.group(1)), int(m.group(2))) if m else None


def pairsum_reward(completion: str, numbers: Iterable[int], target: int) -> float:
    """1.0 iff the answer is `a+b` where a and b are two DIFFERENT positions of `numbers` (a number
    listed once cannot be used twice) and a + b == target; else 0.0."""
    # >>> exercise: pairsum_reward
    answer = extract_answer(completion)
    pair = _pair(answer) if answer is not None else None
    if pair is None:
        return 0.0
    a, b = pair
    counts = Counter(numbers)
    uses_two_positions = counts[a] >= 2 if a == b else counts[a] >= 1 and counts[b] >= 1
    return 1.0 if uses_two_positions and a + b == target else 0.0
    # <<< exercise: pairsum_reward


def accuracy_reward(completion: str, problem: Mapping[str, Any]) -> float:
    """Dispatch on problem["family"]: "countdown" -> countdown_reward(problem["numbers"],
    problem["target"]); "pairsum" -> pairsum_reward(problem["numbers"], problem["target"]);
    "add"/"math" -> math_reward(problem["gold"]); "code" -> code_reward(problem["tests"],
    all_or_nothing=True): the judge's pass/fail. An unknown family is a config error: ValueError."""
    family = problem["family"]
    if family == "countdown":
        return countdown_reward(completion, problem["numbers"], problem["target"])
    if family == "pairsum":
        return pairsum_reward(completion, problem["numbers"], problem["target"])
    if family in ("add", "math"):
        return math_reward(completion, problem["gold"])
    if family == "code":
        return code_reward(completion, problem["tests"], all_or_nothing=True)
    raise ValueError(f"accuracy reward: unknown problem family {family!r}")


def _code_scores(completions: list[str], problems: list[Mapping[str, Any]], all_or_nothing: bool,
                 limits=None) -> dict[int, float]:
    """{index: code_reward} for the code problems of a batch, all their programs in one parallel sandbox batch."""
    code = [i for i, p in enumerate(problems) if p.get("family") == "code"]
    if not code:
        return {}
    return dict(zip(code, code_rewards([completions[i] for i in code], [problems[i]["tests"] for i in code],
                                       all_or_nothing=all_or_nothing, limits=limits)))


def accuracy_rewards(completions: list[str], problems: list[Mapping[str, Any]], limits=None) -> list[float]:
    """accuracy_reward of each (completion, problem) pair, the code problems' programs all run in one
    parallel sandbox batch (code_rewards) instead of one after another: what evaluation calls (RL
    steps go through RewardSpec.score_batch, the same judge). limits: sandbox.Limits, default its own."""
    judged = _code_scores(completions, problems, all_or_nothing=True, limits=limits)
    return [judged[i] if i in judged else accuracy_reward(c, p) for i, (c, p) in enumerate(zip(completions, problems))]


def answer_key(completion: str, problem: Mapping[str, Any]) -> Hashable | None:
    """The meaning of the completion's final answer: what cons@k's majority vote counts, so that
    spellings of one answer pool their votes. None when there is no answer block (no vote).
      "add"/"math"        the number as an exact Fraction, so answers that math_equal calls equal
                          ("110", "110.0", "0110", "\\boxed{110}") share a key. An answer that is not
                          one number is keyed by its normalised text with all whitespace removed.
      "countdown"         the exact value of a valid expression over problem["numbers"] (see
                          _countdown_value), so "3*5+7" and "7+5*3" are one key, the key of every
                          correct answer is the target, and a key's answers are all right or all wrong.
                          An invalid expression is keyed by its text with all whitespace removed.
      "pairsum"           the unordered pair {a, b} ("3+5" and "5 + 3" are one key); else the text.
      "code"              the program (extract_program) with trailing whitespace stripped: votes on
                          program text, not on behaviour (grouping programs by behaviour would cost
                          sandbox runs on inputs of its own). An empty program is keyed "".
    An unknown family is a config error: ValueError, as in accuracy_reward."""
    family = problem["family"]
    if family not in ("countdown", "math", "add", "code", "pairsum"):
        raise ValueError(f"answer key: unknown problem family {family!r}")
    answer = extract_answer(completion)
    if answer is None:
        return None
    if family == "countdown":
        value = _countdown_value(answer, problem["numbers"])
        return value if value is not None else "".join(answer.split())
    if family == "code":
        return _rstrip_lines(extract_program(completion) or "")
    if family == "pairsum":
        pair = _pair(answer)
        return frozenset(pair) if pair is not None else "".join(answer.split())
    return _math_value(answer)


def majority_vote(keys: list[Hashable | None]) -> int | None:
    """cons@k's vote: the index of the winning answer among k samples' answer_keys. The winner is the
    key held by the most samples (None keys do not vote); a tie goes to the key whose first sample
    comes earliest. Returns that first sample's index (the class's representative), or None if every
    key is None. Example: keys [A, B, B, None, A] -> A and B tie at 2, A appears first -> 0."""
    # >>> exercise: majority_vote
    votes = Counter(key for key in keys if key is not None)  # keys in order of first appearance
    if not votes:
        return None
    winner = max(votes, key=votes.__getitem__)  # max keeps the first of equals: ties go to the earliest
    return keys.index(winner)
    # <<< exercise: majority_vote


# ----------------------------------------------------------------------------- 8. registry


RewardFn = Callable[[str, Mapping[str, Any]], float]  # (completion, problem) -> reward
# The rewards parse_reward_spec knows by name. A fork adds one with REWARDS["name"] = fn.
REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": lambda completion, problem: format_reward(completion),
    "language": lambda completion, problem: language_consistency_reward(completion, problem.get("language", "en")),
    # the fraction of a program's tests passed (a denser signal than accuracy's pass/fail); 0 off code
    "tests": lambda completion, problem: code_reward(completion, problem["tests"]) if problem.get("family") == "code"
    else 0.0,
}


@dataclass(frozen=True)
class RewardSpec:
    """A weighted sum of named rewards. Calling it returns (total, {name: unweighted value})."""
    terms: tuple[tuple[float, str], ...]  # (weight, reward name)

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        return self._combine(completion, problem, {})

    def _combine(self, completion, problem, precomputed: dict[str, float]) -> tuple[float, dict[str, float]]:
        components = {name: precomputed[name] if name in precomputed else float(REWARDS[name](completion, problem))
                      for _, name in self.terms}
        return sum(w * components[name] for w, name in self.terms), components

    def score_batch(self, completions: list[str], problems: list[Mapping[str, Any]], limits=None
                    ) -> list[tuple[float, dict[str, float]]]:
        """Like calling the spec on each pair, but the accuracy (and the tests fraction) of every
        code problem is computed in one parallel sandbox batch first, under `limits` (sandbox.Limits)."""
        names = {name for _, name in self.terms}
        pre: list[dict[str, float]] = [{} for _ in completions]
        if "tests" in names:  # the fraction of tests passed; accuracy is then whether it is 1 (one sandbox run)
            for i, fraction in _code_scores(completions, problems, all_or_nothing=False, limits=limits).items():
                pre[i]["tests"] = fraction
                pre[i]["accuracy"] = float(fraction == 1.0)
        elif "accuracy" in names:
            for i, passed in _code_scores(completions, problems, all_or_nothing=True, limits=limits).items():
                pre[i]["accuracy"] = passed
        return [self._combine(c, p, {k: v for k, v in pre[i].items() if k in names})
                for i, (c, p) in enumerate(zip(completions, problems))]


_TERM_RE = re.compile(r"\s*(?:([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*")


def parse_reward_spec(spec: str) -> RewardSpec:
    """"accuracy + 0.1*format + 0.2*language" -> RewardSpec. Terms are joined by '+', each an optional
    non-negative `weight*` then a registered reward name; a name may appear once. ValueError otherwise."""
    terms, seen = [], set()
    for part in spec.split("+"):
        m = _TERM_RE.fullmatch(part)
        if m is None:
            raise ValueError(f"bad reward term {part!r} in {spec!r} (expected e.g. '0.1*format')")
        weight, name = float(m.group(1)) if m.group(1) else 1.0, m.group(2)
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; known: {sorted(REWARDS)}")
        if name in seen:
            raise ValueError(f"reward {name!r} appears twice in {spec!r}")
        seen.add(name)
        terms.append((weight, name))
    return RewardSpec(tuple(terms))


def main() -> None:
    spec = parse_reward_spec("accuracy + 0.1*format + 0.2*language")
    problem = {"family": "countdown", "numbers": [3, 5, 7], "target": 22}
    for completion in ["<think>let me try 3*5 then add 7</think><answer>3*5+7</answer><|endoftext|>",
                       "<think>pruebo 3*5 y sumo 7</think><answer>(3+5)*7</answer>",
                       "3*5+7"]:
        total, parts = spec(completion, problem)
        print(f"{total:.3f} {parts} {completion!r}")


if __name__ == "__main__":
    main()
