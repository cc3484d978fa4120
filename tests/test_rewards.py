"""rewards.py: table-driven cases for every reward, property tests (any string: no exception, a value
in range, fast), and the registry. Code-execution cases run real programs through sandbox.py."""
import os
import subprocess
import sys
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import (REWARDS, accuracy_reward, accuracy_rewards, answer_key, code_reward, countdown_reward, extract_answer, format_reward,
                     language_consistency_reward, language_fraction, majority_vote, math_equal, math_reward,
                     parse_reward_spec, register_language)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wrap(answer: str, think: str = "let me think") -> str:
    return f"<think>{think}</think><answer>{answer}</answer><|endoftext|>"


# ----------------------------------------------------------------------------- format

@pytest.mark.parametrize("completion, expected", [
    ("<think>a</think><answer>b</answer>", 1.0),
    ("<think>a</think><answer>b</answer><|endoftext|>", 1.0),
    ("  \n<think>\nadd 2\n</think>\n\n<answer> 4 </answer>\n<|endoftext|>\n", 1.0),
    ("<think>a</think> <answer>b</answer> <|endoftext|>", 1.0),
    ("<think>a</think>", 0.0),                                            # no answer
    ("<answer>b</answer>", 0.0),                                          # no think
    ("<answer>b</answer><think>a</think>", 0.0),                          # wrong order
    ("<think></think><answer>b</answer>", 0.0),                           # empty think
    ("<think>a</think><answer>  \n </answer>", 0.0),                      # blank answer
    ("<think>a<think>b</think></think><answer>c</answer>", 0.0),          # nested
    ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),        # two answers
    ("<think>a</think><answer><answer>b</answer></answer>", 0.0),         # nested answers
    ("<think>a</think><answer>b</answer> and more", 0.0),                 # text after
    ("hello <think>a</think><answer>b</answer>", 0.0),                    # text before
    ("<think>a</think>so<answer>b</answer>", 0.0),                        # text between
    ("<think>a</think><answer>b</answer><|endoftext|><|endoftext|>", 0.0),
    ("<think>a</think><answer>b</answer><|endoftext|>x", 0.0),
    ("<think>a<|endoftext|></think><answer>b</answer>", 0.0),
    ("<think>a</think><answer>b<|user|>c</answer>", 0.0),
    ("<think>a</think><answer>b</answer><|pad|>", 0.0),
    ("<think>a</think><answer>b", 0.0),                                   # cut off
    ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),
    ("", 0.0),
])
def test_format_reward(completion, expected):
    assert format_reward(completion) == expected


def test_format_reward_prefilled_template():
    # a template that already ends in <think>: the model writes the rest, and must not repeat the tag
    assert format_reward("a</think><answer>b</answer>", prefill="<think>") == 1.0
    assert format_reward("<think>a</think><answer>b</answer>", prefill="<think>") == 0.0
    assert format_reward("a</think><answer>b</answer>") == 0.0


# ----------------------------------------------------------------------------- answer extraction

@pytest.mark.parametrize("completion, expected", [
    ("<think>x</think><answer> 42 </answer>", "42"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),                  # the last one wins
    ("<answer></answer>", ""),
    ("<answer>1</answer><answer>2", "1"),                                 # an unclosed last block
    ("<answer>3", None),
    ("no tags", None),
    ("</answer><answer>", None),
    ("<answer><answer>5</answer></answer>", "5"),
])
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


# ----------------------------------------------------------------------------- countdown

