"""common.py: LR schedule, flags from a dataclass, checkpoints, the training loop, and DDP on gloo."""
import io
import ast
import math
import os
import re
import sys
import textwrap
import types
from dataclasses import dataclass

import pytest
import torch

import common
from conftest import run_script
from common import LoopConfig, config_from_args, lr_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- LR schedule

def slow_lr(step, max_lr, warmup, total, min_ratio):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return max_lr * min_ratio
    frac = (step - warmup) / (total - warmup)
    min_lr = max_lr * min_ratio
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * frac)) / 2


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (10, 100)])
def test_lr_at_matches_reference(warmup, total):
    for step in range(total + 3):
        assert lr_at(step, 1e-3, warmup, total, 0.1) == pytest.approx(slow_lr(step, 1e-3, warmup, total, 0.1))
    assert lr_at(warmup, 1e-3, warmup, total, 0.1) == pytest.approx(1e-3)   # peak right after warmup
    assert lr_at(total, 1e-3, warmup, total, 0.1) == pytest.approx(1e-4)    # floor at the end


# ----------------------------------------------------------------------------- flags

@dataclass
class DemoConfig:
    steps: int = 10             # how many steps
    lr: float = 1e-3            # peak learning rate
    name: str = "run"           # a name
    use_kl: bool = True         # turn the KL term on
    limit: int | None = None    # optional cap


def test_config_from_args_types_defaults_and_help(capsys):
    cfg = config_from_args(DemoConfig, [])
    assert cfg == DemoConfig()
    cfg = config_from_args(DemoConfig, ["--steps", "5", "--lr", "0.5", "--no-use-kl", "--limit", "3", "--name", "x"])
    assert cfg == DemoConfig(steps=5, lr=0.5, name="x", use_kl=False, limit=3)
    assert config_from_args(DemoConfig, ["--limit", "none"]).limit is None
    with pytest.raises(SystemExit):
        config_from_args(DemoConfig, ["--help"])
    out = capsys.readouterr().out
    assert "--steps" in out and "how many steps" in out and "turn the KL term on" in out
    assert "(default: 10)" in out


def test_config_presets_are_overridden_by_explicit_flags():
    presets = {"fast": {"steps": 2, "lr": 0.1}}
    cfg = config_from_args(DemoConfig, ["--preset", "fast"], presets=presets)
    assert (cfg.steps, cfg.lr) == (2, 0.1)
    cfg = config_from_args(DemoConfig, ["--preset", "fast", "--steps", "7"], presets=presets)
    assert (cfg.steps, cfg.lr) == (7, 0.1)
    with pytest.raises(SystemExit):
        config_from_args(DemoConfig, ["--preset", "nope"], presets=presets)
    with pytest.raises(SystemExit):
        config_from_args(DemoConfig, ["--steps", "many"])


