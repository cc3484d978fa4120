"""evaluate.py: the paper's metrics against hand-computed values, and an end-to-end run."""
import json
import math

import pytest
import torch

from evaluate import completion_stats, evaluate, has_reasoning, mixes_languages, summarize
from model import GPT, GPTConfig
from tasks import Problem, format_completion
from tokenizer import get_tokenizer


def stat(correct, key, reasons=0.0, length=10):
    no_search = {"off_lang": 0.0, "lang_mix": 0.0, "readable": 0.0, "tries": 0, "backtracks": 0, "give_up": 0.0, "repeats": 0, "tries_right": 0,
                 "false_yes": 0.0}
    return {"correct": correct, "format": 1.0, "length": length, "language": "en", "reasons": reasons,
            "self_check": 0.0, "mixed": 0.0, **no_search, "key": key}


def test_pass_at_1_and_cons_at_k_by_hand():
    problems = [Problem("add", "What is 1 + 1?", "2", operands=(1, 1), op="+"),
                Problem("add", "What is 2 + 2?", "4", operands=(2, 2), op="+")]
    stats = [
        # question 1: 1 of 3 right, but the majority (2 votes for "3") is wrong
        [stat(1.0, "2", 1.0, 30), stat(0.0, "3"), stat(0.0, "3")],
        # question 2: 2 of 3 right, majority right; one sample has no answer at all
        [stat(1.0, "4", 1.0, 30), stat(1.0, "4"), stat(0.0, None)],
    ]
    m = summarize(problems, stats)
    assert m["pass@1"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert m["cons@k"] == pytest.approx(0.5)
    assert m["length"] == pytest.approx((30 + 10 + 10 + 30 + 10 + 10) / 6)
    assert m["reasons"] == pytest.approx(2 / 6)
    assert m["acc_reasoned"] == 1.0 and m["acc_direct"] == pytest.approx(1 / 4)


def test_accuracy_among_well_formed_and_per_kind_by_hand():
    """acc_formatted: correct / well-formed completions, so a pass@1 rise that is only format shows
    as a flat acc_formatted; by_kind: pass@1 per kind of program, present when the set mixes kinds."""
    from tasks import CodeTask, sample_problems
    p1, p2 = sample_problems(CodeTask(kinds=("affine",)), 1, "train")[0], sample_problems(CodeTask(kinds=("count",)), 1, "train")[0]
    stats = [[{**stat(1.0, "a"), "format": 1.0}, {**stat(0.0, "b"), "format": 1.0}, {**stat(0.0, None), "format": 0.0}],
             [{**stat(1.0, "c"), "format": 1.0}, {**stat(1.0, "c"), "format": 1.0}, {**stat(0.0, None), "format": 0.0}]]
    m = summarize([p1, p2], stats)
    assert m["pass@1"] == pytest.approx(3 / 6) and m["format"] == pytest.approx(4 / 6)
    assert m["acc_formatted"] == pytest.approx(3 / 4)
    assert m["by_kind"] == {"affine": pytest.approx(1 / 3), "count": pytest.approx(2 / 3)}
    assert "by_kind" not in summarize([p1], stats[:1])


def test_cons_at_k_votes_on_meanings_not_spellings():
    """Three right answers spelled three ways outvote two identical wrong ones. (A vote on strings
    gives "111" 2 votes against 1 each for "110", "110.0" and "0110", and cons@k 0.)"""
    problem = Problem("add", "What is 55 + 55?", "110", operands=(55, 55), op="+")
    answers = ["111", "110", "110.0", "111", "0110"]
    row = [completion_stats(problem, format_completion("55+55", a), 10) for a in answers]
    m = summarize([problem], [row])
    assert m["pass@1"] == pytest.approx(3 / 5)
    assert m["cons@k"] == 1.0


def test_cons_at_k_ties_and_rows_without_answers():
    problems = [Problem("add", "What is 1 + 1?", "2", operands=(1, 1), op="+")] * 3
    stats = [
        [stat(0.0, "3"), stat(1.0, "2"), stat(1.0, "2"), stat(0.0, "3")],  # 2-2 tie: "3" came first, wrong
        [stat(1.0, "2"), stat(0.0, "3"), stat(0.0, "3"), stat(1.0, "2")],  # 2-2 tie: "2" came first, right
        [stat(0.0, None), stat(0.0, None), stat(0.0, None), stat(0.0, None)],  # nobody answered: 0
    ]
    assert summarize(problems, stats)["cons@k"] == pytest.approx(1 / 3)


def test_behaviour_detectors():
    traced = format_completion("472+385, carry 0: 2+5+0=07, so far 7.", "857")
    quick = format_completion("I know it.", "857")
    assert has_reasoning(traced) and not has_reasoning(quick)
    assert not mixes_languages(traced)
    assert mixes_languages(format_completion("472+385, llevo 0: 2+5+0=07, so far 7.", "857"))


@pytest.mark.slow
def test_evaluate_end_to_end_on_a_random_model():
    torch.manual_seed(0)
    tok = get_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=64))
    problems = [Problem("add", f"What is {a} + 1?", str(a + 1), operands=(a, 1), op="+") for a in range(3)]
    m = evaluate(model, tok, problems, k=2, max_new_tokens=8)
    assert set(m) >= {"pass@1", "cons@k", "format", "length", "reasons", "self_check", "mixed"}
    assert 0.0 <= m["pass@1"] <= 1.0 and 1 <= m["length"] <= 8
    forced = evaluate(model, tok, problems, k=2, max_new_tokens=8,
                      prefix_fn=lambda p: f"<think>x</think><answer>{p.gold}</answer>")
    # the forced prefix already holds a complete, correct answer block: every sample is right
    assert forced["pass@1"] == 1.0 or math.isclose(forced["pass@1"], 1.0)