@pytest.mark.parametrize("answer, numbers, target, expected", [
    ("(25 - 5) * 3 + 4", [3, 4, 5, 25], 64, 1.0),
    ("4+3*(25-5)", [3, 4, 5, 25], 64, 1.0),
    ("(25-5)*3+4 = 64", [3, 4, 5, 25], 64, 1.0),                         # trailing "= target"
    ("(25-5)*3+4 = 65", [3, 4, 5, 25], 64, 0.0),
    ("(25-5)*3+4 = 64 = 64", [3, 4, 5, 25], 64, 0.0),
    ("(25 - 5) * 3 + 5", [3, 4, 5, 25], 64, 0.0),                        # wrong value, reused 5
    ("(25 - 5) * 3", [3, 4, 5, 25], 60, 0.0),                            # 4 missing
    ("25 * 3 - 5 - 4 - 4", [3, 4, 5, 25], 62, 0.0),                      # 4 used twice
    ("6 * 4", [6, 4, 6], 24, 0.0),                                        # one 6 unused (multiset)
    ("6 * 4 / 6 * 6", [6, 4, 6], 24, 0.0),                                # 6 used three times
    ("1/49*49", [1, 49, 49], 1, 1.0),                                     # exact: 1/49*49 != 1 in floats
    ("7/2*2", [7, 2, 2], 7, 1.0),
    ("8 / (3 - 3) + 8", [8, 3, 3, 8], 8, 0.0),                            # division by zero
    ("2**3", [2, 3], 8, 0.0),
    ("9**9**9", [9, 9, 9], 1, 0.0),
    ("8//3", [8, 3], 2, 0.0),
    ("2.5*4", [2, 4], 10, 0.0),                                            # decimals
    ("-3+5", [3, 5], 2, 0.0),                                              # unary minus
    ("5+(-3)", [3, 5], 2, 0.0),
    ("05+3", [5, 3], 8, 0.0),                                              # leading zero
    ("__import__('os').system('true')", [1], 1, 0.0),
    ("abs(3)", [3], 3, 0.0),
    ("x", [1], 1, 0.0),
    ("٣+5", [3, 5], 8, 0.0),                                               # arabic-indic three
    ("３+5", [3, 5], 8, 0.0),                                              # fullwidth three
    ("3\t+5", [3, 5], 8, 0.0),                                             # only spaces allowed
    ("3 + 5", [3, 5], 8, 1.0),
    ("(3 + 5", [3, 5], 8, 0.0),
    ("3 + 5)", [3, 5], 8, 0.0),
    ("()", [], 0, 0.0),
    ("", [3], 3, 0.0),
    ("3 5", [3, 5], 8, 0.0),
    ("3 +", [3], 3, 0.0),
    ("99999999999999999999 - 99999999999999999999 + 3", [3], 3, 0.0),
    ("(" * 40 + "3" + ")" * 40, [3], 3, 0.0),                              # nesting over the limit
    ("(" * 5 + "3" + ")" * 5, [3], 3, 1.0),
    ("(" * 100_000 + "3" + ")" * 100_000, [3], 3, 0.0),                    # no RecursionError
])
def test_countdown_reward(answer, numbers, target, expected):
    assert countdown_reward(wrap(answer), numbers, target) == expected


def test_countdown_judges_the_answer_block_only():
    assert countdown_reward("garbage <answer>3+5</answer> more garbage", [3, 5], 8) == 1.0
    assert countdown_reward("3+5", [3, 5], 8) == 0.0
    assert countdown_reward("<answer>3+5", [3, 5], 8) == 0.0


# ----------------------------------------------------------------------------- numeric answers