def test_a_config_that_cannot_work_is_a_one_line_usage_error(capsys):
    @dataclass
    class Checked:
        group_size: int = 8  # G

        def __post_init__(self):
            if self.group_size < 2:
                raise ValueError(f"group_size must be >= 2 (got {self.group_size})")

    with pytest.raises(SystemExit) as exit_info:
        config_from_args(Checked, ["--group-size", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: group_size must be >= 2 (got 1)" in err and "Traceback" not in err
    assert err.count("\n") == 1 and "usage:" not in err  # one line, not argparse's usage block
    with pytest.raises(SystemExit):
        config_from_args(Checked, ["--no-such-flag"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --no-such-flag" in err


# ----------------------------------------------------------------------------- checkpoints

class TinyNet(torch.nn.Module):
    @dataclass
    class Config:
        d: int = 4

    def __init__(self, d=4):
        super().__init__()
        self.config = TinyNet.Config(d)
        self.lin = torch.nn.Linear(d, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def test_checkpoint_round_trip_restores_model_optimizer_step_and_rng(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    common.save_checkpoint(str(tmp_path), net, opt, step=7, config={"lr": 0.1})
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "ckpt.pt.sha256"]  # no temp file left behind
    expected_next = torch.rand(3)

    net2 = TinyNet()
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.1)
    ckpt = common.load_checkpoint(str(tmp_path))
    assert common.restore(net2, opt2, ckpt) == 7
    assert ckpt["config"] == {"lr": 0.1}
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.rand(3), expected_next)  # RNG state came back too


def test_mismatched_config_names_the_field(tmp_path):
    common.save_checkpoint(str(tmp_path), TinyNet(4))
    with pytest.raises(ValueError, match=r"d: checkpoint has 4, model has 5"):
        common.restore(TinyNet(5), None, common.load_checkpoint(str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        common.load_checkpoint(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- training loop

def regression_batches(seed, n_micro=2, bs=8):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    while True:
        micro = []
        for _ in range(n_micro):
            x = torch.randn(bs, 4, generator=g)
            micro.append({"x": x, "y": x @ w, "n_rows": n_micro * bs})
        yield micro, {"batch_rows": float(n_micro * bs)}


def mse_loss(model, mb):
    """This micro-batch's share of the whole batch's mean squared error."""
    loss = ((model(mb["x"]) - mb["y"]) ** 2).sum() / mb["n_rows"]
    return loss, {"mse": loss.item()}


def masked_token_loss(model, mb):
    """A token-mean loss over a ragged mask: the share of the whole batch's mean over its tokens."""
    per_token = (model(mb["x"]) - mb["y"]) ** 2                    # (b, T)
    return (per_token * mb["mask"]).sum() / mb["n_tokens"], {}


@pytest.mark.parametrize("sizes", [[10], [5, 5], [4, 4, 2], [3, 3, 3, 1]])
def test_optimizer_step_accumulates_the_full_batch_gradient(sizes):
    """Micro-batch shares normalised by whole-batch counts: any split, uneven included, gives the
    one-shot full-batch gradient (rel. error < 1e-5) and the full-batch loss."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 6, 4, generator=g), torch.randn(10, 6, generator=g)
    mask = (torch.rand(10, 6, generator=g) > 0.4).float()        # ragged: rows have 0-6 tokens
    net = TinyNet()
    full = ((net(x) - y) ** 2 * mask).sum() / mask.sum()
    full.backward()
    expected = [p.grad.clone() for p in net.parameters()]
    bounds = torch.tensor([0] + sizes).cumsum(0).tolist()
    micro = [{"x": x[a:b], "y": y[a:b], "mask": mask[a:b], "n_tokens": mask.sum().item()}
             for a, b in zip(bounds, bounds[1:])]
    metrics = common.optimizer_step(net, torch.optim.SGD(net.parameters(), lr=0.0), micro, masked_token_loss)
    for p, e in zip(net.parameters(), expected):
        assert (p.grad - e).norm() <= 1e-5 * e.norm()
    assert metrics["loss"] == pytest.approx(full.item(), rel=1e-6)
    old_way = sum((((net(m["x"]) - m["y"]) ** 2 * m["mask"]).sum() / m["mask"].sum()).item() / len(micro) for m in micro)
    if len(sizes) > 1:   # the old rule (each micro-batch's own mean / number of micro-batches) was not exact
        assert abs(old_way - full.item()) > 1e-4


def test_train_loop_learns_logs_and_checkpoints(tmp_path, capsys):
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    cfg = LoopConfig(steps=60, lr=0.1, warmup_steps=5, log_every=20, out_dir=str(tmp_path))
    logger = common.MetricsLogger(str(tmp_path))
    last = common.train(net, opt, cfg, regression_batches(0), mse_loss, logger=logger)
    records = common.read_metrics(str(tmp_path / "metrics.jsonl"))
    assert len(records) == 60 and records[-1]["step"] == 60 and {r["kind"] for r in records} == {"train"}
    assert records[-1]["mse"] < 0.05 * records[0]["mse"]
    assert last["batch_rows"] == 16.0 and "grad_norm" in last and "lr" in last
    out = capsys.readouterr().out
    assert "step 20/60 | " in out and "step 60/60 | " in out
    assert common.load_checkpoint(str(tmp_path))["step"] == 60


def test_train_loop_saves_on_ctrl_c(tmp_path):
    net = TinyNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    base = regression_batches(0)

    def interrupted():
        for i, b in enumerate(base):
            if i == 3:
                raise KeyboardInterrupt
            yield b

    cfg = LoopConfig(steps=10, out_dir=str(tmp_path), log_every=100)
    with pytest.raises(KeyboardInterrupt):
        common.train(net, opt, cfg, interrupted(), mse_loss)
    assert common.load_checkpoint(str(tmp_path))["step"] == 3


# ----------------------------------------------------------------------------- DDP on gloo

DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import common
    from model import GPT, GPTConfig, token_logprobs

    def batches(rank, world):
        g = torch.Generator().manual_seed(0)
        while True:
            tokens = torch.randint(0, 64, (8, 24), generator=g)     # the global batch (B, T)
            rows = tokens[rank::world]                                # this rank's shard
            n = tokens[:, 1:].numel()                                 # targets in the whole batch
            parts = [rows[:4], rows[4:]] if world == 1 else [rows]
            yield [{{"tokens": t, "n": n}} for t in parts], {{}}

    def loss_fn(model, mb):
        return -token_logprobs(model, mb["tokens"]).sum() / mb["n"], {{}}

    info = common.setup_ddp("cpu")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=32))
    wrapped = common.wrap(model, info)   # DDP under torchrun, recorded so teardown_ddp releases it
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    cfg = common.LoopConfig(steps=3, lr=0.5, warmup_steps=0, min_lr_ratio=1.0, grad_clip=0.0, log_every=100)
    # one plain backward to compare raw gradients, then three loop steps to compare parameters
    micro = next(batches(info.rank, info.world_size))[0]
    loss = sum(loss_fn(wrapped, mb)[0] for mb in micro) * info.world_size   # DDP averages over ranks
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad()
    common.train(wrapped, opt, cfg, batches(info.rank, info.world_size), loss_fn)
    reduced = common.all_reduce({{"zeta": float(info.rank), "alpha": 1.0}})
    summed = common.all_reduce({{"zeta": float(info.rank), "alpha": 1.0}}, "sum")
    if info.is_main:
        torch.save({{"grads": grads, "params": [p.detach() for p in model.parameters()],
                    "reduced": list(reduced.items()), "summed": list(summed.items())}}, sys.argv[1])
    common.teardown_ddp()
""")


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    """Each of 2 gloo ranks sees half the global batch; DDP's averaged gradients, and the parameters
    after 3 steps of the shared loop, equal one process on the whole batch (as 2 micro-batches)."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(root=ROOT))
    run_script(script, tmp_path / "one.pt")
    run_script(script, tmp_path / "two.pt", nproc=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for a, b in zip(one["grads"], two["grads"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(one["params"], two["params"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # metrics are averaged over ranks and keep the caller's order (the log line's fixed fields)
    assert one["reduced"] == [("zeta", 0.0), ("alpha", 1.0)] and two["reduced"] == [("zeta", 0.5), ("alpha", 1.0)]
    assert two["summed"] == [("zeta", 1.0), ("alpha", 2.0)]


# ----------------------------------------------------------------------------- seeds, logs, checks

def test_derive_seed_is_stable_distinct_and_in_range():
    a = common.derive_seed(0, "rollouts", 3, 0)
    assert a == common.derive_seed(0, "rollouts", 3, 0) and 0 <= a < 2 ** 63
    others = {common.derive_seed(s, name, step, rank) for s in (0, 1) for name in ("rollouts", "questions")
              for step in range(50) for rank in (0, 1)}
    assert len(others) == 400   # no two streams share a seed


def test_metrics_logger_keeps_the_records_before_a_checkpoint(tmp_path):
    log = common.MetricsLogger(str(tmp_path))
    for i in range(5):
        log.log({"kind": "train", "step": i})
    assert log.n_records == 5
    resumed = common.MetricsLogger(str(tmp_path), keep=3)   # the checkpoint was written after 3 records
    assert resumed.n_records == 3 and [r["step"] for r in common.read_metrics(resumed.path)] == [0, 1, 2]
    common.MetricsLogger(str(tmp_path))                     # a new run starts an empty log
    assert common.read_metrics(str(tmp_path / "metrics.jsonl")) == []


def test_check_ranges_names_the_flag():
    @dataclass
    class C:
        prompts_per_step: int = 1
        kl_beta: float = 0.0
        mastery: float = 0.5
        task: str = "add"

    common.check_ranges(C(), positive=("prompts_per_step",), non_negative=("kl_beta",), fraction=("mastery",),
                        choices={"task": ("add", "mul")})
    for bad, message in [(C(prompts_per_step=0), "--prompts-per-step must be > 0 (got 0)"),
                         (C(kl_beta=-1), "--kl-beta must be >= 0"), (C(mastery=2), "--mastery must lie in [0, 1]"),
                         (C(task="nope"), "--task must be one of add, mul (got 'nope')")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            common.check_ranges(bad, positive=("prompts_per_step",), non_negative=("kl_beta",),
                                fraction=("mastery",), choices={"task": ("add", "mul")})


@pytest.mark.slow
def test_wrap_compiles_only_when_asked_and_unwrap_finds_the_model():
    """--compile wraps the training model in torch.compile (lazily: nothing compiles until it runs);
    checkpoints and sampling reach the raw model through unwrap. One process: no DDP."""
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=8, max_seq_len=8))
    one = common.DistInfo(0, 0, 1, torch.device("cpu"))
    assert common.wrap(model, one) is model
    compiled = common.wrap(model, one, compile=True)
    assert compiled is not model and common.unwrap(compiled) is model


def test_get_device_turns_tf32_on_for_cuda_only():
    # set and restored by hand: torch.backends.cuda.matmul is a module object whose attributes are
    # properties, which pytest's monkeypatch (9.x) cannot restore (it errors in teardown)
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert common.get_device("cpu").type == "cpu"
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# ----------------------------------------------------------------------------- runs never lose work


def test_ctrl_c_right_after_an_optimizer_step_saves_it_under_its_own_step(tmp_path, monkeypatch):
    """A real SIGINT that lands between optimizer.step() and the step counter: train() finishes the
    count first, so the checkpoint saved on the way out holds the updated weights as step 2, never
    as step 1 (a resume would apply step 2's update twice)."""
    import signal
    model = tiny_gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, 16, (2, 8))
    real, calls = common.optimizer_step, []

    def step_then_sigint(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(common, "optimizer_step", step_then_sigint)
    batches = iter(lambda: ([x], {}), None)
    cfg = LoopConfig(steps=5, warmup_steps=0, out_dir=str(tmp_path), log_every=100)
    with pytest.raises(KeyboardInterrupt):
        common.train(model, opt, cfg, batches, lambda m, mb: (m(mb).float().pow(2).mean(), {}))
    saved = common.load_checkpoint(str(tmp_path))
    assert saved["step"] == 2 and len(calls) == 2
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())



def tiny_gpt(seed=0):
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=8, max_seq_len=8))


def test_checkpoints_are_verified_and_the_previous_one_is_kept(tmp_path):
    model = tiny_gpt()
    common.save_checkpoint(str(tmp_path), model, step=1)
    common.save_checkpoint(str(tmp_path), model, step=2)
    latest, prev = tmp_path / "ckpt.pt", tmp_path / "ckpt.prev.pt"
    assert (tmp_path / "ckpt.pt.sha256").exists() and (tmp_path / "ckpt.prev.pt.sha256").exists()
    assert common.load_checkpoint(str(tmp_path))["step"] == 2
    assert common.load_checkpoint(str(prev))["step"] == 1
    good = latest.read_bytes()
    half, flipped = good[:len(good) // 2], bytearray(good)
    flipped[len(good) // 2] ^= 0xFF                                    # one bit flip torch.load would not notice
    for broken in (half, bytes(flipped)):
        latest.write_bytes(broken)
        with pytest.raises(common.CheckpointError, match=re.escape(str(latest)) + " is corrupt: its SHA-256 differs"):
            common.load_checkpoint(str(tmp_path))
        assert common.load_checkpoint(str(tmp_path), fallback=True)["step"] == 1
    (tmp_path / "ckpt.pt.sha256").unlink()          # no digest (a checkpoint from before them): only torch.load can tell
    latest.write_bytes(half)
    with pytest.raises(common.CheckpointError, match=re.escape(str(latest)) + " cannot be read"):
        common.load_checkpoint(str(tmp_path))
    latest.write_bytes(good)
    assert common.load_checkpoint(str(tmp_path))["step"] == 2


def test_a_checkpoint_of_another_tokenizer_is_refused_in_one_line(tmp_path, capsys):
    """Old byte-level checkpoints (no "tokenizer" key) and ones made with other merges mean other text."""
    model = tiny_gpt()
    common.save_checkpoint(str(tmp_path), model, step=1)
    ckpt = common.load_checkpoint(str(tmp_path))
    assert ckpt["tokenizer"] == common.get_tokenizer().name
    for made_with in (None, "bpe7-0123456789ab"):
        old = {k: v for k, v in ckpt.items() if k != "tokenizer"}
        if made_with:
            old["tokenizer"] = made_with
        torch.save(old, tmp_path / "ckpt.pt")
        (tmp_path / "ckpt.pt.sha256").unlink(missing_ok=True)
        for fallback in (False, True):  # never "falls back" to a previous checkpoint: that is no fix
            with pytest.raises(common.TokenizerMismatch, match=f"'{made_with or 'bytes'}'.*python pretrain.py") as e:
                common.load_checkpoint(str(tmp_path), fallback=fallback)
            assert "\n" not in str(e.value)
    assert "falling back" not in capsys.readouterr().out


def test_a_missing_merges_file_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    import tokenizer
    monkeypatch.setattr(common, "get_tokenizer", lambda: tokenizer.Tokenizer(str(tmp_path / "merges.tiktoken")))
    with pytest.raises(SystemExit) as e:
        config_from_args(LoopConfig, [])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "merges file not found" in err and "Traceback" not in err


def test_fallback_warning_names_both_files(tmp_path, capsys):
    model = tiny_gpt()
    common.save_checkpoint(str(tmp_path), model, step=1)
    common.save_checkpoint(str(tmp_path), model, step=2)
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    assert common.load_checkpoint(str(tmp_path), fallback=True)["step"] == 1
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'ckpt.pt'} is corrupt" in out and f"{tmp_path / 'ckpt.prev.pt'} (step 1)" in out
    # the bad file is set aside, so the resumed run's next save cannot rotate it into ckpt.prev.pt
    assert (tmp_path / "ckpt.pt.corrupt").read_bytes() == b"garbage" and not (tmp_path / "ckpt.pt").exists()
    common.save_checkpoint(str(tmp_path), model, step=3)
    assert common.load_checkpoint(str(tmp_path / "ckpt.prev.pt"))["step"] == 1
    (tmp_path / "ckpt.pt").unlink()
    (tmp_path / "ckpt.prev.pt").write_bytes(b"garbage too")
    with pytest.raises(common.CheckpointError, match="ckpt.prev.pt"):
        common.load_checkpoint(str(tmp_path), fallback=True)


def test_train_loop_stops_on_a_nan_loss_without_saving(tmp_path):
    """A NaN loss at step 3 stops the run with a one-line error naming the term and the step; the
    checkpoint of step 2 is untouched and its weights are finite."""
    model = tiny_gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, 16, (2, 8))
    calls = []

    def loss_fn(m, mb):
        calls.append(1)
        loss = m(x).logsumexp(-1).mean()
        return loss * (float("nan") if len(calls) == 3 else 1.0), {"term_a": 1.0}

    cfg = LoopConfig(steps=5, lr=0.1, warmup_steps=0, ckpt_every=1, out_dir=str(tmp_path))
    batches = iter(lambda: ([{}], {}), None)
    with pytest.raises(SystemExit, match=r"error: non-finite loss = nan in step 3; the run stops without saving"):
        common.train(model, opt, cfg, batches, loss_fn)
    ckpt = common.load_checkpoint(str(tmp_path))
    assert ckpt["step"] == 2 and all(t.isfinite().all() for t in ckpt["model"].values())
    assert all(p.isfinite().all() for p in model.parameters())   # the NaN step never reached the weights


def test_optimizer_step_names_a_non_finite_gradient_and_a_loss_fn_count():
    model = tiny_gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, 16, (2, 8))
    before = [p.detach().clone() for p in model.parameters()]
    handle = model.layers[0].mlp.up_proj.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(common.NonFiniteError, match=r"non-finite gradient .*first in layers\.0\.mlp\.up_proj\.weight"):
        common.optimizer_step(model, opt, [{}], lambda m, mb: (m(x).logsumexp(-1).mean(), {}))
    handle.remove()
    with pytest.raises(common.NonFiniteError, match=r"non-finite policy log-probs \(3 values\)"):
        common.optimizer_step(model, opt, [{}], lambda m, mb: (m(x).mean(), {"nonfinite_policy log-probs": 3}))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_fresh_run_drops_an_earlier_runs_previous_checkpoint(tmp_path):
    """Without --resume, a run in a used directory must not leave the earlier run's ckpt.prev.pt for a
    later fallback to land on."""
    model = tiny_gpt()
    common.save_checkpoint(str(tmp_path), model, step=7)
    common.save_checkpoint(str(tmp_path), model, step=8)           # an earlier run's latest and previous
    common.start_fresh(str(tmp_path))
    assert not (tmp_path / "ckpt.prev.pt").exists() and not (tmp_path / "ckpt.prev.pt.sha256").exists()
    assert common.has_checkpoint(str(tmp_path))                    # its latest is replaced by the first save


TEARDOWN_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {root!r})
    import common

    threads = lambda: len(os.listdir("/proc/self/task"))   # every thread of this process, C++ ones too
    before = threads()
    info = common.setup_ddp("cpu")
    wrapped = common.wrap(torch.nn.Linear(4, 2), info)
    wrapped(torch.ones(3, 4)).sum().backward()              # DDP's gradient all-reduce
    common.all_reduce({{"x": 1.0}})                          # a collective on a tensor Python has seen
    common.teardown_ddp()
    os.write(1, f"threads {{info.rank}} {{before}} {{threads()}}\\n".encode())  # one write: ranks share the pipe
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
@pytest.mark.slow
def test_teardown_joins_gloo_threads_while_wrapped_model_is_alive(tmp_path):
    """After teardown_ddp no gloo worker thread is left, even with the DDP wrapper still referenced:
    a worker that outlives it can drop a tensor during interpreter shutdown, where taking the GIL
    aborts the process ("terminate called without an active exception")."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN_SCRIPT.format(root=ROOT))
    lines = [line.split() for line in run_script(script, nproc=2).stdout.splitlines() if line.startswith("threads")]
    assert sorted(rank for _, rank, _, _ in lines) == ["0", "1"]
    assert all(before == after for _, _, before, after in lines), lines


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_on_a_terminal_on_rank_0_only_and_print0_goes_above_it(monkeypatch, capsys):
    assert common.progress(total=3, desc="log").disable         # stderr is not a terminal: no bar
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(common, "is_main_process", lambda: False)  # a rank other than 0 never shows one
    with common.progress(total=3, desc="other rank") as bar:
        assert bar.disable
    monkeypatch.setattr(common, "is_main_process", lambda: True)
    with common.progress(total=3, desc="steps") as bar:
        assert not bar.disable
        bar.update(1)
        drawn = terminal.getvalue().count("steps")
        common.print0("step 1 | loss 2.0")                     # cleared, printed above, redrawn
        assert terminal.getvalue().count("steps") > drawn
    assert capsys.readouterr().out == "step 1 | loss 2.0\n"      # the line itself is unchanged


def test_progress_shows_in_a_jupyter_kernel(monkeypatch):
    """A notebook's stderr is not a terminal, but Jupyter shows a bar drawn there: notebooks get one."""
    assert common.progress(total=3).disable
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    with common.progress(total=3, file=io.StringIO()) as bar:
        assert not bar.disable
    monkeypatch.setattr(common, "is_main_process", lambda: False)
    assert common.progress(total=3).disable


def _is_slow(node) -> bool:
    """A decorator list or `pytestmark` value that holds pytest.mark.slow."""
    return any(isinstance(n, ast.Attribute) and n.attr == "slow" for n in ast.walk(node))


def test_every_source_file_has_a_fast_test():
    """`pytest -m "not slow"` covers every module: each X.py at the root keeps at least one test in
    tests/test_X.py that is not marked slow (read from the source, so it holds for any selection)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = []
    for source in sorted(f for f in os.listdir(root) if f.endswith(".py")):
        path = os.path.join(root, "tests", f"test_{source}")
        tree = ast.parse(open(path).read()) if os.path.exists(path) else ast.Module(body=[], type_ignores=[])
        module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                          and _is_slow(n.value) for n in tree.body)
        fast = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
                and not any(_is_slow(d) for d in n.decorator_list)]
        if module_slow or not fast:
            missing.append(source)
    assert not missing, f"no fast test (one not marked slow) in tests/test_X.py for: {missing}"


# ----------------------------------------------------------------------------- Muon


def test_newton_schulz_is_close_to_the_orthogonal_factor():
    torch.manual_seed(0)
    for shape in ((32, 96), (96, 32), (48, 48)):
        G = torch.randn(shape)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        X = common.newton_schulz(G)
        s = torch.linalg.svdvals(X)
        assert s.max() < 1.25 and (s.min() > 0.5 or shape[0] == shape[1])  # near 1, not exactly: Muon's
        # quintic trades exactness for speed; a square Gaussian's tiniest singular values stay lower
        cos = (X * (U @ Vh)).sum() / (X.norm() * (U @ Vh).norm())
        assert cos > 0.95 and X.shape == G.shape
    stack = torch.randn(3, 40, 24)
    torch.testing.assert_close(common.newton_schulz(stack), torch.stack([common.newton_schulz(g) for g in stack]))


def test_muon_updates_matrices_by_the_formula_and_the_rest_as_adamw():
    """Two steps against a slow reference: Nesterov momentum -> newton_schulz -> sqrt(max(1, rows/cols)),
    and the embeddings and gains exactly as torch.optim.AdamW moves them."""
    model, ref = tiny_gpt(), tiny_gpt()
    opt = common.make_optimizer(model, lr=1e-2, weight_decay=0.1, muon_lr=0.05)
    hidden = [n for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in ref.named_parameters() if n not in hidden]
    adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    common.set_lr(opt, 1e-2)
    momentum = {n: torch.zeros_like(p) for n, p in ref.named_parameters() if n in hidden}
    x = torch.randint(0, 16, (2, 8))
    for _ in range(2):
        for m in (model, ref):
            m.zero_grad()
            m(x).square().mean().backward()
        opt.step()
        adamw.step()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                if n in hidden:
                    momentum[n].lerp_(p.grad, 0.05)
                    update = p.grad.lerp(momentum[n], 0.95)
                    p.add_(common.newton_schulz(update), alpha=-0.05 * max(1.0, p.size(0) / p.size(1)) ** 0.5)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # the matrices' group runs at muon_lr
