"""pipeline.py: the cold-start cleaner and the rejection-sampling filter on hand-made samples, and
the whole pipeline on the smoke preset (every stage's entry point, then a rerun that skips them all)."""
import json
import os

import pytest

from pipeline import PipelineConfig, clean_r1_zero, rejection_filter
from tasks import Problem
from tokenizer import EOT

EN = Problem("pairsum", "Which two of 7 1 3 5 add up to 8?", "", numbers=(7, 1, 3, 5), target=8, language="en")
ES = Problem("pairsum", "¿Qué dos de 7 1 3 5 suman 8?", "", numbers=(7, 1, 3, 5), target=8, language="es")


def test_problems_are_judged_as_intended():
    from rewards import accuracy_reward
    assert accuracy_reward("<think>x</think><answer>3+5</answer>", EN.as_dict()) == 1.0
    assert accuracy_reward("<think>x</think><answer>7+3</answer>", EN.as_dict()) == 0.0


@pytest.mark.parametrize("problem,completion,expected", [
    # a false "no" is corrected: the search stops at the first pair that makes the target
    (EN, "<think>7+1=8 vs 8, no. 7+3=10 vs 8, no. 1+7=8 vs 8, yes.</think><answer>1+7</answer>",
     "<think>7+1=8 vs 8, yes. so the answer is 7+1.</think><answer>7+1</answer>" + EOT),
    # a correct English search with a repeated try and a number not in the list: both dropped
    (EN, "<think>7+3=10 vs 8, no. 7+3=10 vs 8, no. 7+9=16 vs 8, no. 3+5=8 vs 8, yes.</think><answer>3+5</answer>",
     "<think>7+3=10 vs 8, no. 3+5=8 vs 8, yes. so the answer is 3+5.</think><answer>3+5</answer>" + EOT),
    # English working on a Spanish question: rewritten in Spanish
    (ES, "<think>7+3=10 vs 8, no. 3+5=8 vs 8, yes.</think><answer>5+3</answer>",
     "<think>7+3=10 contra 8, no. 3+5=8 contra 8, sí. entonces la respuesta es 3+5.</think><answer>3+5</answer>" + EOT),
    # wrong answer, a right answer never found by a try, a give-up: nothing to clean
    (EN, "<think>7+3=10 vs 8, no.</think><answer>7+3</answer>", None),
    (EN, "<think>I know it.</think><answer>3+5</answer>", None),
    (EN, "<think>7+3=10 vs 8, no. I give up.</think><answer>7+3</answer>", None),
])
def test_clean_r1_zero(problem, completion, expected):
    assert clean_r1_zero(completion, problem) == expected


def test_clean_r1_zero_stops_at_the_first_hit():
    completion = "<think>3+5=8 vs 8, yes. 7+1=8 vs 8, yes.</think><answer>3+5</answer>"
    assert clean_r1_zero(completion, EN) == \
        "<think>3+5=8 vs 8, yes. so the answer is 3+5.</think><answer>3+5</answer>" + EOT


def test_rejection_filter_keeps_exactly_the_clean_samples():
    good_en = "<think>7+1=8 vs 8, yes. so the answer is 7+1.</think><answer>7+1</answer>" + EOT
    good_es = "<think>7+1=8 contra 8, sí.</think><answer>7+1</answer>" + EOT
    samples = [
        (EN, good_en),                                                                  # kept
        (EN, good_en),                                                                  # duplicate
        (ES, good_es),                                                                  # kept
        (ES, good_en),                                                                  # English on es: mixed
        (EN, "<think>7+3=10 vs 8, no.</think><answer>7+3</answer>"),                   # wrong
        (EN, "<think>7+1=8 vs 8, yes.</think><answer>7+1</answer> extra"),             # bad format
        (EN, "<think>7+3=10 vs 8, no. 7+3=10 vs 8, no. 7+1=8 vs 8, yes.</think><answer>7+1</answer>"),  # repeats
        (EN, "<think>7+3=10 vs 8, no. I give up.</think><answer>3+5</answer>"),        # gives up (lucky)
        (ES, good_es.replace("7+1", "1+7")),                                            # kept: another text
    ]
    rows, counts = rejection_filter(samples)
    assert [(r["prompt"], r["completion"]) for r in rows] == [
        (f"<|user|>{EN.question}<|assistant|>", good_en), (f"<|user|>{ES.question}<|assistant|>", good_es),
        (f"<|user|>{ES.question}<|assistant|>", good_es.replace("7+1", "1+7"))]
    assert counts == {"sampled": 9, "wrong": 1, "bad_format": 1, "mixed_language": 1, "repetitive": 2,
                      "unfaithful": 0, "duplicate": 1, "kept": 3}