@pytest.mark.parametrize("pred, gold, expected", [
    ("42", 42, True),
    ("42", "42", True),
    ("-7", -7, True),
    ("\u22127", -7, True),                                                 # unicode minus sign
    ("+7", 7, True),
    ("1,234,567", 1234567, True),
    ("1,234", "1234", True),
    ("0.50", "1/2", True),
    ("0.5", "0.50", True),
    (".5", "1/2", True),
    ("3/4", "0.75", True),
    ("6/8", "3/4", True),
    ("3 / 4", "0.75", True),
    (r"\frac{3}{4}", "0.75", True),
    (r"\dfrac{3}{4}", "3/4", True),
    (r"\frac34", "0.75", True),
    (r"-\frac{1}{2}", "-0.5", True),
    (r"\frac{-1}{2}", "-1/2", True),
    (r"\boxed{12}", 12, True),
    (r"so \boxed{3} wait no \boxed{\frac{1}{2}}", "0.5", True),            # the last box wins
    ("$12$", 12, True),
    ("50%", 50, True),                                                     # percent sign dropped
    (r"50\%", "50", True),
    ("50%", "0.5", False),
    ("The answer is 42 apples.", 42, True),
    ("42 cm", 42, True),
    ("5kg", 5, True),
    ("x = 5", 5, True),
    ("90^\\circ", 90, True),
    ("10**50", 10**50, False),
    (str(10**50), 10**50, True),
    ("4" * 101, "4" * 101, True),                                          # too long to parse: string match
    ("4" * 101, int("4" * 101), True),
    ("4" * 101, "4" * 100, False),
    ("41", 42, False),
    ("0.333", "1/3", False),                                               # no tolerance
    ("1e5", 100000, False),                                                # no scientific notation
    ("1e5", 1, False),
    ("five", 5, False),
    ("٤٢", 42, False),                                                     # non-ASCII digits
    ("4٢", 4, False),
    ("1 000", 1000, False),
    ("0,5", "0.5", False),
    ("1 1/2", "3/2", False),
    ("2 or 3", 2, False),
    ("5-3", 2, False),
    ("x5", 5, False),
    ("3.5.2", "3.5", False),
    ("1/0", 1, False),
    ("", 0, False),
    ("yes", " yes ", True),                                                # non-numbers: string match
    ("", "", False),
    ("9**9**9", 9, False),
    ("__import__('os')", 0, False),
])
def test_math_equal(pred, gold, expected):
    assert math_equal(pred, gold) is expected


def test_math_reward():
    assert math_reward(wrap("1,024"), 1024) == 1.0
    assert math_reward(wrap("1023"), 1024) == 0.0
    assert math_reward("<think>1024</think>", 1024) == 0.0                 # no answer block
    assert math_reward("1024", 1024) == 0.0


# ----------------------------------------------------------------------------- code execution

ADD_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"},
             {"input": "0 0\n", "output": "0\n"}]
ADD = "a, b = map(int, input().split())\nprint(a + b)"


@pytest.mark.parametrize("answer, expected", [
    (f"```python\n{ADD}\n```", 1.0),
    (f"here:\n```\n{ADD}\n```\ndone", 1.0),                                  # fence without language
    (ADD, 1.0),                                                               # raw
    (f"```py\nprint(0)\n```\n```python\n{ADD}\n```", 1.0),                    # the last fence wins
    ("a, b = map(int, input().split())\nprint(a + b, end='   \\n\\n\\n')", 1.0),  # trailing whitespace
    ("a, b = map(int, input().split())\nprint(' ' + str(a + b))", 0.0),       # leading whitespace counts
    ("a, b = map(int, input().split())\nprint(a + b if a else 1)", 2 / 3),   # fraction of tests
    ("a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(1)", 0.0),  # right output, exit 1
    ("a, b = map(int, input().split())\nprint(a + b)\nimport sys; sys.exit(0)", 1.0),
    ("print(3)", 1 / 3),
    ("", 0.0),
    ("```python\n```", 0.0),
    ("while True: pass", 0.0),
    ("this is not python", 0.0),
    ("__import__('os')", 0.0),
])
@pytest.mark.slow
def test_code_reward(answer, expected):
    limits = __import__("sandbox").Limits(timeout_s=0.5, cpu_s=1)
    assert code_reward(wrap(answer), ADD_TESTS, limits=limits) == pytest.approx(expected)


def test_code_reward_all_or_nothing_and_missing_parts():
    partial = wrap("a, b = map(int, input().split())\nprint(a + b if a else 1)")
    assert code_reward(partial, ADD_TESTS, all_or_nothing=True) == 0.0
    assert code_reward(wrap(ADD), ADD_TESTS, all_or_nothing=True) == 1.0
    assert code_reward(wrap(ADD), []) == 0.0                                  # no tests: nothing proven
    assert code_reward(f"<think>x</think>```python\n{ADD}\n```", ADD_TESTS) == 0.0  # no answer block


