"""tasks.py: generators deterministic per seed, gold answers verified (by rewards.py and independently),
countdown solvable, difficulty knobs respected, train/test splits disjoint and stable, prompt template."""
import ast
import contextlib
import io
import os
import random
import sys
from collections import Counter
from fractions import Fraction

import pytest

import tasks
from tasks import (CODE_KINDS, CODE_SPECS, TASKS, AdditionTask, CodeTask, CountdownTask, Problem, format_completion,
                   format_prompt, get_task, sample_problems, split_of)
from rewards import accuracy_reward  # the one judge of every family
from tokenizer import EOT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_sandbox = pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "sandbox.py")),
                                   reason="sandbox.py (code_reward's runner) not written yet")


def problems_of(name, n=20, seed=0, **knobs):
    return sample_problems(get_task(name, **knobs), n, "train", seed=seed)


# ----------------------------------------------------------------------------- determinism, problems


@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_deterministic_per_seed(name):
    task = get_task(name)
    assert [task.sample(random.Random(7)) for _ in range(3)] == [task.sample(random.Random(7)) for _ in range(3)]
    assert problems_of(name, seed=3) == problems_of(name, seed=3)
    assert problems_of(name, seed=3) != problems_of(name, seed=4)
    assert tasks.test_set(task, 5, seed=1) == tasks.test_set(task, 5, seed=1)


@pytest.mark.parametrize("name", list(TASKS))
def test_problem_is_hashable_and_as_dict_has_the_registry_fields(name):
    p = problems_of(name, n=1)[0]
    assert p.family == name == get_task(name).name
    assert hash(p) == hash(p.key) and len({p, p}) == 1
    d = p.as_dict()
    assert {"family", "question", "gold"} <= set(d) and d["family"] == name and d["gold"] == p.gold
    extra = {"countdown": {"numbers", "target"}, "add": {"operands", "op"}, "code": {"tests", "spec"},
             "pairsum": {"numbers", "target"}}[name]
    assert set(d) == {"family", "question", "gold", "language"} | extra
    if name == "code":
        assert all(set(t) == {"input", "output"} for t in d["tests"]) and 3 <= len(d["tests"]) <= 5


# ----------------------------------------------------------------------------- gold answers


def wrong_answer(p: Problem) -> str:
    """An answer of the right kind that is wrong: gold+1, a different expression, a wrong program."""
    if p.family == "add":
        return str(int(p.gold) + 1)
    if p.family == "countdown":
        for op in ("+", "*", "-"):
            expr = f" {op} ".join(map(str, p.numbers))
            if eval(expr) != p.target:
                return expr
        raise AssertionError(f"no wrong expression for {p}")
    return "print('wrong')"


@pytest.mark.parametrize("name", ["countdown", "add"])
def test_gold_scores_one_and_a_wrong_answer_zero(name):

    for p in problems_of(name, n=25):
        problem = p.as_dict()
        assert accuracy_reward(format_completion("...", p.gold), problem) == 1.0, p
        assert accuracy_reward(format_completion("...", wrong_answer(p)), problem) == 0.0, p
        if name == "countdown":  # right value, but a number that was not given
            assert accuracy_reward(format_completion("...", f"({p.gold}) + 0"), problem) == 0.0


@needs_sandbox
def test_code_gold_passes_its_tests_under_code_reward():

    task = CodeTask()
    problems = [task.sample(random.Random(i)) for i in range(6)]
    for p in problems:
        assert accuracy_reward(format_completion("...", p.gold), p.as_dict()) == 1.0, p
        assert accuracy_reward(format_completion("...", wrong_answer(p)), p.as_dict()) == 0.0, p
    # a program for another problem fails (at least one test of) this one
    max_problem = problems_of("code", kinds=("max",), n=1)[0]
    min_program = CODE_SPECS["min"][2].format(*max_problem.spec[1:])
    assert accuracy_reward(format_completion("...", min_program), max_problem.as_dict()) < 1


def run_in_process(program: str, stdin: str) -> str:
    old = sys.stdin
    sys.stdin, out = io.StringIO(stdin), io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(program, {})
    finally:
        sys.stdin = old
    return out.getvalue()


