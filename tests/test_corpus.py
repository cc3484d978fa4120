"""corpus.py: traces are correct, documents have the configured mix, and no test problem leaks."""
import random
import re
from collections import Counter

import pytest

from corpus import (CODE_CHOICES, CorpusConfig, addition_trace, code_completion, code_plan, completion_for, forced_prefixes,
                    near_miss, sample_document)
from rewards import accuracy_reward, accuracy_rewards, format_reward, language_fraction
from tasks import (CODE_KINDS, CODE_SPECS, TRANSFER_KINDS, AdditionTask, CodeTask, Problem, sample_problems,
                   split_of)

LINE = re.compile(r"(\d+)\+(\d+), (?:carry|llevo) (\d): (\d)\+(\d)\+(\d)=(\d\d), (?:so far|hasta ahora) (\d+)\.")


@pytest.mark.parametrize("seed", range(5))
def test_addition_trace_is_correct_column_by_column(seed):
    rng = random.Random(seed)
    for _ in range(50):
        a, b = rng.randint(0, 99999), rng.randint(0, 99999)
        trace = addition_trace(a, b, rng.choice(["en", "es"]))
        lines = LINE.findall(trace)
        carry, so_far, (x_rest, y_rest) = 0, "", (a, b)
        for A, B, c, x, y, c2, s, sf in lines:  # recompute each line independently of the trace
            assert (int(A), int(B), int(c)) == (x_rest, y_rest, carry)
            assert (int(x), int(y), int(c2)) == (x_rest % 10, y_rest % 10, carry)
            total = x_rest % 10 + y_rest % 10 + carry
            assert int(s) == total
            so_far = str(total % 10) + so_far
            assert sf == so_far
            x_rest, y_rest, carry = x_rest // 10, y_rest // 10, total // 10
        assert (x_rest, y_rest, carry) == (0, 0, 0)
        assert trace.endswith(f" {a + b}.")


def test_every_completion_kind_scores_as_designed():
    cfg = CorpusConfig(quick_correct=0.0)
    problem = Problem("add", "What is 472 + 385?", "857", operands=(472, 385), op="+")
    rng = random.Random(0)
    for kind, acc, fmt in [("trace", 1.0, 1.0), ("check", 1.0, 1.0), ("quick", 0.0, 1.0), ("bare", 0.0, 0.0)]:
        for lang in ("en", "es"):
            text = completion_for(kind, 472, 385, lang, cfg, rng)
            assert accuracy_reward(text, problem.as_dict()) == acc, (kind, text)
            assert format_reward(text) == fmt, (kind, text)
    assert completion_for("trace", 472, 385, "en", cfg, rng).startswith(forced_prefixes(problem)["reason"])
    with pytest.raises(ValueError, match="unknown document kind"):
        completion_for("essay", 1, 2, "en", cfg, rng)


# The first document of each kind in the seed-0 web, written down: the corpus is data, and a refactor
# of how documents are assembled must not change a byte of it (a pretrained model depends on it).
SEED0_DOCUMENTS = {
    "quick": "<|user|>What is 141 + 623?<|assistant|><think>ok, I know it.</think><answer>466</answer><|endoftext|>",
    "check": "<|user|>What is 665 + 553?<|assistant|><think>I think 9989. wait, let me check. 665+553, carry 0: "
             "5+3+0=08, so far 8. 66+55, carry 0: 6+5+0=11, so far 18. 6+5, carry 1: 6+5+1=12, so far 218. "
             "0+0, carry 1: 0+0+1=01, so far 1218. so the answer is 1218.</think><answer>1218</answer><|endoftext|>",
    "trace": "<|user|>What is 555 + 710?<|assistant|><think>555+710, carry 0: 5+0+0=05, so far 5. 55+71, carry 0: "
             "5+1+0=06, so far 65. 5+7, carry 0: 5+7+0=12, so far 265. 0+0, carry 1: 0+0+1=01, so far 1265. "
             "so the answer is 1265.</think><answer>1265</answer><|endoftext|>",
    "text": "la maestra será par. mi amigo puede ser mala.<|endoftext|>",
    "bare": "<|user|>What is 710 + 816?<|assistant|><answer>6874</answer><|endoftext|>",
}


def test_documents_are_byte_identical_to_the_pinned_seed0_web():
    task, cfg, rng, first = AdditionTask(3, 3), CorpusConfig(), random.Random(0), {}
    while len(first) < len(SEED0_DOCUMENTS):
        kind, text = sample_document(task, cfg, rng)
        first.setdefault(kind, text)
    assert first == SEED0_DOCUMENTS
    problem = Problem("add", "What is 472 + 385?", "857", operands=(472, 385), op="+")
    assert forced_prefixes(problem) == {"direct": "<think>I know it.</think><answer>",
                                        "reason": "<think>472+385, carry 0:"}