def test_outputs_match():
    assert rewards.outputs_match("3 \r\n4\t\n\n", "3\n4")
    assert not rewards.outputs_match("3\n\n4", "3\n4")
    assert not rewards.outputs_match(" 3", "3")


# ----------------------------------------------------------------------------- language consistency

EN = "let me check the tens digit so far the answer is yes"
ES = "déjame comprobar el dígito de las decenas hasta ahora la respuesta es sí"


@pytest.mark.parametrize("text, language, expected", [
    (EN, "en", 1.0),
    (EN, "es", 0.0),
    (ES, "es", 1.0),
    (ES, "en", 0.0),
    ("carry the one llevo uno", "en", 3 / 5),                              # "one" is English, "uno" not
    ("carry the one llevo uno", "es", 2 / 5),
    ("no", "en", 1.0),                                                     # in both lists: counts for both
    ("no", "es", 1.0),
    ("banana split", "en", 1.0),                                           # unknown ASCII words are English
    ("banana split", "es", 0.0),
    ("DÉJAME Comprobar", "es", 1.0),                                       # case-insensitive
    ("déjame", "en", 0.0),
    ("de\u0301jame", "es", 1.0),                                           # decomposed accent (NFD)
    ("12 + 30 = 42 !!", "en", 1.0),                                        # no words: nothing off-language
    ("", "es", 1.0),
    ("ones2tens", "en", 1.0),                                              # digits split words
    ("<think>sumo las unidades</think><answer>add the ones</answer>", "es", 1.0),   # CoT only
    ("<think>sumo las unidades</think><answer>add the ones</answer>", "en", 0.0),
    ("<think>wait</think>", "en", 1.0),                                    # tag text is not a word
    ("<think>sumo y llevo", "es", 1.0),                                    # unclosed think block
    ("plain text, no tags: sumo", "en", 4 / 5),
])
def test_language_fraction(text, language, expected):
    assert language_fraction(text, language) == pytest.approx(expected)


@pytest.mark.parametrize("text, language, expected", [
    ("<think>so far the answer is 3+5.</think><answer>3+5</answer>", "en", 1.0),       # all English on en
    ("<think>entonces la respuesta es 3+5.</think><answer>3+5</answer>", "es", 1.0),
    ("<think>7+1=8 vs 8, yes.</think><answer>7+1</answer>", "es", 0.0),            # English search on es
    ("<think>carry the one llevo uno</think><answer>1</answer>", "en", 3 / 5),     # the fraction, as above
    ("<think>sumo y llevo", "es", 1.0),                                            # cut off by the length cap
    ("<think>sumo y llevo</think>", "es", 1.0),                                    # no answer: format's business
    ("<answer>3+5</answer>", "en", 0.0),                                           # no think block
    ("so the answer is 3+5", "en", 0.0),                                           # no tags at all
    ("", "es", 0.0),
    ("<think></think><answer>3+5</answer>", "en", 0.0),                            # empty think block
    ("<think>   </think><answer>3+5</answer>", "es", 0.0),
    ("<think>7+1=8, 3+5=8!</think><answer>3+5</answer>", "en", 0.0),               # digits and symbols only
    ("<think>12 = 12</think><answer>yes it is</answer>", "en", 0.0),               # the words are not in the CoT
])
def test_language_consistency_reward_needs_a_chain_of_thought(text, language, expected):
    """The reward is the fraction of the think block's words in the language, and 0 with no think
    block or no words in it: thinking nothing must not earn full marks (it did: 1.0)."""
    assert language_consistency_reward(text, language) == pytest.approx(expected)
    assert REWARDS["language"](text, {"language": language}) == pytest.approx(expected)