@pytest.mark.slow
def test_cli_evaluates_the_task_the_checkpoint_was_trained_on(tmp_path):
    from conftest import ROOT, run_script

    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--task", "add", "--min-digits", "2", "--max-digits", "2",
               "--out-dir", tmp_path)
    out = run_script(f"{ROOT}/evaluate.py", "--ckpt", tmp_path, "--n-problems", "2", "--k", "1",
                     "--max-new-tokens", "4").stdout
    assert "AdditionTask(min_digits=2, max_digits=2)" in out and "forced_reason_pass@1" in out


def test_bad_flags_exit_2_in_one_line(tmp_path, capsys):
    from common import config_from_args
    from evaluate import EvalConfig, check_files

    for argv, message in [(["--k", "0"], "--k must be > 0"), (["--top-p", "1.5"], "--top-p must lie in (0, 1]"),
                          (["--task", "nope"], "--task must be one of"),
                          (["--ckpt", str(tmp_path / "missing")], "no checkpoint there"),
                          (["--compare", str(tmp_path / "a"), str(tmp_path / "b")], "--compare"),
                          (["--budgets", "8,x"], "--budgets must be"), (["--budgets", "0"], "--budgets must be")]:
        with pytest.raises(SystemExit) as exit_info:
            config_from_args(EvalConfig, argv, check=check_files)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_search_behaviour_on_hand_made_completions():
    from evaluate import behaviour
    persist = format_completion("7+1=8 vs 9, no. 7+3=10 vs 9, no. 1+3=4 vs 9, no. 1+3=4 vs 9, no. 3+6=9 vs 9, yes.", "3+6")
    b = behaviour(persist)
    assert (b["tries"], b["backtracks"], b["repeats"], b["tries_right"], b["give_up"], b["false_yes"]) == (5, 4, 1, 5, 0, 0)
    quitter = format_completion("7+1=8 vs 9, no. I give up.", "7+1")
    assert behaviour(quitter)["give_up"] == 1.0 and behaviour(quitter)["tries"] == 1
    liar = format_completion("7+1=9 vs 9, yes.", "7+1")             # wrong sum, claimed success
    assert behaviour(liar)["false_yes"] == 1.0 and behaviour(liar)["tries_right"] == 0
    wrong_target = format_completion("7+1=8 vs 9, yes.", "7+1")     # right sum, but not the target
    assert behaviour(wrong_target)["false_yes"] == 1.0
    assert behaviour(format_completion("I know it.", "7+1"))["tries"] == 0


