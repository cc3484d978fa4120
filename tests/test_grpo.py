"""grpo.py: advantages and the loss against slow per-sample loops, edge cases, learning, DDP, CLI."""
import math
import os

import pytest
import torch

from grpo import GRPOConfig, group_advantages, grpo_loss, pack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- slow references

def slow_advantages(rewards, G, scale_std, eps=1e-4):
    out = []
    for g in range(0, len(rewards), G):
        group = [float(r) for r in rewards[g:g + G]]
        mean = sum(group) / G
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (G - 1))
        out += [(r - mean) / (std + eps) if scale_std else r - mean for r in group]
    return torch.tensor(out)


def slow_loss(logp, logp_old, logp_ref, adv, mask, eps, beta, agg, seq_ratio=False, norm_len=None):
    """Per-sample, per-token loops over R1 eq. 1 and eq. 2."""
    B, T = logp.shape
    rows, all_terms = [], []
    for i in range(B):
        terms = []
        seq_log_ratio = sum(float(logp[i, t] - logp_old[i, t]) for t in range(T) if mask[i, t])
        for t in range(T):
            if not mask[i, t]:
                continue
            rho = math.exp(seq_log_ratio) if seq_ratio else math.exp(float(logp[i, t] - logp_old[i, t]))
            a = float(adv[i])
            surrogate = min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
            kl = 0.0
            if beta > 0:
                x = float(logp_ref[i, t] - logp[i, t])  # log(pi_ref / pi)
                kl = math.exp(x) - x - 1
            terms.append(-(surrogate - beta * kl))
        all_terms += terms
        if agg == "seq-mean-token-mean":
            rows.append(sum(terms) / len(terms) if terms else 0.0)
        elif agg == "seq-mean-token-sum-norm":
            rows.append(sum(terms) / (norm_len or T))
    if agg == "token-mean":
        return sum(all_terms) / max(1, len(all_terms))
    return sum(rows) / B


def random_batch(B=6, T=7, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    logp_old = logp + spread * torch.randn(B, T, generator=g)
    logp_ref = logp + spread * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    return logp, logp_old, logp_ref, adv, mask


# ----------------------------------------------------------------------------- advantages

@pytest.mark.parametrize("scale_std", [True, False])
@pytest.mark.parametrize("G", [2, 4, 8])
def test_group_advantages_match_loop(scale_std, G):
    rewards = torch.rand(5 * G)
    torch.testing.assert_close(group_advantages(rewards, G, scale_std), slow_advantages(rewards, G, scale_std))


def test_all_equal_rewards_give_exactly_zero():
    adv = group_advantages(torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1]), 4)
    assert torch.equal(adv[:8], torch.zeros(8)) and not torch.isnan(adv).any()
    assert adv[8:].abs().sum() > 0


def test_group_size_errors():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="N\\*group_size"):
        group_advantages(torch.ones(5), 2)
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="loss_agg"):
        GRPOConfig(loss_agg="bogus")


# ----------------------------------------------------------------------------- loss

@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seq_ratio", [False, True])
def test_grpo_loss_matches_loop(agg, beta, seq_ratio):
    logp, logp_old, logp_ref, adv, mask = random_batch(spread=0.05 if seq_ratio else 0.3)
    loss, stats = grpo_loss(logp, logp_old, logp_ref, adv, mask, clip_eps=0.2, beta=beta, loss_agg=agg,
                            seq_ratio=seq_ratio)
    expected = slow_loss(logp, logp_old, logp_ref, adv, mask, 0.2, beta, agg, seq_ratio)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert 0.0 <= stats["clip_frac"] <= 1.0 and stats["kl"] >= 0.0


def test_dr_grpo_constant_norm():
    logp, logp_old, logp_ref, adv, mask = random_batch()
    loss, _ = grpo_loss(logp, logp_old, logp_ref, adv, mask, loss_agg="seq-mean-token-sum-norm", norm_len=100)
    assert loss.item() == pytest.approx(slow_loss(logp, logp_old, logp_ref, adv, mask, 0.2, 0.0,
                                                  "seq-mean-token-sum-norm", norm_len=100), rel=1e-5)