@pytest.mark.parametrize("kind", CODE_KINDS)
def test_code_reference_programs_match_the_independent_expected_outputs(kind):
    """Every parameter of every kind: the gold program, run, prints each test's expected output (which
    tasks.py computes with a separate lambda, not by running the program)."""
    params, *_ = CODE_SPECS[kind]
    task = CodeTask(kinds=(kind,))
    seen = set()
    for i in range(3 * len(params)):
        p = task.sample(random.Random(i))
        seen.add(p.spec)
        for t in p.tests:
            assert run_in_process(p.gold, t["input"]).rstrip("\n") == t["output"], (p.spec, t)
    assert len(seen) > len(params) // 2


def test_format_completion_and_prompt_match_format_reward():
    from rewards import extract_answer, format_reward

    completion = format_completion("4725+385, carry 0: 5+5+0=10", "5110")
    assert format_reward(completion) == 1.0 and format_reward(completion + EOT) == 1.0
    assert extract_answer(completion) == "5110"


def test_prompt_template():
    assert format_prompt("What is 1 + 2?") == "<|user|>What is 1 + 2?<|assistant|>"
    with_system = format_prompt("What is 1 + 2?", system=True)
    assert with_system.startswith(tasks.R1_ZERO_SYSTEM) and with_system.endswith(format_prompt("What is 1 + 2?"))
    assert "<think> reasoning process here </think>" in tasks.R1_ZERO_SYSTEM
    assert format_completion("t", "a") == "<think>t</think><answer>a</answer>"


# ----------------------------------------------------------------------------- countdown solvability


def eval_countdown(expr: str) -> tuple[Fraction, list[int]]:
    """Exact value and the integer literals of an expression over + - * / and parentheses."""
    ops = {ast.Add: Fraction.__add__, ast.Sub: Fraction.__sub__, ast.Mult: Fraction.__mul__,
           ast.Div: Fraction.__truediv__}
    used = []

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant) and type(node.value) is int, ast.dump(node)
        used.append(node.value)
        return Fraction(node.value)

    return walk(ast.parse(expr, mode="eval").body), used


def solvable(values: list[Fraction], target: int) -> bool:
    """Brute force: combine any two of the remaining values with + - * / until one is left."""
    if len(values) == 1:
        return values[0] == target
    for i in range(len(values)):
        for j in range(len(values)):
            if i == j:
                continue
            a, b, rest = values[i], values[j], [v for k, v in enumerate(values) if k not in (i, j)]
            results = [a + b, a - b, a * b] + ([a / b] if b != 0 else [])
            if any(solvable(rest + [r], target) for r in results):
                return True
    return False


def test_countdown_reference_solution_uses_the_numbers_and_makes_the_target():
    task = CountdownTask(n_numbers=(3, 4), max_number=25, target_range=(1, 100))
    problems = problems_of("countdown", n=60, seed=5)
    for p in problems:
        value, used = eval_countdown(p.gold)
        assert value == p.target and sorted(used) == sorted(p.numbers), p
        assert 3 <= len(p.numbers) <= 4 and all(1 <= x <= task.max_number for x in p.numbers)
        assert 1 <= p.target <= 100
        assert p.question == (f"Using the numbers {list(p.numbers)}, create an equation that equals {p.target}. "
                              "You can use basic arithmetic operations (+, -, *, /) and each number can only be "
                              "used once. Show your work in <think> </think> tags. And return the final answer in "
                              "<answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.")  # TinyZero's
    for p in problems[:4]:
        assert solvable([Fraction(x) for x in p.numbers], p.target)
    assert {len(p.numbers) for p in problems} == {3, 4}


def test_countdown_knobs():
    task = CountdownTask(n_numbers=(4, 4), max_number=9, target_range=(50, 60))
    for p in sample_problems(task, 30, "train", seed=0):
        assert len(p.numbers) == 4 and max(p.numbers) <= 9 and 50 <= p.target <= 60
        assert eval_countdown(p.gold)[0] == p.target
    with pytest.raises(ValueError):
        CountdownTask(target_range=(10_000, 20_000), max_number=2).sample(random.Random(0))


# ----------------------------------------------------------------------------- difficulty knobs


def test_addition_digit_counts_in_range():
    task = AdditionTask(min_digits=2, max_digits=4)
    problems = sample_problems(task, 400, "train", seed=0)
    digits = [len(str(x)) for p in problems for x in p.operands]
    assert min(digits) == 2 and max(digits) == 4 and set(digits) == {2, 3, 4}
    for p in problems:
        a, b = p.operands
        assert p.question == f"What is {a} + {b}?"
        assert int(p.gold) == a + b
    with pytest.raises(ValueError):
        AdditionTask(min_digits=3, max_digits=2)