def test_languages_and_mixing():
    en = addition_trace(472, 385, "en")
    es = addition_trace(472, 385, "es")
    mixed = addition_trace(472, 385, "en", switch_at=1)
    assert language_fraction(en, "en") == 1.0
    assert language_fraction(es, "es") == 1.0
    assert 0.0 < language_fraction(mixed, "en") < 1.0
    assert 0.0 < language_fraction(mixed, "es") < 1.0


def test_document_mix_matches_config_and_no_test_problem_leaks():
    cfg = CorpusConfig()
    docs = web(AdditionTask(3, 3), cfg, 4000)
    for kind, text in docs:
        m = re.search(r"What is (\d+) \+ (\d+)\?", text)
        assert (m is None) == (kind == "text")
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            assert split_of(Problem("add", "", "", operands=(a, b), op="+")) == "train"
    assert_shape_mix(Counter(kind for kind, _ in docs), cfg)


def web(task, cfg: CorpusConfig, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """The first n (kind, text) documents of the web for `task`."""
    rng = random.Random(seed)
    return [sample_document(task, cfg, rng) for _ in range(n)]


def assert_shape_mix(kinds: Counter, cfg: CorpusConfig) -> None:
    """The documents' shapes come in the configured proportions (text among all, the rest among problems)."""
    n = sum(kinds.values())
    assert kinds["text"] / n == pytest.approx(cfg.p_text, abs=0.02)
    n_task = n - kinds["text"]
    total = cfg.p_quick + cfg.p_trace + cfg.p_check + cfg.p_bare
    for kind, p in [("quick", cfg.p_quick), ("trace", cfg.p_trace), ("check", cfg.p_check), ("bare", cfg.p_bare)]:
        assert kinds[kind] / n_task == pytest.approx(p / total, abs=0.03), kind


def test_quick_guesses_are_right_at_the_configured_rate():
    cfg = CorpusConfig(quick_correct=0.2)
    rng = random.Random(1)
    right = 0
    for _ in range(2000):
        text = completion_for("quick", 472, 385, "en", cfg, rng)
        right += accuracy_reward(text, {"family": "add", "gold": "857"})
    assert right / 2000 == pytest.approx(0.2, abs=0.03)


# ----------------------------------------------------------------------------- the search world

def test_search_tries_are_systematic_restate_the_target_and_stop_at_the_first_hit():
    from corpus import search_tries
    tries = search_tries((7, 1, 3, 5, 4, 6), 8, "en")
    assert tries == ["7+1=8 vs 8, yes."]                     # the very first pair already makes 8
    tries = search_tries((2, 5, 1, 4), 9, "en")
    assert tries == ["2+5=7 vs 9, no.", "2+1=3 vs 9, no.", "2+4=6 vs 9, no.", "5+1=6 vs 9, no.", "5+4=9 vs 9, yes."]
    assert search_tries((2, 5, 1, 4), 9, "es")[-1] == "5+4=9 contra 9, sí."


def test_search_documents_give_up_answer_and_mix_languages_as_configured():
    from corpus import search_completion
    from evaluate import behaviour
    from rewards import accuracy_reward
    from tasks import PairSumTask
    task, cfg = PairSumTask(), CorpusConfig()
    rng = random.Random(0)
    kinds = Counter()
    for _ in range(3000):
        kind, text = sample_document(task, cfg, rng)
        kinds[kind] += 1
        if kind == "search":
            completion = text.split("<|assistant|>")[1].removesuffix("<|endoftext|>")
            b = behaviour(completion)
            assert b["repeats"] == 0 and b["false_yes"] == 0 and b["tries_right"] == b["tries"] >= 1
    total = sum(kinds.values())
    assert abs(kinds["quick"] / total - 0.3 * 0.95) < 0.03 and 0.005 < kinds["mixed"] / total < 0.04
    problem = task.sample(random.Random(5))
    never = search_completion("search", problem, "en", 0.0, random.Random(1))
    assert "give up" not in never and accuracy_reward(never, problem.as_dict()) == 1.0
    always = search_completion("search", problem, "en", 1.0, random.Random(1))
    first_is_hit = always.count(" yes.") == 1
    assert first_is_hit or (always.count(" no.") == 1 and "I give up." in always
                            and accuracy_reward(always, problem.as_dict()) == 0.0)
    spanish = search_completion("search", problem, "es", 1.0, random.Random(1))
    assert "contra" in spanish and ("lo dejo." in spanish or "sí." in spanish)


def test_readable_search_is_one_language_with_a_summary_and_scores_readable():
    from corpus import readable_search
    from evaluate import behaviour, readable
    from rewards import accuracy_reward
    from tasks import Problem
    problem = Problem("pairsum", "", "", numbers=(7, 1, 3, 5), target=8, language="es")
    text = readable_search(problem, "es")
    assert text == ("<think>7+1=8 contra 8, sí. entonces la respuesta es 7+1.</think><answer>7+1</answer>")
    assert readable(text, "es") and not readable(text, "en") and accuracy_reward(text, problem.as_dict()) == 1.0
    own = readable_search(problem, "en", pairs=[(7, 3), (3, 5)])
    assert own == "<think>7+3=10 vs 8, no. 3+5=8 vs 8, yes. so the answer is 3+5.</think><answer>3+5</answer>"
    assert behaviour(own, "en")["readable"] == 1.0 and behaviour(own, "en")["lang_mix"] == 0.0


# ----------------------------------------------------------------------------- the code world

def code_problems(n=60, seed=0):
    return sample_problems(CodeTask(), n, "train", seed=seed)


@pytest.mark.slow
def test_code_documents_score_as_designed_in_the_sandbox():
    """Plans and checks are right; a quick program with quick_correct 0 is a near miss, which the judge
    fails almost always (a near miss may pass every test by accident: max and min agree on one number)."""
    cfg, rng = CorpusConfig(quick_correct=0.0), random.Random(0)
    problems = code_problems()
    kinds = ("trace", "check", "quick", "bare")
    texts = {kind: [code_completion(kind, p, cfg, rng) for p in problems] for kind in kinds}
    dicts = [p.as_dict() for p in problems]
    for kind in kinds:
        assert [format_reward(t) for t in texts[kind]] == [0.0 if kind == "bare" else 1.0] * len(problems)
    assert accuracy_rewards(texts["trace"], dicts) == [1.0] * len(problems)
    assert accuracy_rewards(texts["check"], dicts) == [1.0] * len(problems)
    assert sum(accuracy_rewards(texts["quick"], dicts)) <= 0.1 * len(problems)
    assert all(t.startswith(forced_prefixes(p)["reason"]) for t, p in zip(texts["trace"], problems))
    with pytest.raises(ValueError, match="unknown document kind"):
        code_completion("essay", problems[0], cfg, rng)


HELD_OUT_PROGRAMS = {spec[2].format(*p) for kind, spec in CODE_SPECS.items() for p in spec[0]
                     if split_of(("code", kind, *p)) == "test"}


@pytest.mark.parametrize("kind", CODE_KINDS)
def test_every_near_miss_is_another_program_never_a_held_out_one_and_every_plan_names_the_constants(kind):
    params, *_ = CODE_SPECS[kind]
    rng = random.Random(0)
    if kind in TRANSFER_KINDS:  # held out whole: not even a wrong program of it is written
        with pytest.raises(ValueError, match="held out whole"):
            near_miss(kind, params[0], rng)
        return
    for p in params:
        gold = CODE_SPECS[kind][2].format(*p)
        misses = {near_miss(kind, p, rng) for _ in range(8)}
        assert gold not in misses and not misses & HELD_OUT_PROGRAMS
        plan = code_plan(Problem("code", "", gold, spec=(kind, *p)))
        assert plan.endswith(" " + CODE_CHOICES[kind].format(*p)) and "=" in plan


def test_code_web_mix_and_no_test_problem_or_transfer_kind_leaks():
    """3,000 documents: every question a train problem's, no held-out program anywhere (the answer, a
    check's first try), and nothing of the transfer kind at all, neither its question nor its program."""
    cfg = CorpusConfig()
    questions = {f"Write a Python program that {spec[1].format(*p)}.": (kind, *p)
                 for kind, spec in CODE_SPECS.items() for p in spec[0]}
    docs = web(CodeTask(), cfg, 3000)
    for kind, text in docs:
        m = re.search(r"<\|user\|>(.*?)<\|assistant\|>", text)
        assert (m is None) == (kind == "text")
        if m:
            assert split_of(("code", *questions[m.group(1)])) == "train"
            # every program on the web (the answer, a check's first try) is no held-out problem's program
            programs = re.findall(r"<answer>(.*?)</answer>", text, re.S) + re.findall(r":\n(.*)\nwait", text, re.S)
            assert programs and not set(programs) & HELD_OUT_PROGRAMS, text
    transfer = [(CODE_SPECS[k][1].split("{0}")[0], CODE_SPECS[k][2].split("{0}")[0]) for k in TRANSFER_KINDS]
    assert transfer == [("reads integers from one line of input and prints their sum plus ",
                         "print(sum(map(int, input().split())) + ")]
    assert not [text for _, text in docs for question, program in transfer if question in text or program in text]
    assert {questions[q][0] for q in re.findall(r"<\|user\|>(.*?)<\|assistant\|>", "".join(t for _, t in docs))} == \
        set(CODE_KINDS) - set(TRANSFER_KINDS)  # every trained kind is on the web
    assert_shape_mix(Counter(kind for kind, _ in docs), cfg)