def test_the_table_prints_as_its_own_f_strings_did(capsys):
    """pipeline.TABLE_COLUMNS through evaluate.print_table: the lines table() printed before the
    shared helper (its f-strings copied here), for an RL stage that reached R1-Zero, one that
    never did, and a model that is not an RL run."""
    from evaluate import print_table
    from pipeline import TABLE_COLUMNS
    rows = [{"model": "base", "pass@1": 0.224, "cons@k": 0.22, "length": 41.37, "lang_mix": 0.0, "drift": 0.5,
             "format": 0.99, "readable": 0.0, "rl": False, "rl_steps_to_target": None},
            {"model": "stage 2: reasoning RL", "pass@1": 0.7555, "cons@k": 0.905, "length": 88.25, "lang_mix": 0.025,
             "drift": 0.0, "format": 1.0, "readable": 0.93, "rl": True, "rl_steps_to_target": 15},
            {"model": "stage 4: final RL", "pass@1": 0.5, "cons@k": 0.5, "length": 60.0, "lang_mix": 0.125,
             "drift": float("nan"), "format": 1.0, "readable": 0.5, "rl": True, "rl_steps_to_target": None}]
    steps = {id(r): "-" if not r["rl"] else "never" if r["rl_steps_to_target"] is None else str(r["rl_steps_to_target"])
             for r in rows}
    print_table([{**r, "rl_steps_text": steps[id(r)]} for r in rows], TABLE_COLUMNS)
    old = [f"{'model':<24} {'pass@1':>7} {'cons@k':>7} {'length':>7} {'mixing':>7} {'drift':>6} {'format':>7} "
           f"{'readable':>8} {'RL steps':>8}"]
    old += [f"{r['model']:<24} {r['pass@1']:>7.3f} {r['cons@k']:>7.2f} {r['length']:>7.1f} {r['lang_mix']:>7.3f} "
            f"{r['drift']:>6.2f} {r['format']:>7.3f} {r['readable']:>8.3f} {steps[id(r)]:>8}" for r in rows]
    assert capsys.readouterr().out.splitlines() == old


def test_bad_flags():
    for kwargs, message in [({"language_weights": "0,x"}, "--language-weights"),
                            ({"text_share": 1.5}, "--text-share"), ({"stage_preset": "huge"}, "--stage-preset")]:
        with pytest.raises(ValueError, match=message):
            PipelineConfig(**kwargs)


def tiny_checkpoint(path, seed):
    import torch
    import common
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    common.save_checkpoint(str(path), GPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=8,
                                                    max_seq_len=8)), step=seed)


def test_a_dataset_is_rebuilt_when_its_source_checkpoint_or_config_changes(tmp_path):
    """The cold-start set records the R1-Zero checkpoint it was sampled from: reused while that
    checkpoint and the config are the same, rebuilt (with a line saying why) once either changes,
    and a file with no record (a copy from elsewhere) is never reused."""
    import common
    r1_zero, path, built = tmp_path / "grpo", str(tmp_path / "data" / "cold_start.jsonl"), []

    def make(provenance):
        built.append(provenance["source_sha256"])
        common.write_dataset(path, [{"prompt": "p", "completion": f"c{len(built)}"}], {"rows": 1}, provenance)
        return {"rows": 1}

    tiny_checkpoint(r1_zero, seed=0)
    config = {"seed": 0, "questions": 4}
    common.dataset("cold", path, make, source=str(r1_zero), config=config)
    common.dataset("cold", path, make, source=str(r1_zero), config=config)
    assert len(built) == 1                                                 # same inputs: reused
    record = common.read_dataset_stats(path)["provenance"]
    assert record["source_sha256"] == common.checkpoint_sha256(str(r1_zero)) and record["config"]["questions"] == 4
    assert {"command", "commit", "date"} <= set(record) and "code_sha256" in record["config"]
    tiny_checkpoint(r1_zero, seed=1)                                       # another R1-Zero model
    common.dataset("cold", path, make, source=str(r1_zero), config=config)
    assert len(built) == 2 and built[1] != built[0]
    common.dataset("cold", path, make, source=str(r1_zero), config={**config, "questions": 5})
    assert len(built) == 3
    with open(path + ".stats.json", "w") as f:                             # a file with no record
        f.write("{}")
    common.dataset("cold", path, make, source=str(r1_zero), config={**config, "questions": 5})
    assert len(built) == 4