def test_code_kinds_knob():
    assert {p.spec[0] for p in problems_of("code", n=30, kinds=("max", "affine"))} == {"max", "affine"}
    with pytest.raises(ValueError, match="valid kinds"):
        CodeTask(kinds=("sort",))


def test_unknown_task_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="countdown, add, code, pairsum"):
        get_task("gsm8k")


def test_task_from_config_takes_the_family_and_its_knobs_from_a_config_or_a_checkpoint_dict():
    from dataclasses import dataclass

    @dataclass
    class StageConfig:
        task: str = "add"
        min_digits: int = 2
        max_digits: int = 4
        lr: float = 1e-3

    assert tasks.task_from_config(StageConfig()) == AdditionTask(2, 4)
    assert tasks.task_from_config({"task": "add", "min_digits": 1, "max_digits": 1, "steps": 3}) == AdditionTask(1, 1)
    assert tasks.task_from_config({"task": "countdown", "min_digits": 3}) == CountdownTask()  # no digit knobs
    with pytest.raises(ValueError, match="valid names"):
        tasks.task_from_config({"task": "gsm8k"})


# ----------------------------------------------------------------------------- splits


def test_split_is_a_fixed_function_of_the_key():
    """Hard-coded: the same in every process (hashlib, not the salted hash()) and on every machine."""
    expected = {("add", 385, 4725): "train", ("add", 108, 1001): "test", ("add", 109, 1000): "test",
                ("countdown", (3, 7, 25, 50), 84): "train", ("code", "count", "c"): "test",
                ("code", "count", "b"): "train", ("code", "affine", 7, 3): "train", ("code", "sum", 7): "test"}
    for key, split in expected.items():
        assert split_of(key) == split, key
    p = Problem("add", "What is 1001 + 108?", "1109", operands=(1001, 108), op="+")
    q = Problem("add", "What is 108 + 1001?", "1109", operands=(108, 1001), op="+")
    assert p.key == q.key == ("add", 108, 1001) and split_of(p) == split_of(q) == "test"  # a+b is b+a


def test_test_fraction_is_about_ten_percent():
    keys = [("add", a, b) for a in range(100) for b in range(a, 200)]
    share = sum(split_of(k) == "test" for k in keys) / len(keys)
    assert 0.09 < share < 0.11
    # a smaller test fraction holds out a subset of a larger one
    assert all(split_of(k, 0.2) == "test" for k in keys if split_of(k, 0.05) == "test")


@pytest.mark.parametrize("name,knobs,n_train", [("add", {"min_digits": 1, "max_digits": 2}, 1000),
                                                ("countdown", {"n_numbers": (3, 3), "max_number": 6}, 400),
                                                ("code", {}, 200)])
def test_train_and_test_are_disjoint_for_any_seeds(name, knobs, n_train):
    """Small problem spaces, so that the two samples would collide if the split leaked."""
    task = get_task(name, **knobs)
    train = sample_problems(task, n_train, "train", seed=11)
    test = tasks.test_set(task, 20, seed=12)
    assert all(split_of(p) == "train" for p in train) and all(split_of(p) == "test" for p in test)
    assert len({p.key for p in train}) == len(train) and len({p.key for p in test}) == len(test)
    assert not {p.key for p in train} & {p.key for p in test}


def test_add_and_pairsum_splits_are_pinned():
    """Digests of (key, question, gold) of test_set(task, 100) and 200 train problems: the add and
    pairsum worlds' splits are fixed (the code split is per kind: held_out_constants)."""
    import hashlib

    def digest(task):
        problems = tasks.test_set(task, 100) + sample_problems(task, 200, "train", seed=1)
        return hashlib.sha256(repr([(p.key, p.question, p.gold) for p in problems]).encode()).hexdigest()[:16]

    assert digest(AdditionTask()) == "6d4209e7c9b977b4"
    assert digest(tasks.PairSumTask()) == "6e6873048c900ecf"