def test_language_registry_extension_and_charclass():
    saved = dict(rewards.LANGUAGES)
    try:
        register_language("es", words=["fresa"])
        assert language_fraction("fresa", "es") == 1.0
        assert "llevo" in rewards.LANGUAGES["es"].words                     # extended, not replaced
        assert language_fraction("fresa", "en") == 0.0                      # now known elsewhere
        register_language("greek", charclass=lambda w: all("\u0370" <= c <= "\u03ff" for c in w))
        assert language_fraction("αβγ δέλτα carry", "greek") == pytest.approx(2 / 3)
        assert language_consistency_reward("<think>αβγ δέλτα carry</think>", "greek") == pytest.approx(2 / 3)
        for fn in (language_fraction, language_consistency_reward):        # a config error, chain of thought or not
            with pytest.raises(KeyError):
                fn("x", "klingon")
    finally:
        rewards.LANGUAGES.clear()
        rewards.LANGUAGES.update(saved)


def test_lead_vocabulary_is_registered():
    en = "carry write so far the answer is wait let me check i know it think add digit ones tens yes no sum " \
         "try then ok done and next"
    es = "llevo escribo hasta ahora la respuesta es espera déjame comprobar yo lo sé pienso sumo dígito " \
         "unidades decenas sí no suma pruebo entonces vale listo y siguiente"
    assert set(en.split()) <= rewards.LANGUAGES["en"].words
    assert set(es.split()) <= rewards.LANGUAGES["es"].words
    assert language_fraction(en, "en") == 1.0 and language_fraction(es, "es") == 1.0


# ----------------------------------------------------------------------------- registry

def test_reward_spec_weights_and_components():
    spec = parse_reward_spec("accuracy + 0.1*format + 0.2 * language")
    problem = {"family": "countdown", "numbers": [3, 5], "target": 8, "language": "es"}
    total, parts = spec(wrap("3+5", think="sumo tres y cinco"), problem)
    assert parts == {"accuracy": 1.0, "format": 1.0, "language": 1.0}
    assert total == pytest.approx(1.3)
    total, parts = spec("3+5", problem)  # no chain of thought: no language reward either
    assert parts == {"accuracy": 0.0, "format": 0.0, "language": 0.0} and total == 0.0


@pytest.mark.parametrize("problem, answer", [
    ({"family": "countdown", "numbers": [3, 5], "target": 15}, "3*5"),
    ({"family": "math", "gold": "1/2"}, "0.5"),
    ({"family": "add", "gold": 1234}, "1,234"),
    ({"family": "code", "tests": [{"input": "", "output": "hi"}]}, "print('hi')"),
])
def test_accuracy_dispatches_on_family(problem, answer):
    spec = parse_reward_spec("accuracy")
    assert spec(wrap(answer), problem) == (1.0, {"accuracy": 1.0})
    assert spec(wrap("nope"), problem)[0] == 0.0


def test_score_batch_matches_single_scoring():
    spec = parse_reward_spec("accuracy + 0.1*format + 0.5*tests")
    two_tests = [{"input": "2", "output": "4"}, {"input": "3", "output": "6"}]
    problems = [{"family": "code", "tests": [{"input": "2", "output": "4"}]},
                {"family": "add", "gold": 4},
                {"family": "code", "tests": [{"input": "2", "output": "4"}]},
                {"family": "code", "tests": two_tests}]
    completions = [wrap("print(int(input()) * 2)"), wrap("4"), "print(4)", wrap("print(4)")]
    batch = spec.score_batch(completions, problems)
    assert batch == [spec(c, p) for c, p in zip(completions, problems)]
    assert [t for t, _ in batch] == pytest.approx([1.6, 1.1, 0.0, 0.35])  # one test of two: accuracy 0, tests 0.5