def test_parse_tries_reads_every_try_as_written():
    from evaluate import parse_tries
    thought = "7+1=8 vs 12, no. 7+3=11 vs 12, no. wait 7+5=12 contra 12, sí. so the answer is 7+5."
    assert parse_tries(thought) == [(7, 1, 8, 12, False), (7, 3, 11, 12, False), (7, 5, 12, 12, True)]
    assert parse_tries("I know it.") == [] and parse_tries("7+1=8 vs 12") == []  # a try ends with its verdict


def test_language_drift_counts_second_language_questions_reasoned_in_the_first():
    from evaluate import behaviour, summarize_behaviour
    english = format_completion("7+1=8 contra 9, no. 7+2=9 vs 9, yes.", "7+2")
    assert behaviour(format_completion("7+1=8 vs 9, no.", "7+1"), "es")["off_lang"] == 1.0   # only "no" is Spanish
    assert behaviour(format_completion("7+1=8 contra 9, no. 7+2=9 contra 9, sí.", "7+2"), "es")["off_lang"] == 0.0
    assert behaviour(english, "es")["mixed"] == 1.0
    rows = [{**behaviour(format_completion("7+1=8 vs 9, no.", "7+1"), lang), "language": lang, "tries_right": 1}
            for lang in ("es", "es", "en")]
    rows[1] = {**behaviour(format_completion("7+1=8 contra 9, no.", "7+1"), "es"), "language": "es"}
    assert summarize_behaviour(rows)["drift"] == 0.5            # 1 of the 2 Spanish questions drifted


@pytest.mark.parametrize("completion,language,expected", [
    ("<think>7+3=10 vs 8, no. 3+5=8 vs 8, yes. so the answer is 3+5.</think><answer>3+5</answer>", "en", True),
    ("<think>7+3=10 contra 8, no. 3+5=8 contra 8, sí. entonces la respuesta es 3+5.</think><answer>3+5</answer>", "es", True),
    ("<think>7+3=10 vs 8, no. 3+5=8 vs 8, yes.</think><answer>3+5</answer>", "en", False),             # no summary
    ("<think>3+5=8 vs 8, yes. so the answer is 3+5.</think><answer>5+3</answer>", "en", False),      # names another
    ("<think>3+5=8 vs 8, yes. so the answer is 3+5.</think><answer>3+5</answer>", "es", False),      # English on es
    ("<think>7+3=10 vs 8, no. 7+3=10 vs 8, no. so the answer is 3+5.</think><answer>3+5</answer>", "en", False),  # repeat
    ("<think>7+3=10 vs 8, no. I give up. so the answer is 7+3.</think><answer>7+3</answer>", "en", False),  # gives up
    ("<think>so the answer is 3+5.</think><answer>3+5</answer> more", "en", False),                   # bad format
])
def test_readable_format(completion, language, expected):
    from evaluate import readable
    assert readable(completion, language) is expected


def test_language_mixing_is_any_word_outside_the_question_language():
    from evaluate import behaviour
    assert behaviour("<think>7+3=10 contra 8, no. so</think><answer>1+1</answer>", "es")["lang_mix"] == 1.0
    assert behaviour("<think>7+3=10 contra 8, no.</think><answer>1+1</answer>", "es")["lang_mix"] == 0.0
    assert behaviour("<think></think><answer>1+1</answer>", "es")["lang_mix"] == 0.0  # no words: nothing mixed


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 0, 5), (5, 5, 1), (5, 5, 5), (5, 2, 1), (5, 2, 3), (5, 2, 4),
                                   (10, 3, 10), (64, 1, 8), (64, 40, 2), (1, 1, 1), (1, 0, 1)])
def test_pass_at_k_equals_its_closed_form(n, c, k):
    from evaluate import pass_at_k
    closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)   # math.comb(a, b) = 0 when b > a
    assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    if k == 1:
        assert pass_at_k(n, c, k) == pytest.approx(c / n)  # pass@1 is the mean accuracy