def test_held_out_constants_per_kind_against_a_slow_reference():
    """Every trained kind holds out max(ceil(10% of its constants), CODE_MIN_HELD_OUT), those whose key
    hashes lowest, and keeps the rest (most) for training; a transfer kind holds out everything."""
    import hashlib
    import math

    def u(key):
        return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big") / 2 ** 64

    for kind, (params, *_) in CODE_SPECS.items():
        test = {p for p in params if split_of(("code", kind, *p)) == "test"}
        if kind in tasks.TRANSFER_KINDS:
            assert test == set(params)
            continue
        n_test = max(math.ceil(0.1 * len(params)), tasks.CODE_MIN_HELD_OUT)
        assert test == set(sorted(params, key=lambda p: u(("code", kind, *p)))[:n_test]), kind
        assert len(test) >= tasks.CODE_MIN_HELD_OUT and len(params) - len(test) > len(params) / 2, kind
    assert tasks.TRANSFER_KINDS and set(tasks.TRANSFER_KINDS) < set(CODE_KINDS)
    # a smaller test fraction holds out a subset of a larger one, as for the other families
    assert tasks.held_out_constants("affine", 0.05) < tasks.held_out_constants("affine", 0.2)


def test_code_test_set_has_every_kind_in_turn_on_constants_never_trained_on():
    task = CodeTask()
    test = tasks.test_set(task, 100)
    assert Counter(tasks.problem_kind(p) for p in test) == {kind: 10 for kind in CODE_KINDS}
    assert [p.spec[0] for p in test[:len(CODE_KINDS)]] == list(CODE_KINDS)      # round-robin
    assert tasks.test_set(task, 50) == test[:50] and tasks.test_set(task, 100, seed=1) != test
    assert len({p.key for p in test}) == 100 and all(split_of(p) == "test" for p in test)
    train = {p.key for seed in range(2) for p in sample_problems(task, 1000, "train", seed=seed)}
    assert len(train) > 1000 and not train & {p.key for p in test}
    assert not train & {p.key for p in sample_problems(task, 200, "test", seed=5)}
    assert {key[1] for key in train} == set(CODE_KINDS) - set(tasks.TRANSFER_KINDS)  # the transfer kind: never
    total = sum(len(tasks.held_out_constants(kind)) for kind in CODE_KINDS)
    with pytest.raises(ValueError, match="too small"):
        tasks.test_set(task, total + 1)
    with pytest.raises(ValueError, match="too small"):
        sample_problems(CodeTask(kinds=tasks.TRANSFER_KINDS), 1, "train")


def test_problem_kind_is_the_program_kind_for_code_and_the_family_otherwise():
    p = CodeTask(kinds=("affine",)).sample(random.Random(0))
    assert tasks.problem_kind(p) == tasks.problem_kind(p.as_dict()) == "affine"
    q = AdditionTask().sample(random.Random(0))
    assert tasks.problem_kind(q) == tasks.problem_kind(q.as_dict()) == "add"


def test_too_few_distinct_problems_raises():
    task = AdditionTask(min_digits=1, max_digits=1)  # 55 unordered pairs in all
    with pytest.raises(ValueError, match="too small"):
        sample_problems(task, 56, "train", seed=0)
    with pytest.raises(ValueError, match="too small"):
        tasks.test_set(task, 50)
    with pytest.raises(ValueError, match="split"):
        sample_problems(task, 1, "valid", seed=0)


# ----------------------------------------------------------------------------- pair-sum search

def test_pairsum_generator_split_and_languages():
    import random as _random
    from tasks import PairSumTask, split_of
    task = PairSumTask()
    rng = _random.Random(0)
    problems = [task.sample(rng) for _ in range(400)]
    for p in problems:
        assert 4 <= len(p.numbers) <= 5 and len(set(p.numbers)) == len(p.numbers) and max(p.numbers) <= 9
        a, b = map(int, p.gold.split("+"))
        assert a + b == p.target and a in p.numbers and b in p.numbers and a != b
        assert accuracy_reward(format_completion("x", p.gold), p.as_dict()) == 1.0
        expected = ("¿Qué dos de" if p.language == "es" else "Which two of") + " " + " ".join(map(str, p.numbers))
        assert p.question.startswith(expected) and str(p.target) in p.question
        assert split_of(p) == split_of(p.key)
    share_es = sum(p.language == "es" for p in problems) / len(problems)
    assert 0.4 < share_es < 0.6
    # the key ignores the list's order and the language: one problem, one split
    assert PairSumTask(p_second_lang=1.0).sample(_random.Random(3)).key == PairSumTask(p_second_lang=0.0).sample(_random.Random(3)).key
    with pytest.raises(ValueError):
        PairSumTask(n_numbers=(1, 3))