def test_k3_kl_is_nonnegative_and_zero_at_reference():
    logp, _, logp_ref, adv, mask = random_batch(spread=1.0)
    _, stats = grpo_loss(logp, logp, logp_ref, adv, mask, beta=1.0)
    assert stats["kl"] > 0
    _, stats = grpo_loss(logp, logp, logp.clone(), adv, mask, beta=1.0)
    assert stats["kl"] == 0.0


def test_gradient_on_hand_computed_batch():
    """One row, two tokens, ratio 1 (mu = 1): loss = -A * mean_t exp(logp - logp_old), so
    d loss / d logp_t = -A / 2 per token. With beta and the reference equal to the policy, the KL
    term adds zero gradient."""
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([1.5])
    mask = torch.ones(1, 2)
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach().clone(), adv, mask, beta=0.1)
    loss.backward()
    assert loss.item() == pytest.approx(-1.5)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.75, -0.75]]))
    assert stats["ratio"] == 1.0 and stats["clip_frac"] == 0.0


def test_ratio_is_one_and_nothing_clipped_at_mu_1():
    logp, _, logp_ref, adv, mask = random_batch()
    _, stats = grpo_loss(logp, logp.detach(), logp_ref, adv, mask, beta=0.04)
    assert stats["ratio"] == 1.0 and stats["clip_frac"] == 0.0


def test_padding_only_rows_and_one_token_completions():
    logp, logp_old, logp_ref, adv, mask = random_batch(B=4, T=5)
    mask[0] = 0.0             # a padding-only row
    mask[1] = 0.0
    mask[1, 0] = 1.0          # a one-token completion
    for agg in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"):
        loss, stats = grpo_loss(logp, logp_old, logp_ref, adv, mask, beta=0.04, loss_agg=agg)
        assert torch.isfinite(loss) and all(math.isfinite(v) for v in stats.values())
        assert loss.item() == pytest.approx(slow_loss(logp, logp_old, logp_ref, adv, mask, 0.2, 0.04, agg), rel=1e-5)
    all_pad = torch.zeros_like(mask)
    loss, stats = grpo_loss(logp, logp_old, logp_ref, adv, all_pad, beta=0.04)
    assert loss.item() == 0.0 and stats["clip_frac"] == 0.0


def test_zero_advantage_fraction():
    logp, logp_old, logp_ref, _, mask = random_batch(B=4)
    adv = group_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2)
    _, stats = grpo_loss(logp, logp_old, logp_ref, adv, mask)
    assert stats["zero_adv_frac"] == 0.5