def test_pass_at_k_refuses_impossible_counts():
    from evaluate import pass_at_k
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_cons_at_k_over_disjoint_groups_with_ties():
    from evaluate import cons_at, scaling_curves
    s = lambda key, ok: {"key": key, "correct": float(ok)}  # noqa: E731
    row = [s("a", 0), s("b", 1), s("b", 1), s("a", 0), s("c", 0), s("b", 1), s(None, 0), s(None, 0)]
    assert cons_at(row, 1) == pytest.approx(3 / 8)                # each sample alone
    # groups of 2: (a, b) tie -> a, the earlier: 0; (b, a) tie -> b: 1; (c, b) -> c: 0; (None, None): 0
    assert cons_at(row, 2) == pytest.approx(1 / 4)
    assert cons_at(row, 4) == 0.0        # (a b b a): a 2-2 tie, a came first: 0; (c b - -): c first: 0
    assert cons_at(row, 8) == 1.0                                 # b has 3 votes of 8
    curves = scaling_curves([row, [s("x", 1)] * 8], [1, 2, 4, 8])
    assert curves["pass@k"][0] == pytest.approx((3 / 8 + 1) / 2) and curves["pass@k"][-1] == 1.0
    assert curves["cons@k"] == pytest.approx([(3 / 8 + 1) / 2, (1 / 4 + 1) / 2, (0 + 1) / 2, 1.0])


def test_force_answer_closes_the_thought_where_the_budget_ends():
    from evaluate import force_answer
    assert force_answer("<think>7+1=8 vs 8, n") == "</think><answer>"
    assert force_answer("<think>7+1=8 vs 8, yes.</think>") == "<answer>"
    assert force_answer("<think>x</think><answer>7+") == ""


@pytest.mark.slow
def test_budget_completions_cut_at_the_budget_and_force_the_answer():
    """A random model never closes its thought: every completion is its first B sampled tokens,
    then the forced tags, then at most FORCED_ANSWER_TOKENS of answer."""
    from evaluate import FORCED_ANSWER_TOKENS, budget_completions
    tok = get_tokenizer()
    letters = [tok.encode(c)[0] for c in "abcdefghijklmnopqrstuvwxyz"]  # one-letter tokens (not merges like "no")

    class LettersOnly(GPT):  # writes lower-case letters only: never stops, and text round-trips
        def forward(self, *args, **kwargs):
            logits = super().forward(*args, **kwargs)
            bias = torch.full((logits.size(-1),), float("-inf"))
            bias[letters] = 0.0
            return logits + bias

    torch.manual_seed(0)
    model = LettersOnly(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=16,
                                  max_seq_len=128))
    problems = [Problem("pairsum", "Which two of 1 2 3 4 add up to 5?", "", numbers=(1, 2, 3, 4), target=5)]
    for budget in (3, 9):
        texts = budget_completions(model, tok, problems, budget, k=4, temperature=1.0, top_p=1.0, seed=1)
        for t in texts:
            assert t[:budget].isalpha() and t[budget:].startswith("</think><answer>"), (budget, t)
            assert len(tok.encode(t, allow_special=True)) <= budget + 2 + FORCED_ANSWER_TOKENS


@pytest.mark.slow
def test_compare_and_scaling_cli_on_smoke_models(tmp_path):
    from conftest import ROOT, run_script
    for name in ("a", "b"):
        run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--seed", str(len(name) + (name == "b")),
                   "--out-dir", tmp_path / name)
    out = run_script(f"{ROOT}/evaluate.py", "--compare", tmp_path / "a", tmp_path / "b", "--n-problems", "2",
                     "--k", "2", "--max-new-tokens", "8", "--scaling", "--scaling-n", "4", "--scaling-problems",
                     "2", "--budgets", "2,4", "--scaling-out", tmp_path / "s.png").stdout
    assert "pass@k" in out and str(tmp_path / "b") in out and (tmp_path / "s.png").exists()
    assert all((tmp_path / n / "eval.json").exists() for n in ("a", "b"))
    result = json.loads((tmp_path / "s.json").read_text())
    assert result[str(tmp_path / "a")]["k"] == [1, 2, 4] and len(result[str(tmp_path / "a")]["budget_pass@1"]) == 2