def test_code_accuracy_is_the_judges_pass_fail_and_the_batch_judge_agrees():
    """accuracy on a code problem is 1 only when every test passes (a judge); `tests` is the fraction;
    accuracy_rewards (code in one parallel sandbox batch) equals accuracy_reward one by one."""
    partial = wrap("a, b = map(int, input().split())\nprint(a + b if a else 1)")  # 2 of 3 tests
    code = {"family": "code", "tests": ADD_TESTS}
    assert accuracy_reward(partial, code) == 0.0 and accuracy_reward(wrap(ADD), code) == 1.0
    assert REWARDS["tests"](partial, code) == pytest.approx(2 / 3) and REWARDS["tests"](wrap("4"), {"family": "add"}) == 0.0
    completions = [partial, wrap(ADD), wrap("4"), wrap("5"), "no answer"]
    problems = [code, code, {"family": "add", "gold": 4}, {"family": "add", "gold": 4}, code]
    assert accuracy_rewards(completions, problems) == [accuracy_reward(c, p) for c, p in zip(completions, problems)] \
        == [0.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", ["", "accuracy +", "0.1*", "2*nope", "accuracy + accuracy", "format*0.1",
                                 "-1*format", "accuracy - format", "0.1**format"])
def test_parse_reward_spec_rejects(bad):
    with pytest.raises(ValueError):
        parse_reward_spec(bad)


def test_a_new_reward_by_name_and_unknown_family():
    rewards.REWARDS["length_penalty"] = lambda c, p: -len(c) / 100
    try:
        total, parts = parse_reward_spec("2*length_penalty")("x" * 10, {})
        assert parts == {"length_penalty": -0.1} and total == pytest.approx(-0.2)
    finally:
        del rewards.REWARDS["length_penalty"]
    with pytest.raises(ValueError):
        parse_reward_spec("accuracy")(wrap("1"), {"family": "chess"})


# ----------------------------------------------------------------------------- voting (cons@k)

@pytest.mark.parametrize("family", ["add", "math"])
def test_answer_key_one_number_however_spelled(family):
    problem = {"family": family, "gold": "110"}
    spellings = ["110", "110.0", "0110", " 110 ", "\\boxed{110}", "220/2", "110 apples"]
    assert {answer_key(wrap(a), problem) for a in spellings} == {Fraction(110)}
    assert answer_key(wrap("111"), problem) == Fraction(111)
    assert answer_key(wrap("2 or  3"), problem) == answer_key(wrap("2 or 3"), problem) == "2or3"  # not one number
    assert answer_key("<think>110</think><answer>110", problem) is None  # no complete answer block: no vote


def test_math_answer_keys_are_equal_exactly_when_math_equal_says_so():
    spellings = ["110", "110.0", "0110", "\\frac{220}{2}", "111", "1/2", "0.5", "\\dfrac12", "50%", "50",
                 "-50", "\u221250", "2 or 3", "2 or  3", "yes", "1,234", "1234"]
    for a in spellings:
        for b in spellings:
            same_key = answer_key(wrap(a), {"family": "math"}) == answer_key(wrap(b), {"family": "math"})
            assert same_key == math_equal(a, b), (a, b)


def test_answer_key_countdown_is_the_value_of_a_valid_expression():
    problem = {"family": "countdown", "numbers": [3, 5, 7], "target": 22}
    right = ["3*5+7", "7 + 5*3", "(3*5)+7 = 22", "7+3*5"]
    assert [answer_key(wrap(e), problem) for e in right] == [Fraction(22)] * 4  # different expressions, one class
    assert answer_key(wrap("(3+5)*7"), problem) == Fraction(56)                # valid but wrong: its value
    assert answer_key(wrap("3 * 5 + 7 + 7"), problem) == "3*5+7+7"             # 7 used twice: keyed by text
    assert answer_key(wrap("3*5+7 = 23"), problem) == "3*5+7=23"               # a wrong "= n" is invalid
    assert answer_key(wrap("22"), problem) == "22"                             # the target is no expression
    # a class's members are all right or all wrong, so any member can represent it
    answers = right + ["(3+5)*7", "56", "3*5+7+7", "3*5+7 = 23", "22", "5*3+7", "3 * 5 + 7+7"]
    classes = {}
    for a in answers:
        classes.setdefault(answer_key(wrap(a), problem), set()).add(accuracy_reward(wrap(a), problem))
    assert len(classes) == 6 and all(len(scores) == 1 for scores in classes.values())


