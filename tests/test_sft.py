"""sft.py: the completion-only loss against a slow reference, its masking, exact accumulation, a
tiny overfit, the data checks, and the script end to end (2 steps, resume)."""
import json
import subprocess
import sys

import pytest
import torch

import common
import sft
from conftest import ROOT, run_script
from model import GPT, GPTConfig
from sft import SFTConfig, batches, load_rows, sft_loss


def tiny_gpt(seed=0, vocab=40):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=32))


EXAMPLES = [([1, 2, 3], [4, 5, 6, 0]), ([7, 8], [9, 10, 0]), ([11, 12, 13, 14], [15, 0]), ([3, 2], [1, 5, 7, 8, 0])]


def one_batch(examples, micro=4, pad=39):
    cfg = SFTConfig(batch_size=len(examples), micro_batch_size=micro, seed=0)
    return next(batches(examples, cfg, pad, rank=0, world_size=1))[0]


def test_sft_loss_equals_a_slow_per_token_reference():
    """The loss = mean over ALL completion tokens of the batch of -log p(token | everything before
    it), each term computed by its own forward pass over the prefix."""
    model = tiny_gpt()
    (mb,) = one_batch(EXAMPLES)
    loss, _ = sft_loss(model, mb)
    terms = []
    for prompt, completion in EXAMPLES:
        seq = prompt + completion
        for t in range(len(prompt), len(seq)):
            logits = model(torch.tensor([seq[:t]]))[0, -1]
            terms.append(-torch.log_softmax(logits, -1)[seq[t]])
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


class Bigram(torch.nn.Module):
    """logits at position t depend on token t only, so a target's log-prob is independent of the
    tokens before the one that predicts it."""
    def __init__(self, vocab=40):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, tokens):
        return self.table(tokens)


def test_prompt_tokens_are_never_targets():
    """With a bigram model, changing prompt tokens 0..P-2 changes only the log-probs at positions
    whose targets are prompt tokens: the loss must not move. A loss that trained on prompt tokens
    would (checked: the same change moves an all-token loss)."""
    model = Bigram()
    prompt, completion = [1, 2, 3, 4, 5], [6, 7, 0]
    other = [20, 21, 22, 23, 5]  # the last prompt token predicts the first completion token: kept
    (a,), (b,) = one_batch([(prompt, completion)]), one_batch([(other, completion)])
    assert sft_loss(model, a)[0].item() == pytest.approx(sft_loss(model, b)[0].item(), abs=1e-7)
    all_tokens = {**a, "mask": torch.ones_like(a["mask"]), "n_tokens": a["mask"].numel()}
    all_tokens_b = {**b, "mask": torch.ones_like(b["mask"]), "n_tokens": b["mask"].numel()}
    assert abs(sft_loss(model, all_tokens)[0].item() - sft_loss(model, all_tokens_b)[0].item()) > 1e-3


@pytest.mark.slow
def test_micro_batches_give_the_full_batch_gradient():
    grads = []
    for micro in (4, 2, 3, 1):
        model = tiny_gpt()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        common.optimizer_step(model, opt, one_batch(EXAMPLES, micro=micro), sft_loss)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], rtol=1e-5, atol=1e-7)


def test_epochs_visit_every_row_once_and_resume_sees_the_same_rows():
    examples = [([1, 2], [i, 0]) for i in range(3, 13)]  # 10 rows, completion token i names the row
    cfg = SFTConfig(batch_size=5, micro_batch_size=5, seed=3)
    stream = batches(examples, cfg, 39, 0, 1)
    seen = [row[2].item() for _ in range(4) for row in next(stream)[0][0]["tokens"]]
    assert sorted(seen[:10]) == sorted(seen[10:]) == list(range(3, 13))  # two epochs, each a permutation
    resumed = batches(examples, cfg, 39, 0, 1, start_step=2)
    assert [row[2].item() for row in next(resumed)[0][0]["tokens"]] == seen[10:15]


@pytest.mark.slow
def test_a_few_steps_overfit_a_tiny_set():
    model = tiny_gpt()
    opt = common.make_optimizer(model, 3e-2)
    cfg = SFTConfig(batch_size=4, micro_batch_size=4)
    stream = batches(EXAMPLES, cfg, 39, 0, 1)
    losses = [common.optimizer_step(model, opt, next(stream)[0], sft_loss)["loss"] for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("content,message", [
    ("not json\n", "line 1: not JSON"),
    ('{"prompt": "a"}\n', 'line 1: needs string fields "prompt" and "completion"'),
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "", "completion": "b"}\n', "line 2: an empty prompt"),
    ("\n", "no rows"),
])
def test_bad_data_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_rows(str(path))


