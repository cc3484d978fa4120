"""distill.py: the teacher-trace filter on a hand-made batch, and the script end to end on smoke models."""
import json

import pytest

from distill import distill_filter
from tasks import Problem
from tokenizer import EOT

EN = Problem("pairsum", "Which two of 7 1 3 5 add up to 8?", "", numbers=(7, 1, 3, 5), target=8, language="en")


def test_distill_filter_keeps_the_correct_well_formed_unique_traces():
    good = "<think>7+1=8 vs 8, yes. so the answer is 7+1.</think><answer>7+1</answer>" + EOT
    samples = [(EN, good), (EN, good),                                         # kept, duplicate
               (EN, "<think>7+3=10 vs 8, no.</think><answer>7+3</answer>" + EOT),  # wrong
               (EN, "<think>x</think><answer>3+5</answer> and more"),         # right, bad format
               (EN, "<think>3+5=8 vs 8, yes.</think><answer>3+5</answer>" + EOT)]  # kept: another trace
    rows, counts = distill_filter(samples)
    assert [r["completion"] for r in rows] == [good, samples[-1][1]]
    assert counts == {"sampled": 5, "wrong": 1, "bad_format": 1, "mixed_language": 0, "repetitive": 0,
                      "unfaithful": 0, "duplicate": 1, "kept": 2}


def test_the_table_prints_as_its_own_f_strings_did(capsys):
    """distill.TABLE_COLUMNS through evaluate.print_table: the lines table() printed before the
    shared helper (its f-strings copied here), arms with a cost and arms without one."""
    from distill import DISTILLED_ARM, RL_ARM, TABLE_COLUMNS
    from evaluate import print_table
    rows = [{"model": "teacher", "params": 772224, "pass@1": 0.75, "cons@k": 0.8, "length": 80.25, "format": 1.0},
            {"model": RL_ARM, "params": 330144, "pass@1": 0.618, "cons@k": 0.705, "length": 70.5, "format": 0.995,
             "seconds": 131.4, "sampled": 380000, "trained": 380000},
            {"model": DISTILLED_ARM, "params": 330144, "pass@1": 0.765, "cons@k": 0.8, "length": 77.0, "format": 1.0,
             "seconds": 255.6, "sampled": 830123, "trained": 1740000}]
    print_table(rows, TABLE_COLUMNS)
    old = [f"{'model':<26} {'params':>8} {'pass@1':>7} {'cons@k':>7} {'length':>7} {'format':>7} "
           f"{'seconds':>8} {'sampled':>10} {'trained':>10}"]
    for r in rows:
        cost = f"{r['seconds']:>8.0f} {r['sampled']:>10,} {r['trained']:>10,}" if "seconds" in r else \
            f"{'-':>8} {'-':>10} {'-':>10}"
        old.append(f"{r['model']:<26} {r['params']:>8,} {r['pass@1']:>7.3f} {r['cons@k']:>7.2f} {r['length']:>7.1f} "
                   f"{r['format']:>7.3f} {cost}")
    assert capsys.readouterr().out.splitlines() == old