@pytest.mark.slow
def test_sample_k_continues_an_interrupted_dataset_exactly(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of a dataset's sampling: the batches done are in the partial file, and the
    same call again draws only the rest and returns what an uninterrupted call returns."""
    import evaluate as ev
    from conftest import raising_on_call
    from tasks import PairSumTask, sample_problems
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=64)).eval()
    tok, problems = get_tokenizer(), sample_problems(PairSumTask(), 3, "train", seed=0)
    args = (model, tok, problems, 2, 6, 123)
    expected = ev.sample_k(*args, batch_size=2)
    partial = tmp_path / "d.jsonl.partial"
    real = ev.sample_completions
    monkeypatch.setattr(ev, "sample_completions", raising_on_call(real, 2, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ev.sample_k(*args, batch_size=2, partial=str(partial))
    assert partial.exists()
    monkeypatch.setattr(ev, "sample_completions", real)
    capsys.readouterr()
    assert ev.sample_k(*args, batch_size=2, partial=str(partial)) == expected
    assert f"continuing from {partial}: 2 of 6 samples already drawn" in capsys.readouterr().out
    assert not partial.exists()
    ev.sample_k(*args, batch_size=3, partial=str(partial))   # other arguments: a stale file is not used
    torch.save({"fingerprint": "another dataset", "ids": [[1]], "generator": None}, partial)
    assert ev.sample_k(*args, batch_size=2, partial=str(partial)) == expected
    # the same arguments but other weights (the model was trained on since): a fresh draw, not a continuation
    monkeypatch.setattr(ev, "sample_completions", raising_on_call(real, 2, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ev.sample_k(*args, batch_size=2, partial=str(partial))
    monkeypatch.setattr(ev, "sample_completions", real)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    fresh = ev.sample_k(*args, batch_size=2)
    capsys.readouterr()
    assert ev.sample_k(*args, batch_size=2, partial=str(partial)) == fresh != expected
    assert "continuing from" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- faithful traces

LIST = Problem("pairsum", "Which two of 7 4 9 6 1 add up to 13?", "4+9", numbers=(7, 4, 9, 6, 1), target=13)
LISTA = Problem("pairsum", "¿Qué dos de 7 4 9 6 1 suman 13?", "4+9", numbers=(7, 4, 9, 6, 1), target=13, language="es")


def search(tries: str, answer: str, language: str = "en") -> str:
    """A search completion in the question's language, with or without the summary."""
    if language == "es":
        tries = tries.replace(" vs ", " contra ").replace(", yes.", ", sí.").replace("so the answer is", "entonces la respuesta es")
    return format_completion(tries, answer) + "<|endoftext|>"


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("tries,answer,expected", [
    ("7+4=11 vs 13, no. 4+9=13 vs 13, yes. so the answer is 4+9.", "4+9", True),   # the web's search
    ("7+4=11 vs 13, no. 4+9=13 vs 13, yes.", "9+4", True),                         # no summary, either order
    ("7+2=9 vs 13, no. 4+9=13 vs 13, yes.", "4+9", False),                         # 2 is not in the list
    ("7+4=11 vs 13, no. 13+0=13 vs 13, yes.", "4+9", False),                       # nor are 13 and 0
    ("7+7=14 vs 13, no. 4+9=13 vs 13, yes.", "4+9", False),                        # one position used twice
    ("7+4=12 vs 13, no. 4+9=13 vs 13, yes.", "4+9", False),                        # a wrong stated sum
    ("7+6=13 vs 13, no. 4+9=13 vs 13, yes.", "4+9", False),                        # "no" to a pair that makes it
    ("7+4=11 vs 12, no. 4+9=13 vs 13, yes.", "4+9", False),                        # another target
    ("7+6=13 vs 13, yes.", "4+9", False),                                          # answer not the yes-pair
    ("4+9=13 vs 13, yes. so the answer is 7+6.", "4+9", False),                   # nor the summary's
    ("4+9=13 vs 13, yes. So the answer is 7+6.", "4+9", False),                   # (in any case)
    ("4+9=13 vs 13, yes. 7+6=13 vs 13, yes.", "4+9", False),                       # goes on after its yes
    ("7+4=11 vs 13, no. 9+1=10 vs 13, no.", "4+9", False),                         # never said yes
    ("I know it.", "4+9", False),                                                  # no search: a guess
])
def test_faithful_search(tries, answer, expected, language):
    """A right answer counts as faithful only when the search that reached it is true: its numbers
    from the list at different positions, its sums, target and verdicts right, and the answer (and
    summary) the pair it said yes to. Every case here is judged correct."""
    problem = LISTA if language == "es" else LIST
    completion = search(tries, answer, language)
    from evaluate import faithful
    from rewards import accuracy_reward
    assert accuracy_reward(completion, problem.as_dict()) == 1.0
    assert faithful(problem, completion) is expected
    assert completion_stats(problem, completion, 0)["faithful"] == float(expected)


def test_faithful_search_uses_a_repeated_number_once_per_position():
    from evaluate import faithful
    twice = Problem("pairsum", "Which two of 4 4 1 add up to 8?", "4+4", numbers=(4, 4, 1), target=8)
    assert faithful(twice, search("4+1=5 vs 8, no. 4+4=8 vs 8, yes.", "4+4"))   # two 4s listed
    assert not faithful(LIST, search("4+4=8 vs 8, yes.", "4+4"))                 # one 4 listed


def test_faithful_addition_and_code_follow_their_worlds_traces():
    import random
    from corpus import CorpusConfig, addition_trace, code_completion, code_plan
    from evaluate import faithful
    from tasks import CodeTask
    add = Problem("add", "What is 472 + 38?", "510", operands=(472, 38), op="+")
    trace = addition_trace(472, 38)   # 472+38, carry 0: 2+8+0=10, so far 0. 47+3, carry 1: ... so the answer is 510.
    assert faithful(add, format_completion(trace, "510"))
    assert faithful(add, format_completion(addition_trace(38, 472, "es"), "510"))              # either order, es
    assert faithful(add, format_completion("I think 500. wait, let me check. " + trace, "510"))  # the check shape
    assert faithful(add, format_completion(addition_trace(472, 38, "en", switch_at=1), "510"))  # language: another rule
    for wrong in (trace.replace("7+3+1=11", "7+3+1=12"),                      # a column sum
                  trace.replace("so far 10.", "so far 11."),                   # the running answer
                  trace.replace("carry 1: 7", "carry 0: 7"),                   # a carry
                  trace.replace("472+38", "471+39"),                           # other operands
                  trace.split(" 4+0,")[0] + " so the answer is 510.",         # a column missing
                  trace.replace("so the answer is 510", "so the answer is 610"),
                  "5+5+1=11. " + trace,                                         # a column sum outside the columns
                  "I know it."):
        assert not faithful(add, format_completion(wrong, "510")), wrong
    assert not faithful(add, format_completion(trace, "511"))                  # the answer is not the sum traced
    assert not faithful(add, format_completion(trace, "\u00b2"))              # a digit int() cannot read
    problem = CodeTask(kinds=("affine",)).sample(random.Random(0))
    kind, a, b = problem.spec
    rng = random.Random(0)
    assert faithful(problem, code_completion("trace", problem, CorpusConfig(), rng))
    assert faithful(problem, code_completion("check", problem, CorpusConfig(), rng))
    assert not faithful(problem, format_completion("I know it.", problem.gold))
    assert not faithful(problem, format_completion(code_plan(problem).replace(f"b = {b}.", f"b = {b + 1}."), problem.gold))
    countdown = Problem("countdown", "Using the numbers [3, 5], make 8.", "3 + 5", numbers=(3, 5), target=8)
    assert faithful(countdown, format_completion("I know it.", "3 + 5"))    # no trace shape to hold it to


def test_trace_filter_drops_right_answers_reached_by_wrong_working():
    """The shared filter of rejection sampling and distillation: one count per sample, the first
    rule that fails; a lucky guess (a try with a number not in the list, answer right) is
    "unfaithful", e.g. 7+2=9 for the list 7 4 9 6 1 (SFT on it teaches inventing numbers)."""
    from evaluate import trace_filter
    good = search("7+4=11 vs 13, no. 4+9=13 vs 13, yes. so the answer is 4+9.", "4+9")
    bueno = search("7+4=11 vs 13, no. 4+9=13 vs 13, yes. so the answer is 4+9.", "4+9", "es")
    samples = [(LIST, good), (LIST, good), (LISTA, bueno),                                      # kept, duplicate, kept
               (LIST, search("7+4=11 vs 13, no.", "7+4")),                                      # wrong
               (LIST, good.replace("</answer>", "</answer> more")),                              # bad format
               (LISTA, good),                                                                    # English on es
               (LIST, search("7+4=11 vs 13, no. 7+4=11 vs 13, no. 4+9=13 vs 13, yes.", "4+9")),  # repetitive
               (LIST, search("7+2=9 vs 13, no. 4+9=13 vs 13, yes.", "4+9")),                    # lucky: unfaithful
               (LISTA, search("7+2=9 vs 13, no. 4+9=13 vs 13, yes.", "4+9", "es")),             # the same in es
               (LIST, search("7+4=12 vs 13, no. 4+9=13 vs 13, yes.", "4+9")),                   # a wrong sum
               (LIST, search("7+6=13 vs 13, yes.", "4+9")),                                     # not the yes-pair
               (LIST, search("I know it.", "4+9"))]                                             # a guess
    rows, counts = trace_filter(samples, "test")
    assert [(r["completion"], r["language"], r["source"]) for r in rows] == [(good, "en", "test"), (bueno, "es", "test")]
    assert counts == {"sampled": 12, "wrong": 1, "bad_format": 1, "mixed_language": 1, "repetitive": 1,
                      "unfaithful": 5, "duplicate": 1, "kept": 2}


def test_rejection_sampling_and_distillation_share_the_trace_filter():
    from distill import distill_filter
    from evaluate import trace_filter
    from pipeline import rejection_filter
    samples = [(LIST, search("7+2=9 vs 13, no. 4+9=13 vs 13, yes.", "4+9")),
               (LIST, search("7+4=11 vs 13, no. 7+4=11 vs 13, no. 4+9=13 vs 13, yes.", "4+9")),
               (LISTA, search("7+4=11 vs 13, no. 4+9=13 vs 13, yes.", "4+9")),
               (LISTA, search("4+9=13 vs 13, yes.", "4+9", "es"))]
    for fn, source in ((rejection_filter, "stage2"), (distill_filter, "teacher")):
        rows, counts = fn(samples)
        assert (rows, counts) == trace_filter(samples, source)
        assert counts["unfaithful"] == counts["repetitive"] == counts["mixed_language"] == counts["kept"] == 1


def test_language_metrics_do_not_count_a_missing_chain_of_thought_as_mixing():
    """The language metrics read the plain fraction (rewards.language_fraction): a completion with no
    think block, or no words in it, mixes nothing and is not off-language, though it earns no
    language reward (rewards.language_consistency_reward 0.0)."""
    from evaluate import behaviour, off_language
    from rewards import language_consistency_reward
    for text in ("<answer>3+5</answer>", "<think></think><answer>3+5</answer>", "<think>7+1=8</think><answer>7+1</answer>"):
        assert language_consistency_reward(text, "es") == 0.0
        assert not mixes_languages(text) and not off_language(text, "es") and not off_language(text, "en")
        assert behaviour(text, "es")["lang_mix"] == 0.0 and behaviour(text, "es")["off_lang"] == 0.0


# ----------------------------------------------------------------------------- one held-out protocol

def test_no_tool_draws_its_own_held_out_set():
    """Every tool that reports held-out accuracy goes through evaluate.held_out_set (the same
    questions for every tool and seed): no other file of the project, notebooks included, calls
    tasks.test_set or samples the test split itself."""
    import glob
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    own = re.compile(r"\btest_set\(|sample_problems\([^)]*[\"']test[\"']")
    for path in sorted(glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "notebooks", "*.ipynb"))):
        name = os.path.basename(path)
        if name in ("tasks.py", "evaluate.py"):   # where the test split is defined, and the protocol
            continue
        with open(path, encoding="utf-8") as f:
            assert not own.search(f.read()), f"{name} draws its own held-out set: use evaluate.held_out_set"
    with open(os.path.join(root, "evaluate.py"), encoding="utf-8") as f:
        assert len(own.findall(f.read())) == 1                   # held_out_set's one call
    for name in ("grpo.py", "pipeline.py", "distill.py", "sft.py", "pretrain.py"):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            assert re.search(r"\b(held_out(_set)?|evaluate_checkpoints)\(", f.read()), name