def test_answer_key_code_is_the_program_text_not_its_behaviour():
    problem = {"family": "code", "tests": [{"input": "", "output": "1"}]}
    fenced = "```python\nfor i in range(1):  \n    print(i + 1)\n```"
    plain = "for i in range(1):\n    print(i + 1)"
    assert answer_key(wrap(fenced), problem) == answer_key(wrap(plain), problem) == plain  # indentation kept
    assert answer_key(wrap("print(1)"), problem) == "print(1)"  # same output, another program: another class
    assert answer_key(wrap("   "), problem) == ""  # an empty program still votes (and is wrong)
    assert answer_key("print(1)", problem) is None


def test_answer_key_unknown_family():
    with pytest.raises(ValueError, match="chess"):
        answer_key(wrap("1"), {"family": "chess"})


@pytest.mark.parametrize("keys, expected", [
    (["a", "b", "b"], 1),
    (["a", "b", "b", None, "a"], 0),             # 2-2 tie: the class seen first wins
    (["b", "a", "a", "b"], 0),
    ([None, "x", None], 1),                      # None does not vote
    ([Fraction(110), "110", "110"], 1),          # a number and a string are different answers
    ([Fraction(110), Fraction(220, 2)], 0),      # one value, one class: its first member represents it
    ([None, None], None),
    ([], None),
])
def test_majority_vote(keys, expected):
    assert majority_vote(keys) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 3)), max_size=8))
def test_majority_vote_against_a_slow_loop(keys):
    counts = {k: keys.count(k) for k in keys if k is not None}
    best = max(counts.values(), default=0)
    firsts = [i for i, k in enumerate(keys) if k is not None and counts[k] == best and keys.index(k) == i]
    assert majority_vote(keys) == (firsts[0] if firsts else None)


def test_importing_rewards_pulls_in_neither_torch_nor_sandbox():
    code = "import sys, rewards; assert 'torch' not in sys.modules and 'sandbox' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ----------------------------------------------------------------------------- properties

TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<|endoftext|>", "<|user|>", "(", ")", "+", "-",
        "*", "/", "=", " ", "\n", "1", "3", "25", "0", ".", ",", "%", "\\frac{", "}{", "}", "\\boxed{",
        "llevo", "carry", "é", "٣", "**", "//"]
texts = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(TAGS), max_size=80).map("".join))
FAST = 0.5  # seconds per call: generous for two busy cores; typical calls take microseconds


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    assert time.perf_counter() - t0 < FAST, f"{fn.__name__} took too long on {args!r:.200}"
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts, texts)
@pytest.mark.slow
def test_pure_rewards_are_total_bounded_and_fast(text, other):
    assert timed(format_reward, text) in (0.0, 1.0)
    answer = timed(extract_answer, text)
    assert answer is None or isinstance(answer, str)
    assert timed(countdown_reward, text, [1, 3, 25], 24) in (0.0, 1.0)
    assert timed(countdown_reward, wrap(text), [1, 3, 25], 24) in (0.0, 1.0)
    assert timed(math_equal, text, other) in (True, False)
    assert timed(math_equal, text, text) in (True, False)
    assert timed(math_reward, text, "24") in (0.0, 1.0)
    for problem in ({"family": "countdown", "numbers": [1, 3, 25]}, {"family": "add"}, {"family": "code"}):
        key = timed(answer_key, text, problem)
        assert key is None or hash(key) is not None
    for lang in ("en", "es"):
        assert 0.0 <= timed(language_consistency_reward, text, lang) <= timed(language_fraction, text, lang) <= 1.0


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["1", "(", "1 ", "\\frac{1}{", "a1", "1a", "1/", "-", "\u0663", "1,"]), st.integers(1, 5000))
def test_pathological_lengths_stay_fast(unit, n):
    text = unit * n
    timed(countdown_reward, wrap(text), [1], 1)
    timed(math_equal, text, "1")
    timed(format_reward, text)
    timed(language_consistency_reward, text, "en")


