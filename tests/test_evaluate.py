"""evaluate.py: the paper's metrics against hand-computed values, and an end-to-end run."""
import math

import pytest
import torch

from evaluate import completion_stats, evaluate, mixes_languages, reasons, summarize
from model import GPT, GPTConfig
from tasks import Problem, format_completion
from tokenizer import get_tokenizer


def stat(correct, key, reasons_=0.0, length=10):
    return {"correct": correct, "format": 1.0, "length": length, "reasons": reasons_, "self_check": 0.0,
            "mixed": 0.0, "key": key}


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
    assert reasons(traced) and not reasons(quick)
    assert not mixes_languages(traced)
    assert mixes_languages(format_completion("472+385, llevo 0: 2+5+0=07, so far 7.", "857"))


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


def test_cli_evaluates_the_task_the_checkpoint_was_trained_on(tmp_path):
    from conftest import ROOT, run_script

    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--min-digits", "2", "--max-digits", "2",
               "--out-dir", tmp_path)
    out = run_script(f"{ROOT}/evaluate.py", "--ckpt", tmp_path, "--n-problems", "2", "--k", "1",
                     "--max-new-tokens", "4").stdout
    assert "AdditionTask(min_digits=2, max_digits=2)" in out and "forced_reason_pass@1" in out


def test_bad_flags_exit_2_in_one_line(tmp_path, capsys):
    from common import config_from_args
    from evaluate import EvalConfig, check_files

    for argv, message in [(["--k", "0"], "--k must be > 0"), (["--top-p", "1.5"], "--top-p must lie in (0, 1]"),
                          (["--task", "nope"], "--task must be one of"),
                          (["--ckpt", str(tmp_path / "missing")], "no checkpoint there")]:
        with pytest.raises(SystemExit) as exit_info:
            config_from_args(EvalConfig, argv, check=check_files)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err, (argv, err)
