"""pretrain.py: the CLI, a 2-step run that writes a loadable checkpoint, resumable data, learning."""
import dataclasses
import itertools

import pytest
import torch

import common
import pretrain
from conftest import ROOT, raising_on_call, run_script
from model import GPT, GPTConfig
from tasks import task_from_config
from tokenizer import get_tokenizer


def smoke_cfg(tmp_path, **kw):
    return pretrain.PretrainConfig(**{**pretrain.PRESETS["smoke"], "out_dir": str(tmp_path), **kw})


@pytest.mark.slow
def test_help_lists_every_field():
    out = run_script(f"{ROOT}/pretrain.py", "--help").stdout
    for f in dataclasses.fields(pretrain.PretrainConfig):
        assert "--" + f.name.replace("_", "-") in out
    assert "--preset" in out and "share of task documents that answer at once" in out


@pytest.mark.slow
def test_two_step_run_writes_a_loadable_checkpoint(tmp_path):
    pretrain.run(smoke_cfg(tmp_path))
    model, ckpt = common.load_model(str(tmp_path))
    assert ckpt["step"] == 2 and ckpt["config"]["steps"] == 2
    assert len(common.read_metrics(str(tmp_path / "metrics.jsonl"))) == 2
    tokens = torch.randint(0, model.config.vocab_size, (1, 8))
    assert model(tokens).shape == (1, 8, model.config.vocab_size)


def test_batches_are_a_pure_function_of_the_step():
    """A resumed run (start_step=3) sees exactly the batches an uninterrupted run saw."""
    cfg = pretrain.PretrainConfig(steps=5, batch_size=2, seq_len=64)
    tok, task = get_tokenizer(), task_from_config(cfg)
    full = [b[0][0] for b in itertools.islice(pretrain.batches(cfg, tok, task, rank=0, world_size=1), 5)]
    resumed = [b[0][0] for b in itertools.islice(pretrain.batches(cfg, tok, task, 0, 1, start_step=3), 2)]
    for a, b in zip(full[3:], resumed):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    x, y = full[0]["x"], full[0]["y"]
    assert full[0]["n_targets"] == y.numel()          # one process: the whole batch's targets
    assert torch.equal(x[:, 1:], y[:, :-1])               # targets are inputs shifted by one
    assert (x[:, 0] == tok.special_ids["<|user|>"]).sum() + (x[:, 0] < 256).sum() == len(x)  # rows start a document
    other_rank = next(pretrain.batches(cfg, tok, task, rank=1, world_size=2))[0][0]["x"][0]
    assert not torch.equal(other_rank, x[:1])