def _expressions(numbers):
    """Strategy: a random full binary expression over exactly these numbers, as (text, Fraction|None)."""
    if len(numbers) == 1:
        return st.just((str(numbers[0]), Fraction(numbers[0])))

    def combine(parts):
        (left, lv), (right, rv), op = parts
        if op == "/" and (rv is None or rv == 0) or lv is None or rv is None:
            return f"({left}){op}({right})", None
        value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[op]
        return f"({left}) {op} ({right})", value

    return st.integers(1, len(numbers) - 1).flatmap(lambda k: st.tuples(
        _expressions(numbers[:k]), _expressions(numbers[k:]), st.sampled_from("+-*/")).map(combine))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=5).flatmap(
    lambda nums: st.tuples(st.just(nums), st.permutations(nums).flatmap(_expressions))))
def test_countdown_agrees_with_exact_evaluation(case):
    numbers, (text, value) = case
    if value is None or value.denominator != 1:
        return
    assert countdown_reward(wrap(text), numbers, int(value)) == 1.0
    assert countdown_reward(wrap(text), numbers, int(value) + 1) == 0.0
    assert countdown_reward(wrap(text), numbers + [7], int(value)) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.fractions(max_denominator=1000).filter(lambda f: abs(f) < 10**9))
def test_math_equal_across_notations(value):
    gold = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    sign = "-" if value < 0 else ""
    num, den = abs(value.numerator), value.denominator
    forms = [f"{sign}{num * 3}/{den * 3}", f"{sign}\\frac{{{num}}}{{{den}}}", f"\\boxed{{{gold}}}",
             f"The answer is {gold}."]
    if den == 1:
        forms += [f"{value.numerator:,}", f"{value.numerator}.000", f"{value.numerator}%"]
    for form in forms:
        assert math_equal(form, gold), form
    assert not math_equal(f"{sign}{num + 1}/{den}" if den > 1 else str(value + 1), gold)


# ----------------------------------------------------------------------------- pair-sum search

@pytest.mark.parametrize("answer,expected", [
    ("3+5", 1.0), ("5+3", 1.0), (" 5 + 3 ", 1.0),      # either order, spaces
    ("1+7", 1.0),                                      # another pair with the right sum is right too
    ("4+4", 0.0),                                      # 4 is listed once: the same position twice
    ("2+6", 0.0),                                      # 2 is not in the list
    ("3+6", 0.0),                                      # both listed, wrong sum
    ("3+5+0", 0.0), ("8", 0.0), ("3 and 5", 0.0), ("", 0.0),
])
def test_pairsum_reward_by_hand(answer, expected):
    problem = {"family": "pairsum", "numbers": [7, 1, 3, 5, 4, 6], "target": 8}
    assert rewards.accuracy_reward(wrap(answer), problem) == expected
    assert rewards.pairsum_reward(wrap(answer), problem["numbers"], problem["target"]) == expected


def test_pairsum_answer_key_is_the_unordered_pair():
    problem = {"family": "pairsum", "numbers": [7, 1, 3, 5, 4, 6], "target": 8}
    assert rewards.answer_key(wrap("3+5"), problem) == rewards.answer_key(wrap(" 5 + 3"), problem) == frozenset({3, 5})
    assert rewards.answer_key(wrap("three"), problem) == "three"
    assert rewards.majority_vote([rewards.answer_key(wrap(a), problem) for a in ("1+7", "5+3", "3+5")]) == 1