@pytest.fixture(scope="module")
def smoke_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("sft") / "base"
    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--out-dir", base)
    return base


def write_rows(path, n=6):
    from corpus import readable_search
    from tasks import PairSumTask, format_prompt, sample_problems
    from tokenizer import EOT
    rows = [{"prompt": format_prompt(p.question), "completion": readable_search(p, p.language) + EOT}
            for p in sample_problems(PairSumTask(), n, "train", seed=1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_script_two_steps_then_resume_and_bad_flags(tmp_path, smoke_base):
    data = write_rows(tmp_path / "d.jsonl")
    out = run_script(f"{ROOT}/sft.py", "--init-from", smoke_base, "--data", data, "--out-dir", tmp_path / "s",
                     "--steps", "2", "--batch-size", "4", "--micro-batch-size", "2", "--log-every", "1",
                     "--eval-problems", "2", "--eval-k", "1").stdout
    assert "step 2/2" in out and "pass@1" in out and (tmp_path / "s" / "ckpt.pt").exists()
    ckpt = common.load_checkpoint(str(tmp_path / "s"))
    assert ckpt["step"] == 2 and ckpt["config"]["task"] == "pairsum"
    records = common.read_metrics(str(tmp_path / "s" / "metrics.jsonl"))
    assert [r["step"] for r in records] == [1, 2]
    good = ["--init-from", smoke_base, "--data", data]
    for argv, message in [(["--init-from", smoke_base, "--data", tmp_path / "missing.jsonl"], "no such file"),
                          (["--init-from", tmp_path / "nothing", "--data", data], "--init-from"),
                          ([*good, "--epochs", "0"], "--epochs must be > 0"),
                          ([*good, "--resume", "--out-dir", tmp_path / "fresh"], "--resume: no checkpoint")]:
        result = subprocess.run([sys.executable, f"{ROOT}/sft.py", *map(str, argv)], capture_output=True,
                                text=True, cwd=ROOT)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, smoke_base, monkeypatch):
    """Ctrl-C during step 3 of 4 saves the step-2 state; --resume then ends with the same weights
    and the same log (timings aside) as an uninterrupted run."""
    data = write_rows(tmp_path / "d.jsonl")
    flags = dict(init_from=str(smoke_base), data=str(data), steps=4, batch_size=4, micro_batch_size=4,
                 eval_problems=0, log_every=1, ckpt_every=0, lr=1e-2)
    sft.run(SFTConfig(out_dir=str(tmp_path / "full"), **flags))
    calls, real = {"n": 0}, sft.sft_loss

    def interrupted(model, mb):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(model, mb)

    monkeypatch.setattr(sft, "sft_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sft.run(SFTConfig(out_dir=str(tmp_path / "cut"), **flags))
    monkeypatch.undo()
    assert common.load_checkpoint(str(tmp_path / "cut"))["step"] == 2
    sft.run(SFTConfig(out_dir=str(tmp_path / "cut"), resume=True, **flags))
    full, cut = (common.load_checkpoint(str(tmp_path / d))["model"] for d in ("full", "cut"))
    assert all(torch.equal(full[k], cut[k]) for k in full)
    logs = [[{k: v for k, v in r.items() if k != "dt"} for r in common.read_metrics(str(tmp_path / d / "metrics.jsonl"))]
            for d in ("full", "cut")]
    assert logs[0] == logs[1] and len(logs[0]) == 4


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path, smoke_base):
    """torchrun with 2 processes (each half of every batch, gradients all-reduced) ends with the
    weights of one process on the whole batch."""
    data = write_rows(tmp_path / "d.jsonl", n=8)
    flags = ["--init-from", smoke_base, "--data", data, "--steps", "3", "--batch-size", "4", "--micro-batch-size",
             "1", "--lr", "1e-2", "--eval-problems", "0", "--log-every", "1"]
    run_script(f"{ROOT}/sft.py", *flags, "--out-dir", tmp_path / "one")
    run_script(f"{ROOT}/sft.py", *flags, "--out-dir", tmp_path / "two", nproc=2)
    one, two = (common.load_checkpoint(str(tmp_path / d))["model"] for d in ("one", "two"))
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k