@pytest.mark.slow
def test_distill_script_on_smoke_models(tmp_path):
    """A random teacher gets nothing right: one clear error. Given traces (--reference-data), the
    student is fine-tuned on them and the table printed; an RL arm that did not start from the
    student's base (here: the teacher's GRPO) is left out of the table, with a line saying why."""
    import subprocess
    import sys
    from conftest import ROOT, run_script
    from corpus import readable_search
    from tasks import PairSumTask, format_prompt, sample_problems
    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--out-dir", tmp_path / "teacher")
    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--model", "pico", "--out-dir", tmp_path / "student")
    flags = ["--teacher", tmp_path / "teacher", "--student-base", tmp_path / "student", "--rl-student",
             tmp_path / "none", "--data", tmp_path / "d.jsonl", "--out-dir", tmp_path / "dist", "--questions", "4",
             "--k", "2", "--max-new-tokens", "8", "--eval-problems", "2", "--eval-k", "1", "--epochs", "1"]
    failed = subprocess.run([sys.executable, f"{ROOT}/distill.py", *map(str, flags)], capture_output=True, text=True,
                            cwd=ROOT)
    assert failed.returncode == 1 and "nothing to distill" in failed.stderr and "Traceback" not in failed.stderr
    rows = [{"prompt": format_prompt(p.question), "completion": readable_search(p, p.language) + EOT}
            for p in sample_problems(PairSumTask(), 4, "train", seed=1)]
    (tmp_path / "given.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_script(f"{ROOT}/grpo.py", "--preset", "smoke", "--init-from", tmp_path / "teacher", "--out-dir", tmp_path / "rl")
    flags[flags.index(tmp_path / "none")] = tmp_path / "rl"
    out = run_script(f"{ROOT}/distill.py", *flags, "--reference-data", tmp_path / "given.jsonl").stdout
    assert "the reference copy" in out and "student distilled (SFT)" in out
    assert "did not start from the student's base" in out and "student + own RL" not in out.split("held-out")[-1]
    assert (tmp_path / "dist" / "ckpt.pt").exists()


@pytest.mark.slow
def test_ctrl_c_during_the_students_sft_saves_and_a_rerun_resumes_exactly(tmp_path, monkeypatch, capsys):
    """Ctrl-C at the student's third SFT step: a checkpoint is saved, the message says how to go on,
    and running the same command again finishes with the log of an uninterrupted run (timings aside)."""
    import common
    import distill
    from conftest import ROOT, raising_on_call, run_script
    from corpus import readable_search
    from tasks import PairSumTask, format_prompt, sample_problems
    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--out-dir", tmp_path / "teacher")
    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--model", "pico", "--out-dir", tmp_path / "student")
    rows = [{"prompt": format_prompt(p.question), "completion": readable_search(p, p.language) + EOT}
            for p in sample_problems(PairSumTask(), 40, "train", seed=1)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def flags(out):
        return [str(x) for x in ["--teacher", tmp_path / "teacher", "--student-base", tmp_path / "student",
                                 "--rl-student", tmp_path / "none", "--reference-data", tmp_path / "d.jsonl", "--out-dir",
                                 tmp_path / out, "--eval-problems", "2", "--eval-k", "1", "--epochs", "4"]]

    distill.main(flags("full"))
    real = common.optimizer_step
    monkeypatch.setattr(common, "optimizer_step", raising_on_call(real, 3, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        distill.main(flags("cut"))
    out = capsys.readouterr().out
    assert "interrupted at step 2" in out and "run the same command again to resume" in out
    assert common.load_checkpoint(str(tmp_path / "cut"))["step"] == 2
    monkeypatch.setattr(common, "optimizer_step", real)
    distill.main(flags("cut"))

    def log(d):
        return [{k: v for k, v in r.items() if k != "dt"} for r in common.read_metrics(str(tmp_path / d / "metrics.jsonl"))]
    assert log("cut") == log("full") and len(log("full")) == 5   # 40 rows x 4 epochs / 32 rows per step


def test_rl_cost_counts_each_sampled_token_once_and_each_trained_token_per_pass(tmp_path):
    """mu = 2: two records per RL step (pass 1 and 2) with the same rollouts. Sampled tokens are
    mean length x rollouts once per step; trained tokens once per pass."""
    import common
    import distill
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=8, max_seq_len=8))
    common.save_checkpoint(str(tmp_path), model, step=2, config={"prompts_per_step": 2, "group_size": 4})
    records = [{"kind": "train", "step": s, "pass": p, "len": length, "dt": 1.0}
               for s, length in ((1, 10.0), (2, 20.0)) for p in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cost = distill.run_cost(str(tmp_path))
    assert cost == {"seconds": 4.0, "sampled": (10 + 20) * 8, "trained": 2 * (10 + 20) * 8}