def test_the_held_out_set_is_the_same_for_every_seed_and_a_prefix_for_fewer_questions():
    from evaluate import held_out_set
    from tasks import get_task
    for name in ("pairsum", "add", "code"):
        task = get_task(name)
        assert held_out_set(task, 20) == held_out_set(task, 50)[:20]


# ----------------------------------------------------------------------------- checkpoints into a table

def test_print_table_writes_the_compare_table_as_before(capsys):
    """evaluate.print_table with --compare's columns prints what compare's own f-strings printed."""
    from evaluate import TABLE, print_table
    rows = [{"model": "out/base", "pass@1": 0.25, "cons@k": 0.2, "pass@k": 0.5, "format": 1.0, "length": 41.25,
             "lang_mix": 0.0, "drift": float("nan"), "readable": 0.125},
            {"model": "out/r1/final_rl", "pass@1": 0.755, "cons@k": 0.91, "pass@k": 0.98, "format": 0.995,
             "length": 87.5, "lang_mix": 0.01, "drift": 0.04, "readable": 0.9}]
    width = max(len(r["model"]) for r in rows)
    print_table(rows, [("checkpoint", "model", f"<{width}", "")] + [(key, key, ">8", ".3f") for key in TABLE])
    old = [f"{'checkpoint':<{width}} " + " ".join(f"{k:>8}" for k in TABLE)]  # compare's format before the helper
    old += [f"{r['model']:<{width}} " + " ".join(f"{r[k]:>8.3f}" for k in TABLE) for r in rows]
    assert capsys.readouterr().out.splitlines() == old