def test_a_stage_that_started_from_another_model_or_data_is_redone(tmp_path, capsys):
    """A finished stage is skipped only while its checkpoint records the same starting model and
    data as this run's; otherwise it is redone from the start."""
    import json
    import common
    init, data, out, runs = tmp_path / "init", tmp_path / "rows.jsonl", tmp_path / "stage", []
    tiny_checkpoint(init, seed=0)
    data.write_text('{"prompt": "p", "completion": "c"}\n')

    def fn(resume):  # what sft.run does: a checkpoint that records what it started from
        runs.append(resume)
        common.save_checkpoint(str(out), common.load_model(str(init))[0], step=1,
                               init_sha256=common.checkpoint_sha256(str(init)), data_sha256=common.file_sha256(str(data)))
        return {}

    common.run_stage("s", str(out), fn, init=str(init), data=str(data))
    common.run_stage("s", str(out), fn, init=str(init), data=str(data))
    assert runs == [False]                                                 # done, same inputs: skipped
    data.write_text('{"prompt": "p", "completion": "other"}\n')
    common.run_stage("s", str(out), fn, init=str(init), data=str(data))
    assert runs == [False, False] and "another starting data" in capsys.readouterr().out
    assert len(list(tmp_path.glob("stage.stale-*"))) == 1               # the old stage is moved aside, not deleted
    tiny_checkpoint(init, seed=3)
    common.run_stage("s", str(out), fn, init=str(init), data=str(data))
    assert runs == [False, False, False] and json.loads((out / "done.json").read_text())["result"] == {}
    # a directory the user named (R1-Zero's) is never moved: the run stops with one line
    tiny_checkpoint(init, seed=4)
    with pytest.raises(SystemExit, match="records another starting model"):
        common.run_stage("s", str(out), fn, init=str(init), data=str(data), given=True)
    assert (out / "done.json").exists()


@pytest.mark.slow
def test_smoke_pipeline_runs_every_stage_then_skips_them(tmp_path):
    """Smoke models get nothing right, so rejection sampling stops the first run with one clear
    error; given datasets (--reference-data) the pipeline runs to its table, each stage from the
    checkpoint the paper's figure says (1 from the base, 2 from 1, 3 from the base, 4 from 3, each
    recorded by SHA-256 in the stage's checkpoint); a third run skips every stage and rewrites no
    checkpoint."""
    import subprocess
    import sys
    import common
    from conftest import ROOT, run_script
    flags = ["--stage-preset", "smoke", "--base", tmp_path / "base", "--r1-zero", tmp_path / "grpo",
             "--out-root", tmp_path / "r1", "--data-dir", tmp_path / "data", "--cold-questions", "4",
             "--cold-k", "2", "--rs-questions", "4", "--rs-k", "2", "--rl-steps", "2", "--eval-problems", "2",
             "--eval-k", "2", "--language-weights", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, f"{ROOT}/pipeline.py", *map(str, flags)], capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=300)
    assert first.returncode == 1 and "nothing to fine-tune the base on" in first.stderr
    assert "Traceback" not in first.stderr
    for name in ("cold_start", "reasoning_rl"):
        assert (tmp_path / "r1" / name / "done.json").exists(), name
    cold = [json.loads(line) for line in (tmp_path / "data" / "cold_start.jsonl").read_text().splitlines()]
    assert len(cold) == 4 and all(r["source"] in ("r1_zero_cleaned", "template") for r in cold)
    provenance = common.read_dataset_stats(str(tmp_path / "data" / "cold_start.jsonl"))["provenance"]
    assert provenance["source_sha256"] == common.checkpoint_sha256(str(tmp_path / "grpo"))
    reference = tmp_path / "reference"       # given datasets: the cold rows reversed (other data), and as stage 3's
    reference.mkdir()
    lines = (tmp_path / "data" / "cold_start.jsonl").read_text().splitlines(keepends=True)
    for name in ("cold_start.jsonl", "rejection_sampled.jsonl"):
        (reference / name).write_text("".join(lines[::-1]))
    flags += ["--reference-data", reference]
    out = run_script(f"{ROOT}/pipeline.py", *flags, timeout=300).stdout
    assert out.count("done already") == 1 and out.count("the reference copy") == 2   # R1-Zero
    assert "stage 1: cold-start SFT of the base model: " in out and "another starting data" in out
    for name in ("cold_start", "reasoning_rl", "rejection_sft", "final_rl", "reasoning_rl-L0"):
        assert (tmp_path / "r1" / name / "done.json").exists(), name
    started = {name: common.load_checkpoint(str(tmp_path / "r1" / name))["init_sha256"] for name in pipeline_stages()}
    sha = lambda name: common.checkpoint_sha256(str(tmp_path / name))  # noqa: E731
    assert common.load_checkpoint(str(tmp_path / "grpo"))["init_sha256"] == sha("base")
    assert started == {"cold_start": sha("base"), "reasoning_rl": sha("r1/cold_start"),
                       "rejection_sft": sha("base"), "final_rl": sha("r1/rejection_sft")}
    rows = json.loads((tmp_path / "r1" / "table.json").read_text())
    assert [r["model"] for r in rows] == ["base", "R1-Zero", "stage 1: cold start", "stage 2: reasoning RL",
                                          "stage 3: rejection SFT", "stage 4: final RL"]
    assert (tmp_path / "r1" / "language_tradeoff_cold_start.png").exists() and "pipeline:" in out
    mtimes = {p: os.path.getmtime(p) for p in (tmp_path / "r1").glob("*/ckpt.pt")}
    again = run_script(f"{ROOT}/pipeline.py", *flags, timeout=300).stdout
    assert again.count("done already") == 6 and "redone" not in again
    assert all(os.path.getmtime(p) == t for p, t in mtimes.items())


def pipeline_stages():
    from pipeline import STAGES
    return STAGES