def test_loss_shares_add_up_to_the_batch_mean_cross_entropy():
    """Each micro-batch's loss is its share: summed over micro-batches, the whole batch's mean
    next-token cross-entropy over its targets (-1 = none), as a per-token loop computes it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("pico", vocab_size=50, max_seq_len=32))
    x, y = torch.randint(0, 50, (4, 12)), torch.randint(0, 50, (4, 12))   # (B, T), (B, T)
    y[1, 7:], y[3, :5] = -1, -1
    n = int((y != -1).sum())
    shares = [pretrain.loss_fn(model, {"x": x[i:i + 2], "y": y[i:i + 2], "n_targets": n})[0] for i in (0, 2)]
    logits = model(x)                                                        # (B, T, V)
    terms = [-torch.log_softmax(logits[b, t], -1)[y[b, t]] for b in range(4) for t in range(12) if y[b, t] != -1]
    assert len(terms) == n and sum(shares).item() == pytest.approx((sum(terms) / n).item(), rel=1e-5)


@pytest.mark.slow
def test_short_seeded_run_learns(tmp_path):
    cfg = smoke_cfg(tmp_path, steps=40, batch_size=8, seq_len=64, lr=1e-2, warmup_steps=5, log_every=100)
    pretrain.run(cfg)
    losses = [r["loss"] for r in common.read_metrics(str(tmp_path / "metrics.jsonl"))]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


@pytest.mark.slow
def test_curriculum_phase_1_runs_until_mastery_then_phase_2_and_resumes(tmp_path, capsys):
    """An unreachable mastery bar: phase 1 stops at max_warm_steps with a warning, phase 2 follows
    with the lr on a cosine from its peak; a resumed run continues phase 2 and skips phase 1."""
    cfg = smoke_cfg(tmp_path, mastery=1.0, mastery_every=2, max_warm_steps=4, steps=2)
    pretrain.run(cfg)
    out = capsys.readouterr().out
    assert out.count("phase 1 (worked traces only)") == 2 and "WARNING: the trace was not mastered" in out
    _, ckpt = common.load_model(str(tmp_path))
    assert ckpt["step"] == 6 and ckpt["config"]["mastered_at"] == 4
    lrs = [r["lr"] for r in common.read_metrics(str(tmp_path / "metrics.jsonl"))]
    assert lrs[1:5] == [cfg.lr] * 4 and lrs[5] < cfg.lr     # constant after warmup, then the cosine
    pretrain.run(dataclasses.replace(cfg, resume=True, steps=4))
    assert "phase 1" not in capsys.readouterr().out
    _, ckpt = common.load_model(str(tmp_path))
    assert ckpt["step"] == 8 and len(common.read_metrics(str(tmp_path / "metrics.jsonl"))) == 8


def test_bad_flags_exit_2_in_one_line_before_any_work(tmp_path, capsys):
    for argv, message in [(["--steps", "-1"], "--steps must be > 0"), (["--p-quick", "1.5"], "--p-quick must lie in [0, 1]"),
                          (["--model", "huge"], "--model must be one of"), (["--task", "countdown"], "--task must be one of add, pairsum"),
                          (["--seq-len", "1024"], "--seq-len 1024 > --max-seq-len 512"),
                          (["--max-seq-len", "300", "--seq-len", "256"], "the evaluation budget 320 + the longest prompt"),
                          (["--max-warm-steps", "0"], "--max-warm-steps must be > 0"),   # it used to loop forever
                          (["--give-up", "1.5"], "--give-up must lie in [0, 1]"),
                          (["--task", "add", "--p-trace", "0"], "--p-trace is 0"),
                          (["--resume"], "--resume: no checkpoint"),
                          (["--min-digits", "2"], "--min-digits: --task pairsum has no such knob")]:
        with pytest.raises(SystemExit) as exit_info:
            common.config_from_args(pretrain.PretrainConfig, [*argv, "--out-dir", str(tmp_path / "x")],
                                    presets=pretrain.PRESETS, check=pretrain.check_files)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x").exists()


def test_default_out_dir_follows_the_seed():
    assert pretrain.PretrainConfig().out_dir == "out/base" and pretrain.PretrainConfig(seed=3).out_dir == "out/base-s3"


@pytest.mark.slow
def test_resume_falls_back_to_the_previous_checkpoint_when_the_latest_is_corrupt(tmp_path, capsys, monkeypatch):
    """Checkpoints every step; a run that crashes in step 5 (as under SIGKILL: nothing saved) has its
    latest checkpoint (step 4) damaged: --resume names it, falls back to step 3's, drops the log
    records after it, and the finished log equals an uninterrupted run's."""
    pretrain.run(smoke_cfg(tmp_path / "full", steps=6, ckpt_every=1))
    cut = smoke_cfg(tmp_path / "cut", steps=6, ckpt_every=1)
    real = common.optimizer_step
    monkeypatch.setattr(common, "optimizer_step", raising_on_call(real, 5, RuntimeError("simulated crash")))
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain.run(cut)
    monkeypatch.setattr(common, "optimizer_step", real)
    latest = tmp_path / "cut" / "ckpt.pt"
    assert common.load_checkpoint(str(latest))["step"] == 4
    latest.write_bytes(latest.read_bytes()[:1000])                         # truncated, as by a full disk
    capsys.readouterr()
    pretrain.run(dataclasses.replace(cut, resume=True))
    out = capsys.readouterr().out
    assert f"WARNING: checkpoint {latest} is corrupt" in out and "ckpt.prev.pt (step 3)" in out
    assert "resumed from" in out and "at step 3" in out

    def log(d):
        return [{k: v for k, v in r.items() if k != "dt"} for r in common.read_metrics(str(tmp_path / d / "metrics.jsonl"))]
    assert log("cut") == log("full") and len(log("full")) == 6


def test_a_base_of_another_recipe_is_refused_in_one_line(tmp_path, capsys):
    """ensure_base_model (what grpo.py, pipeline.py, distill.py and the notebooks call) never reuses a
    base model another pretraining recipe made; SFT and RL checkpoints are not base models: no check."""
    model = GPT(GPTConfig(vocab_size=get_tokenizer().vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=8,
                          max_seq_len=8))
    made = {"max_warm_steps": 1500}
    for config, refused in [({**made, "recipe": pretrain.RECIPE}, False), ({**made, "recipe": "bpe128-adamw"}, True),
                            (made, True), ({"steps": 40, "kl_beta": 0.04}, False)]:
        common.save_checkpoint(str(tmp_path), model, config=config)
        if refused:
            with pytest.raises(ValueError, match=f"another pretraining recipe .*mv {tmp_path} {tmp_path}.old"):
                pretrain.ensure_base_model(str(tmp_path), steps=1)
        else:
            pretrain.ensure_base_model(str(tmp_path), steps=1)  # reused as it is: no pretraining
    assert "pretraining one there" not in capsys.readouterr().out
    assert common.load_checkpoint(str(tmp_path))["config"] == {"steps": 40, "kl_beta": 0.04}


def test_pretraining_saves_its_recipe_and_uses_muon_for_the_blocks(tmp_path):
    cfg = smoke_cfg(tmp_path)
    pretrain.run(cfg)
    assert common.load_checkpoint(str(tmp_path))["config"]["recipe"] == pretrain.RECIPE
    model = GPT(GPTConfig(vocab_size=get_tokenizer().vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=8,
                          max_seq_len=8))
    opt = common.make_optimizer(model, cfg.lr, cfg.weight_decay, muon_lr=cfg.muon_lr)
    muon = [g for g in opt.param_groups if not g["adamw"]][0]["params"]
    blocks = {id(p) for n, p in model.named_parameters() if n.startswith("layers.") and p.dim() == 2}
    assert {id(p) for p in muon} == blocks