def test_print_table_writes_missing_values_and_strings():
    from evaluate import print_table
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table([{"name": "a", "n": 1234, "x": 0.5}, {"name": "bb", "n": None}],
                    [("name", "name", "<4", ""), ("n", "n", ">6", ","), ("x", "x", ">5", ".2f")])
    assert out.getvalue().splitlines() == ["name      n     x", "a     1,234  0.50", "bb        -     -"]


@pytest.mark.slow
def test_evaluate_checkpoints_is_the_held_out_protocol(tmp_path):
    """A row of evaluate_checkpoints holds exactly evaluate.held_out's metrics for that checkpoint,
    on the task it was trained on (or the one given)."""
    import common
    from evaluate import evaluate_checkpoints, held_out
    from tasks import AdditionTask, get_task
    torch.manual_seed(0)
    tok = get_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=384))
    common.save_checkpoint(str(tmp_path), model, step=1, config={"task": "add", "min_digits": 1, "max_digits": 1})
    rows = evaluate_checkpoints([("tiny", str(tmp_path))], 2, 2, 5, "cpu", progress=False)
    expected = held_out(model.eval(), tok, AdditionTask(1, 1), 2, 2, 5)
    same = {"model": "tiny", "dir": str(tmp_path), "task": str(AdditionTask(1, 1)), "params": model.num_params(),
            **expected}
    assert json.dumps(rows[0], sort_keys=True) == json.dumps(same, sort_keys=True)  # NaN == NaN as text
    given = evaluate_checkpoints([("tiny", str(tmp_path))], 2, 1, 5, "cpu", task=get_task("pairsum"), progress=False)
    assert given[0]["task"] == str(get_task("pairsum"))


def test_sample_training_set_is_sample_k_on_training_questions_ending_in_eot(tmp_path):
    import common
    from evaluate import sample_k, sample_training_set
    from tasks import PairSumTask, sample_problems, split_of
    from tokenizer import EOT
    torch.manual_seed(0)
    tok = get_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=64))
    common.save_checkpoint(str(tmp_path), model, step=1, config={"task": "pairsum"})
    samples, ids = sample_training_set(str(tmp_path), PairSumTask(), 3, 2, 6, (11, 12), str(tmp_path / "d.partial"),
                                       "cpu")
    problems = sample_problems(PairSumTask(), 3, "train", seed=11)
    texts, expected_ids = sample_k(model.eval(), tok, problems, 2, 6, 12)
    assert ids == expected_ids and [p for p, _ in samples] == [p for p in problems for _ in range(2)]
    assert [t for _, t in samples] == [t if t.endswith(EOT) else t + EOT for t in texts]
    assert all(split_of(p) == "train" for p, _ in samples) and not (tmp_path / "d.partial").exists()