def test_pack_aligns_mask_with_token_logprobs():
    tokens, mask = pack([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    assert tokens.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    # token_logprobs[:, t] scores tokens[:, t+1]: completion tokens 5, 6 sit at t = 2, 3
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]


# ----------------------------------------------------------------------------- the loop

class SevenTask:
    """A trivially easy task: the reward is the share of '7' characters in the completion."""
    name = "seven"

    def sample(self, rng):
        from tasks import Problem
        return Problem("seven", f"Say sevens ({rng.randint(0, 10**9)}).", "7")


def sevens(texts, problems):
    rewards = [text.count("7") / max(1, len(text)) for text in texts]
    return [(r, {"sevens": r}) for r in rewards]


def run_tiny_grpo(tmp_path, **overrides):
    import common
    from grpo import make_loss_fn, rollouts
    from model import GPT, GPTConfig
    from tokenizer import get_tokenizer

    torch.manual_seed(0)
    tok = get_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=32, max_seq_len=64))
    cfg = GRPOConfig(**{"steps": 30, "prompts_per_step": 8, "group_size": 4, "max_new_tokens": 6, "lr": 1e-2,
                        "kl_beta": 0.0, "eval_every": 0, "show_every": 0, "out_dir": str(tmp_path), **overrides})
    ref = GPT(model.config).eval() if cfg.kl_beta > 0 else None
    if ref is not None:
        ref.load_state_dict(model.state_dict())
    dist = common.DistInfo(0, 0, 1, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loop = common.LoopConfig(steps=cfg.steps * cfg.num_iterations, lr=cfg.lr, warmup_steps=0, min_lr_ratio=1.0,
                             log_every=1000, out_dir="")
    logger = common.MetricsLogger(str(tmp_path))
    batches = rollouts(cfg, model, ref, tok, SevenTask(), sevens, dist)
    common.train(model, opt, loop, batches, make_loss_fn(cfg), logger=logger)
    return common.read_metrics(str(tmp_path / "metrics.jsonl"))


def test_seeded_short_run_raises_reward(tmp_path):
    records = run_tiny_grpo(tmp_path)
    first = sum(r["reward"] for r in records[:5]) / 5
    last = sum(r["reward"] for r in records[-5:]) / 5
    assert last > 0.3 and last > 5 * first, (first, last)


def test_mu_2_first_pass_has_ratio_one_and_second_moves(tmp_path):
    records = run_tiny_grpo(tmp_path, steps=3, num_iterations=2, kl_beta=0.04)
    assert len(records) == 6
    for first_pass in records[0::2]:  # pi_theta == pi_old on the first pass over each batch
        assert first_pass["ratio"] == pytest.approx(1.0, abs=1e-6) and first_pass["clip_frac"] == 0.0
    # on the second pass pi_old is the frozen sampling policy and pi_theta has taken a step: the
    # ratio leaves 1 (its mean stays near 1, E_old[pi/pi_old] = 1, so look at clipping too)
    assert any(s["clip_frac"] > 0 or abs(s["ratio"] - 1) > 1e-3 for s in records[1::2])


# ----------------------------------------------------------------------------- DDP and the command line

DDP_GRPO = """
import sys, torch
import common
from grpo import GRPOConfig, make_loss_fn
from model import GPT, GPTConfig
from torch.nn.parallel import DistributedDataParallel as DDP

info = common.setup_ddp("cpu")
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=32))
g = torch.Generator().manual_seed(1)
B, T = 8, 12
tokens = torch.randint(0, 64, (B, T), generator=g)                       # the global batch
mask = (torch.rand(B, T - 1, generator=g) > 0.3).float()
batch = {"tokens": tokens, "mask": mask, "advantages": torch.randn(B, generator=g),
         "logp_old": -torch.rand(B, T - 1, generator=g) * 4, "logp_ref": -torch.rand(B, T - 1, generator=g) * 4}
loss_fn = make_loss_fn(GRPOConfig(kl_beta=0.04, num_iterations=2))
if info.is_ddp:   # this rank's half of the rows, one micro-batch
    micro = [{k: v[info.rank::info.world_size] for k, v in batch.items()}]
    wrapped = DDP(model)
else:             # the same rows as two micro-batches of 4
    micro = [{k: v[r::2] for k, v in batch.items()} for r in (0, 1)]
    wrapped = model
loss = sum(loss_fn(wrapped, mb)[0] for mb in micro) / len(micro)
loss.backward()
losses = torch.tensor([loss.item()])
if info.is_ddp:
    torch.distributed.all_reduce(losses)
    losses /= info.world_size
if info.is_main:
    torch.save({"loss": losses.item(), "grads": [p.grad for p in model.parameters()]}, sys.argv[1])
common.teardown_ddp()
"""


def test_ddp_two_processes_same_loss_and_gradients(tmp_path):
    from conftest import run_script

    script = tmp_path / "ddp_grpo.py"
    script.write_text(DDP_GRPO)
    run_script(script, tmp_path / "one.pt")
    run_script(script, tmp_path / "two.pt", nproc=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-5)
    for a, b in zip(one["grads"], two["grads"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cli_help_and_two_step_run(tmp_path):
    from conftest import run_script

    out = run_script(f"{ROOT}/grpo.py", "--help").stdout
    for flag in ("--group-size", "--kl-beta", "--loss-agg", "--num-iterations", "--init-from", "--resume",
                 "--ref-reset-every", "--scale-std", "--seq-ratio"):
        assert flag in out
    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--out-dir", tmp_path / "base")
    out = run_script(f"{ROOT}/grpo.py", "--preset", "smoke", "--init-from", tmp_path / "base",
                     "--out-dir", tmp_path / "grpo").stdout
    assert "R1-Zero summary" in out and (tmp_path / "grpo" / "aha.png").exists()
    assert (tmp_path / "grpo" / "ckpt.pt").exists()
