"""grpo.py: advantages and the loss against slow per-sample loops, exact gradient accumulation,
log-probs at the sampling temperature, the one-step function, learning, exact resume, DDP, CLI."""
import copy
import io
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import common
import grpo
from common import pack
from grpo import (GRPOConfig, RunState, group_advantages, grpo_loss, grpo_step, make_loss_fn, micro_batch_plan,
                  micro_batches)
from model import GPT, GPTConfig
from tokenizer import get_tokenizer

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
    """Per-sample, per-token loops over DeepSeekMath eq. 3 and eq. 4 (R1 eqs. 1-2 written per token)."""
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
    rewards = torch.rand(5 * G, generator=torch.Generator().manual_seed(G))
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
    with pytest.raises(ValueError, match="--group-size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="--loss-agg"):
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


def test_padding_positions_never_reach_an_exp():
    """Padding holds whatever the model says there; a huge log-ratio at a padded position must not
    become exp(...) = inf and then inf * 0 = NaN: the loss, its gradient and every stat equal those
    of the same batch with zeros at the padding."""
    logp, logp_old, logp_ref, adv, mask = random_batch(B=4, T=6, spread=1.0)
    mask[:, 4:] = 0.0                                      # the last two positions are padding
    wild_ref, wild_old = logp_ref.clone(), logp_old.clone()
    wild_ref[:, 4:], wild_old[:, 4:] = 1000.0, -1000.0     # exp(1000 - logp) overflows to inf
    for seq_ratio in (False, True):
        x = logp.clone().requires_grad_(True)
        loss, stats = grpo_loss(x, wild_old, wild_ref, adv, mask, beta=0.04, seq_ratio=seq_ratio)
        loss.backward()
        y = logp.clone().requires_grad_(True)
        clean_loss, clean_stats = grpo_loss(y, logp_old, logp_ref, adv, mask, beta=0.04, seq_ratio=seq_ratio)
        clean_loss.backward()
        assert torch.isfinite(loss) and loss.item() == pytest.approx(clean_loss.item())
        assert torch.isfinite(x.grad).all()
        torch.testing.assert_close(x.grad, y.grad)
        assert stats == pytest.approx(clean_stats)


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


# ----------------------------------------------------------------------------- gradient accumulation

def tiny_model(seed=0, vocab=64):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=32))


def random_rl_batch(B=10, T=12, vocab=64, seed=1):
    """A GRPO batch with ragged completion masks (1 to T-1 completion tokens per row)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T, (B,), generator=g)
    mask = (torch.arange(T - 1)[None] >= (T - 1 - lengths)[:, None]).float()   # (B, T-1)
    return {"tokens": torch.randint(0, vocab, (B, T), generator=g), "mask": mask,
            "advantages": torch.randn(B, generator=g), "logp_old": -torch.rand(B, T - 1, generator=g) * 4,
            "logp_ref": -torch.rand(B, T - 1, generator=g) * 4}


def accumulated_grads(model, batch, cfg, size):
    """The gradient common.optimizer_step accumulates over micro-batches of `size` rows (lr 0, so
    the step leaves the weights and their .grad as they are)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    metrics = common.optimizer_step(model, opt, micro_batches(batch, size), make_loss_fn(cfg), grad_clip=0.0)
    return [p.grad.clone() for p in model.parameters()], metrics


def packed_rl_batch(B=10, seed=2):
    """A GRPO batch laid out as grpo_step lays it out (common.pack): prompt + completion, right-padded,
    rows of very different lengths."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 64, (int(n),), generator=g).tolist() for n in torch.randint(2, 6, (B,), generator=g)]
    completions = [torch.randint(0, 64, (int(n),), generator=g).tolist() for n in torch.randint(1, 20, (B,), generator=g)]
    tokens, mask = common.pack(prompts, completions, pad_id=0)
    T = tokens.shape[1]
    return {"tokens": tokens, "mask": mask, "advantages": torch.randn(B, generator=g),
            "logp_old": -torch.rand(B, T - 1, generator=g) * 4 * mask, "logp_ref": -torch.rand(B, T - 1, generator=g) * 4 * mask}


@pytest.mark.parametrize("make_batch", [random_rl_batch, packed_rl_batch])
@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("size", [5, 4, 3])   # 10 rows as 5/5, 4/4/2 (uneven), 3/3/3/1 (uneven)
@pytest.mark.slow
def test_accumulated_gradient_equals_full_batch_gradient(make_batch, agg, size):
    """Normalising by whole-batch counts makes micro-batching exact for every loss aggregation:
    the one-shot gradient of grpo_loss on all 10 rows equals the sum of the micro-batch shares'.
    (Dividing each micro-batch's mean by the number of micro-batches, as before, is off by a third
    on the 4/4/2 split and is never exact for token-mean.) On a ragged, right-padded batch as
    grpo_step makes it (packed_rl_batch), micro_batches also sorts the rows and cuts the padding:
    that changes nothing beyond float rounding either."""
    cfg = GRPOConfig(loss_agg=agg, kl_beta=0.04, num_iterations=2, max_new_tokens=19, temperature=0.7)
    batch = make_batch()
    model = tiny_model()
    from model import token_logprobs
    logp = token_logprobs(model, batch["tokens"], cfg.temperature)
    full, _ = grpo_loss(logp, batch["logp_old"], batch["logp_ref"], batch["advantages"], batch["mask"],
                        cfg.clip_eps, cfg.kl_beta, agg, norm_len=cfg.max_new_tokens)
    full.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    grads, metrics = accumulated_grads(model, batch, cfg, size)
    for a, b in zip(grads, expected):
        assert (a - b).norm() <= 1e-5 * b.norm() + 1e-9
    assert metrics["loss"] == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("size", [4, 3, 10])
def test_micro_batches_sort_rows_by_length_and_cut_each_after_its_longest_row(size):
    batch = packed_rl_batch(B=10)
    ends = [int(m.nonzero().max()) + 2 for m in batch["mask"]]          # tokens row b needs
    parts, seen = micro_batches(batch, size), []
    assert [len(p["tokens"]) for p in parts] == [len(r) for r in torch.arange(10).split(size)]
    for part, (rows, T) in zip(parts, micro_batch_plan(batch["mask"], size)):
        seen += rows.tolist()
        assert T == max(ends[r] for r in rows) and part["tokens"].shape[1] == T
        assert part["n_rows"] == 10 and part["n_tokens"] == batch["mask"].sum().item()
        assert torch.equal(part["tokens"], batch["tokens"][rows, :T])
        assert torch.equal(part["advantages"], batch["advantages"][rows])
        for k in ("mask", "logp_old", "logp_ref"):
            assert torch.equal(part[k], batch[k][rows, :T - 1])
        assert batch["mask"][rows, T - 1:].sum() == 0                      # nothing cut was a completion token
    assert sorted(seen) == list(range(10)) and [ends[r] for r in seen] == sorted(ends)
    assert len({ends[r] for r in seen}) > 3


# ----------------------------------------------------------------------------- one RL step


class SevenTask:
    """A trivially easy task: the reward is the share of '7' characters in the completion."""
    name = "seven"

    def sample(self, rng):
        from tasks import Problem
        return Problem("seven", f"Say sevens ({rng.randint(0, 10**9)}).", "7")


def sevens(texts, problems):
    rewards = [text.count("7") / max(1, len(text)) for text in texts]
    return [(r, {"sevens": r}) for r in rewards]


def varied(texts, problems):
    """A reward that differs within every group (a hash of the text): every advantage is non-zero."""
    rewards = [sum(text.encode()) % 7 / 7 for text in texts]
    return [(r, {"varied": r}) for r in rewards]


def tiny_policy(seed=0):
    tok = get_tokenizer()
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=32, max_seq_len=64))


def one_step(model, ref, problems, cfg, score_batch, seed=0):
    """grpo_step on its own, on a copy of `model`: the copy samples exactly as `model` would and takes
    the update, `model` stays the policy that sampled (pi_old). Returns the batch and the first
    pass's record (the step-level info and the update's metrics)."""
    policy = copy.deepcopy(model)
    state = RunState(cfg, get_tokenizer(), policy, ref, common.make_optimizer(policy, cfg.lr), score_batch)
    batch, records = grpo_step(state, 0, problems, torch.Generator().manual_seed(seed))
    return batch, records[0]


@pytest.mark.slow
def test_grpo_step_batch_shapes_advantages_and_log_probs():
    """The one-step function on its own: N questions x G samples -> a batch whose advantages are
    the group advantages of its rewards, and whose pi_old / pi_ref log-probs are the trainer's, at
    the sampling temperature."""
    from tasks import sample_problems
    from model import token_logprobs
    tok, model = get_tokenizer(), tiny_policy()
    cfg = GRPOConfig(prompts_per_step=3, group_size=4, max_new_tokens=8, temperature=0.7, num_iterations=2)
    problems = sample_problems(SevenTask(), 3, "train", seed=0)
    batch, info = one_step(model, model, problems, cfg, sevens)
    B = 12
    assert batch["tokens"].shape[0] == B and batch["mask"].shape == (B, batch["tokens"].shape[1] - 1)
    assert batch["prompts"][:4] == [batch["prompts"][0]] * 4 and len(batch["texts"]) == B
    torch.testing.assert_close(batch["advantages"], group_advantages(torch.tensor(batch["rewards"]), 4))
    expected = token_logprobs(model, batch["tokens"], 0.7).detach()
    on_completion = batch["mask"].bool()    # computed in cut micro-batches: 0 after each row's end
    torch.testing.assert_close(batch["logp_old"][on_completion], expected[on_completion], rtol=0, atol=1e-6)
    lengths = batch["mask"].sum(1)                           # completion tokens per row
    assert lengths.min() >= 1 and lengths.max() <= 8 and info["len"] == pytest.approx(lengths.mean().item())
    assert info["reward"] == pytest.approx(sum(batch["rewards"]) / B)


@pytest.mark.slow
def test_grpo_step_diagnostics_truncation_and_lengths_of_right_and_wrong():
    """The numbers that show a run learning nothing, against a count by hand: the share of rollouts
    cut at the cap (no stop token at the end), and the mean length of right and wrong completions."""
    tok, model = get_tokenizer(), tiny_policy()
    cfg = GRPOConfig(prompts_per_step=3, group_size=4, max_new_tokens=6, kl_beta=0.0)
    from tasks import sample_problems
    from model import stop_tokens
    problems = sample_problems(SevenTask(), 3, "train", seed=0)

    def judge(texts, problems):  # "right" = an even number of characters: some are, some are not
        return [(float(len(t) % 2 == 0), {"accuracy": float(len(t) % 2 == 0)}) for t in texts]

    batch, info = one_step(model, None, problems, cfg, judge)
    lengths = batch["mask"].sum(1).tolist()
    ends = [batch["tokens"][i, int(batch["mask"][i].nonzero().max()) + 1].item() for i in range(12)]
    cut = [n == 6 and e not in stop_tokens(tok) for n, e in zip(lengths, ends)]
    right = [r == 1.0 for r in batch["rewards"]]
    assert 0 < sum(cut) < 12 and 0 < sum(right) < 12   # the tiny policy gives both kinds
    assert info["truncated"] == pytest.approx(sum(cut) / 12)
    assert info["len_right"] == pytest.approx(sum(n for n, r in zip(lengths, right) if r) / sum(right))
    assert info["len_wrong"] == pytest.approx(sum(n for n, r in zip(lengths, right) if not r) / (12 - sum(right)))


@pytest.mark.slow
def test_update_reports_the_policy_entropy_over_completion_tokens():
    """optimizer_step's "entropy" is the mean over completion tokens of H(pi_theta) at each position,
    whatever the micro-batching: against torch.distributions.Categorical row by row."""
    tok, model = get_tokenizer(), tiny_policy()
    cfg = GRPOConfig(prompts_per_step=3, group_size=4, max_new_tokens=6, temperature=0.7, kl_beta=0.0)
    from tasks import sample_problems
    problems = sample_problems(SevenTask(), 3, "train", seed=0)
    batch, _ = one_step(model, None, problems, cfg, varied)
    with torch.no_grad():
        logits = model(batch["tokens"][:, :-1]).float() / 0.7                    # (B, T-1, V)
        H = torch.distributions.Categorical(logits=logits).entropy()             # (B, T-1)
    expected = (H * batch["mask"]).sum() / batch["mask"].sum()
    for size in (12, 5):
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        metrics = common.optimizer_step(model, opt, micro_batches(batch, size), make_loss_fn(cfg))
        assert metrics["entropy"] == pytest.approx(expected.item(), rel=1e-5)


def run_tiny_grpo(steps=30, reward=sevens, **overrides):
    """A few RL steps on SevenTask through grpo_step, the step grpo.run takes. Returns one metrics
    record per update."""
    from tasks import sample_problems
    tok, model = get_tokenizer(), tiny_policy()
    cfg = GRPOConfig(**{"steps": steps, "prompts_per_step": 8, "group_size": 4, "max_new_tokens": 6, "lr": 1e-2,
                        "kl_beta": 0.0, "micro_batch_size": 12, **overrides})
    ref = tiny_policy() if cfg.kl_beta > 0 else None
    state = RunState(cfg, tok, model, ref, common.make_optimizer(model, cfg.lr), reward)
    records = []
    for step in range(cfg.steps):
        problems = sample_problems(SevenTask(), cfg.prompts_per_step, "train", seed=step)
        records += grpo_step(state, step, problems, torch.Generator().manual_seed(step))[1]
    return records


@pytest.mark.slow
def test_seeded_short_run_raises_reward():
    records = run_tiny_grpo()
    first = sum(r["reward"] for r in records[:5]) / 5
    last = sum(r["reward"] for r in records[-5:]) / 5
    assert last > 0.3 and last > 5 * first, (first, last)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.slow
def test_mu_2_first_pass_has_ratio_exactly_one_and_second_moves(temperature):
    """pi_old's log-probs are computed like pi_theta's (same temperature, same micro-batches), so
    on the first pass over a batch pi_theta / pi_old is exactly 1, token by token; on the second
    pass pi_theta has moved."""
    from tasks import sample_problems
    from model import token_logprobs
    tok, model = get_tokenizer(), tiny_policy()
    cfg = GRPOConfig(prompts_per_step=8, group_size=4, max_new_tokens=6, temperature=temperature,
                     num_iterations=2, micro_batch_size=12, lr=1e-2)
    problems = sample_problems(SevenTask(), 8, "train", seed=0)
    batch, _ = one_step(model, model, problems, cfg, sevens)
    for mb in micro_batches(batch, cfg.micro_batch_size):   # what the first pass's loss_fn computes
        logp = token_logprobs(model, mb["tokens"], temperature)
        assert logp.requires_grad and torch.equal(logp.detach(), mb["logp_old"])
    records = run_tiny_grpo(steps=3, reward=varied, num_iterations=2, kl_beta=0.04, temperature=temperature)
    assert len(records) == 6
    for first_pass in records[0::2]:   # the logged mean ratio: shares summed in float32
        assert first_pass["ratio"] == pytest.approx(1.0, abs=1e-6) and first_pass["clip_frac"] == 0.0
    assert any(s["clip_frac"] > 0 or abs(s["ratio"] - 1) > 1e-4 for s in records[1::2])


# ----------------------------------------------------------------------------- exact resume

def smoke_base(tmp_path_factory):
    base = tmp_path_factory.getbasetemp() / "grpo_base"
    if not (base / "ckpt.pt").exists():
        from conftest import run_script
        run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--out-dir", base)
    return base


RESUME_FLAGS = ["--preset", "smoke", "--steps", "8", "--prompts-per-step", "4", "--group-size", "4",
                "--num-iterations", "2", "--kl-beta", "0.04", "--ref-reset-every", "3", "--eval-every", "2",
                "--ckpt-every", "2", "--micro-batch-size", "6", "--temperature", "0.8", "--show-every", "0",
                "--reward", "accuracy + language", "--lr", "1e-3"]  # language: a reward that varies on a smoke base
# (it pays only completions with a chain of thought in words, which a smoke model writes now and then)
TIMINGS = ("dt", "t_rollout", "t_reward", "t_logprobs", "t_update")


def without_timings(path):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in common.read_metrics(str(path))]


def grpo_cmd(*args):
    return [sys.executable, f"{ROOT}/grpo.py", *map(str, args)]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_metrics(tmp_path, tmp_path_factory):
    """Kill a seeded run with SIGKILL right after its first checkpoint, resume it, and compare
    its metrics log with an uninterrupted run's: bit-identical on CPU (same thread count), because
    the checkpoint holds the weights, the optimizer, the RNG, the reference model (it was reset at
    step 3, so it is not the base any more) and how many log records precede it."""
    from conftest import run_script
    base = smoke_base(tmp_path_factory)
    run_script(f"{ROOT}/grpo.py", *RESUME_FLAGS, "--init-from", base, "--out-dir", tmp_path / "full")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(grpo_cmd(*RESUME_FLAGS, "--init-from", base, "--out-dir", tmp_path / "killed"),
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = common.load_checkpoint(str(ckpt))["step"]
    assert 2 <= killed_at < 8, killed_at
    run_script(f"{ROOT}/grpo.py", *RESUME_FLAGS, "--init-from", base, "--out-dir", tmp_path / "killed", "--resume")
    full, resumed = without_timings(tmp_path / "full" / "metrics.jsonl"), without_timings(ckpt.parent / "metrics.jsonl")
    assert len(full) == 8 * 2 + 5 and resumed == full   # 16 updates, evals at steps 0, 2, 4, 6, 8
    moved = [r["grad_norm"] > 0 for r in full if r["kind"] == "train"]
    assert sum(moved) >= len(moved) // 2   # the policy really moves (a step whose groups all tie moves nothing)


@pytest.mark.slow
def test_ctrl_c_between_update_passes_resumes_exactly(tmp_path, tmp_path_factory, monkeypatch):
    """Ctrl-C after the first of mu = 2 passes of RL step 5: the checkpoint keeps the rollout batch
    and the pass, so the resumed run does the second pass on the same rollouts, and the reference
    (reset to the policy at step 3, no longer the base model), as an uninterrupted run does."""
    base = smoke_base(tmp_path_factory)
    flags = RESUME_FLAGS[2:] + ["--init-from", str(base)]
    cfg = common.config_from_args(GRPOConfig, ["--preset", "smoke", *flags, "--out-dir", str(tmp_path / "full")],
                                  presets=grpo.PRESETS)
    grpo.run(cfg)
    calls = {"n": 0}
    real = grpo.make_loss_fn

    def interrupting(cfg):
        inner = real(cfg)

        def loss_fn(model, mb):
            calls["n"] += 1
            if calls["n"] == 3 * 9 + 1:   # 3 micro-batches (16 rows / 6) per pass: RL step 5's first pass is done
                raise KeyboardInterrupt
            return inner(model, mb)
        return loss_fn

    monkeypatch.setattr(grpo, "make_loss_fn", interrupting)
    cut = common.config_from_args(GRPOConfig, ["--preset", "smoke", *flags, "--out-dir", str(tmp_path / "cut")],
                                  presets=grpo.PRESETS)
    with pytest.raises(KeyboardInterrupt):
        grpo.run(cut)
    ckpt = common.load_checkpoint(str(tmp_path / "cut"))
    assert ckpt["step"] == 4 and ckpt["rollouts"][0]["pass"] == 1 and ckpt["ref_model"] is not None
    monkeypatch.setattr(grpo, "make_loss_fn", real)
    grpo.run(common.config_from_args(GRPOConfig, ["--preset", "smoke", *flags, "--out-dir", str(tmp_path / "cut"),
                                                  "--resume"], presets=grpo.PRESETS))
    assert without_timings(tmp_path / "cut" / "metrics.jsonl") == without_timings(tmp_path / "full" / "metrics.jsonl")


@pytest.mark.slow
def test_ctrl_c_right_after_an_update_saves_that_update_with_its_step(tmp_path, tmp_path_factory, monkeypatch):
    """A Ctrl-C (a real SIGINT) that lands just after optimizer.step(), before the loop has counted
    the step: the checkpoint saved on the way out must hold the updated weights under the NEW step
    number, so --resume does not apply the update twice. The resumed run equals an uninterrupted one."""
    base = smoke_base(tmp_path_factory)
    flags = ["--preset", "smoke", "--steps", "4", "--prompts-per-step", "4", "--group-size", "4", "--lr", "1e-3",
             "--eval-every", "0", "--show-every", "0", "--ckpt-every", "0", "--reward", "accuracy + language",
             "--init-from", str(base)]
    config = lambda out, *more: common.config_from_args(GRPOConfig, [*flags, "--out-dir", str(tmp_path / out), *more],  # noqa: E731
                                                        presets=grpo.PRESETS)
    grpo.run(config("full"))
    real, calls = grpo.optimizer_step, []

    def step_then_sigint(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:                           # RL step 2's update is done: Ctrl-C now
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(grpo, "optimizer_step", step_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        grpo.run(config("cut"))
    assert common.load_checkpoint(str(tmp_path / "cut"))["step"] == 2
    monkeypatch.setattr(grpo, "optimizer_step", real)
    grpo.run(config("cut", "--resume"))
    assert without_timings(tmp_path / "cut" / "metrics.jsonl") == without_timings(tmp_path / "full" / "metrics.jsonl")


# ----------------------------------------------------------------------------- DDP and the command line

DDP_GRPO = """
import sys, torch
import common
from grpo import GRPOConfig, make_loss_fn, micro_batches
from model import GPT, GPTConfig

info = common.setup_ddp("cpu")
g = torch.Generator().manual_seed(1)
B, T = 10, 12
tokens = torch.randint(0, 64, (B, T), generator=g)                       # the global batch
mask = (torch.rand(B, T - 1, generator=g) > 0.3).float()
batch = {"tokens": tokens, "mask": mask, "advantages": torch.randn(B, generator=g),
         "logp_old": -torch.rand(B, T - 1, generator=g) * 4, "logp_ref": -torch.rand(B, T - 1, generator=g) * 4}
out = {}
for agg in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=32))
    if info.is_ddp:   # this rank's 5 rows, as uneven micro-batches of 3 and 2
        local = {k: v[info.rank::info.world_size] for k, v in batch.items()}
        wrapped, size = common.wrap(model, info), 3
    else:             # all 10 rows as micro-batches of 4, 4 and 2
        local, wrapped, size = batch, model, 4
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss_fn = make_loss_fn(GRPOConfig(kl_beta=0.04, num_iterations=2, loss_agg=agg))
    metrics = common.optimizer_step(wrapped, opt, micro_batches(local, size), loss_fn)
    out[agg] = {"metrics": metrics, "grads": [p.grad for p in model.parameters()]}
if info.is_main:
    torch.save(out, sys.argv[1])
common.teardown_ddp()
"""


@pytest.mark.slow
def test_ddp_two_processes_same_loss_and_gradients(tmp_path):
    """2 gloo ranks, each with half the rows in uneven micro-batches, give exactly one process's
    full-batch loss, metrics and gradient, for every loss aggregation."""
    from conftest import run_script

    script = tmp_path / "ddp_grpo.py"
    script.write_text(DDP_GRPO)
    run_script(script, tmp_path / "one.pt")
    run_script(script, tmp_path / "two.pt", nproc=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for agg in one:
        for key in ("loss", "kl", "clip_frac", "ratio", "zero_adv_frac", "grad_norm"):
            assert one[agg]["metrics"][key] == pytest.approx(two[agg]["metrics"][key], rel=1e-5, abs=1e-7), (agg, key)
        for a, b in zip(one[agg]["grads"], two[agg]["grads"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def without_timing_fields(text: str) -> list[str]:
    """The printed step, eval and sample lines, their timing fields (t_*, dt) cut out."""
    return [re.sub(r"\| (t_\w+|dt) [^ ]+ ?", "", line) for line in text.splitlines()
            if line.startswith(("step ", "eval @ ", "--- step "))]


@pytest.mark.slow
def test_progress_bar_leaves_the_metrics_log_and_the_printed_lines_as_they_are(tmp_path, tmp_path_factory,
                                                                                  monkeypatch, capsys):
    """On a terminal, run() shows a bar over the RL steps on stderr, with the rate and the time left;
    the metrics log and the lines printed to stdout are a run's without the bar (timings aside)."""
    base = smoke_base(tmp_path_factory)
    config = lambda out: common.config_from_args(  # noqa: E731
        GRPOConfig, ["--preset", "smoke", "--steps", "3", "--init-from", str(base), "--out-dir", str(tmp_path / out)],
        presets=grpo.PRESETS)
    grpo.run(config("plain"))
    plain = capsys.readouterr()
    assert "RL" not in plain.err                                  # not a terminal: no bar
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    grpo.run(config("bar"))
    shown = capsys.readouterr().out
    # a frame after a step, with the steps done of 3, the time spent < the time left, the rate and the
    # rollout's tokens/s (the last frame may be skipped by tqdm's minimum redraw interval before the bar
    # is cleared)
    assert re.search(r"RL: +\d+%.*\| [123]/3 \[[\d:]+<[\d:]+, +[\d.]+(s/step|step/s), [\d,]+ sampled tok/s "
                     r"\(this process\)\]", terminal.getvalue())
    assert "RL:" not in shown and len(without_timing_fields(shown)) == 3 + 2 + 3 * 2   # steps, evals, samples
    assert without_timing_fields(shown) == without_timing_fields(plain.out)
    assert without_timings(tmp_path / "bar" / "metrics.jsonl") == without_timings(tmp_path / "plain" / "metrics.jsonl")


@pytest.mark.slow
def test_show_keys_shortens_the_printed_lines_and_leaves_the_log_whole(tmp_path, tmp_path_factory, capsys):
    base = smoke_base(tmp_path_factory)
    args = ["--preset", "smoke", "--steps", "2", "--init-from", str(base), "--show-every", "0"]
    grpo.run(common.config_from_args(GRPOConfig, args + ["--out-dir", str(tmp_path / "all")], presets=grpo.PRESETS))
    capsys.readouterr()
    grpo.run(common.config_from_args(GRPOConfig, args + ["--out-dir", str(tmp_path / "few"), "--show-keys",
                                                         "reward, kl,pass@1,no_such_key"], presets=grpo.PRESETS))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("step ", "eval @"))]
    assert [re.sub(r"(?<=[ /])[-\d.e+]+(?=[ /]|$)", "N", line) for line in lines] == (
        ["eval @ step N | pass@1 N"] + ["step N/N | reward N | kl N"] * 2 + ["eval @ step N | pass@1 N"])
    assert without_timings(tmp_path / "few" / "metrics.jsonl") == without_timings(tmp_path / "all" / "metrics.jsonl")


@pytest.mark.slow
def test_cli_help_and_two_step_run(tmp_path, tmp_path_factory):
    from conftest import run_script

    out = run_script(f"{ROOT}/grpo.py", "--help").stdout
    for flag in ("--group-size", "--kl-beta", "--loss-agg", "--num-iterations", "--init-from", "--resume",
                 "--ref-reset-every", "--scale-std", "--seq-ratio", "--ckpt-every"):
        assert flag in out
    base = smoke_base(tmp_path_factory)
    out = run_script(f"{ROOT}/grpo.py", "--preset", "smoke", "--init-from", base, "--out-dir", tmp_path / "grpo").stdout
    assert "R1-Zero summary" in out and (tmp_path / "grpo" / "aha.png").exists()
    assert (tmp_path / "grpo" / "ckpt.pt").exists()
    kinds = [r["kind"] for r in common.read_metrics(str(tmp_path / "grpo" / "metrics.jsonl"))]
    assert kinds == ["eval", "train", "train", "eval"]


BAD_FLAGS = [
    (["--prompts-per-step", "0"], "--prompts-per-step must be > 0"),
    (["--steps", "-3"], "--steps must be > 0"),
    (["--task", "nope"], "--task must be one of"),
    (["--reward", "accuracy + bogus"], "unknown reward 'bogus'"),
    (["--max-new-tokens", "100000"], "--max-new-tokens 100000 + the longest prompt"),
    (["--temperature", "-1"], "--temperature must be > 0"),
    (["--init-from", "x.pt"], "--init-from x.pt: no checkpoint there"),
    (["--init-from", "out/sft"], "--init-from out/sft: no checkpoint there"),
    (["--loss-agg", "mean"], "--loss-agg must be one of"),
    (["--group-size", "1"], "--group-size must be >= 2"),
    (["--task", "add", "--min-digits", "4", "--max-digits", "3"], "min_digits <= max_digits"),
    (["--resume"], "--resume: no checkpoint in"),
    (["--max-digits", "4"], "--max-digits: --task pairsum has no such knob"),     # a knob the task lacks
    (["--task", "code", "--min-digits", "1"], "--min-digits: --task code has no such knob"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS)
def test_bad_input_fails_before_any_work_in_one_line(flags, message, tmp_path, capsys):
    argv = [*flags, "--out-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        common.config_from_args(GRPOConfig, argv, presets=grpo.PRESETS, check=grpo.check_files)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bad_input_on_the_real_command_line_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(grpo_cmd("--steps", "-1", "--out-dir", tmp_path / "run"), capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "error: --steps must be > 0" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_refuses_other_settings_than_the_checkpoints(tmp_path, tmp_path_factory, capsys):
    from conftest import run_script
    base = smoke_base(tmp_path_factory)
    run_script(f"{ROOT}/grpo.py", "--preset", "smoke", "--init-from", base, "--out-dir", tmp_path / "run")
    argv = ["--preset", "smoke", "--init-from", str(base), "--out-dir", str(tmp_path / "run"), "--resume"]
    common.config_from_args(GRPOConfig, argv, presets=grpo.PRESETS, check=grpo.check_files)   # same settings: fine
    with pytest.raises(SystemExit) as exit_info:
        common.config_from_args(GRPOConfig, argv + ["--group-size", "4"], presets=grpo.PRESETS, check=grpo.check_files)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--group-size 4 (the checkpoint has 2)" in err


def test_default_directories_follow_the_seed():
    assert (GRPOConfig().init_from, GRPOConfig().out_dir) == ("out/base", "out/grpo")
    assert (GRPOConfig(seed=2).init_from, GRPOConfig(seed=2).out_dir) == ("out/base-s2", "out/grpo-s2")


@pytest.mark.slow
def test_search_world_two_step_run(tmp_path):
    """`--task pairsum` end to end on the smoke preset: pretraining writes the search web, GRPO logs
    the behaviour counts for every batch and evaluation, the summary reports them."""
    from conftest import run_script

    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--task", "pairsum", "--out-dir", tmp_path / "base")
    out = run_script(f"{ROOT}/grpo.py", "--preset", "smoke", "--task", "pairsum", "--init-from", tmp_path / "base",
                     "--out-dir", tmp_path / "grpo").stdout
    assert "R1-Zero summary" in out and "give_up" in out and "drift" in out
    records = common.read_metrics(str(tmp_path / "grpo" / "metrics.jsonl"))
    for key in ("tries", "backtracks", "give_up", "repeats", "false_yes", "drift"):
        assert all(key in r for r in records), key


@pytest.mark.slow
def test_code_world_two_step_run(tmp_path):
    """`--task code` end to end on the smoke preset: pretraining writes the code web, GRPO runs with the
    code reward (a smoke model's programs all fail; test_code_timeout_reaches_the_sandbox and
    tests/test_rewards.py show the judge) and reports where the loop's time went."""
    from conftest import run_script

    run_script(f"{ROOT}/pretrain.py", "--preset", "smoke", "--task", "code", "--out-dir", tmp_path / "base")
    out = run_script(f"{ROOT}/grpo.py", "--preset", "smoke", "--task", "code", "--init-from", tmp_path / "base",
                     "--out-dir", tmp_path / "grpo", "--max-new-tokens", "64").stdout
    assert "R1-Zero summary" in out and re.search(r"loop time +\d+ s: rollouts \d+%, rewards \d+%, log-probs \d+%, "
                                                  r"update \d+%, other -?\d+%", out)
    records = common.read_metrics(str(tmp_path / "grpo" / "metrics.jsonl"))
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(r["r_accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0) and r["t_reward"] > 0 for r in train)


@pytest.mark.slow
def test_code_timeout_reaches_the_sandbox():
    """--code-timeout-s is the wall clock per test of the RL reward's programs: a right program that
    takes 0.8 s passes at the default 2 s and fails at 0.3 s."""
    problem = {"family": "code", "tests": [{"input": "", "output": "7"}]}
    slow = "<think>x</think><answer>import time\ntime.sleep(0.8)\nprint(7)</answer>"
    scores = [grpo.reward_fn(GRPOConfig(task="code", code_timeout_s=t))([slow], [problem])[0][1]["accuracy"]
              for t in (2.0, 0.3)]
    assert scores == [1.0, 0.0]


@pytest.mark.slow
def test_held_out_code_is_judged_with_the_runs_timeout(tmp_path, tmp_path_factory, monkeypatch):
    """The held-out evaluation judges code under the run's --code-timeout-s, as its rewards do:
    grpo.run hands its limit to evaluate.held_out, and held_out to the judge of every sample."""
    import evaluate
    seen, real_judge, real_held_out = {"judge": [], "held_out": []}, evaluate.accuracy_rewards, grpo.held_out

    def judge(texts, problems, limits=None):
        seen["judge"].append(limits.timeout_s)
        return real_judge(texts, problems, limits)

    def held_out(*args, **kwargs):
        seen["held_out"].append(args[6].timeout_s)
        return real_held_out(*args, **kwargs)

    monkeypatch.setattr(evaluate, "accuracy_rewards", judge)
    monkeypatch.setattr(grpo, "held_out", held_out)
    cfg = common.config_from_args(GRPOConfig, ["--preset", "smoke", "--task", "code", "--code-timeout-s", "0.7",
                                               "--init-from", str(smoke_base(tmp_path_factory)),
                                               "--out-dir", str(tmp_path / "run")], presets=grpo.PRESETS)
    grpo.run(cfg)
    assert seen == {"judge": [0.7, 0.7], "held_out": [0.7, 0.7]}   # before RL and after it


@pytest.mark.slow
def test_grpo_runs_under_torchrun_with_two_processes(tmp_path, tmp_path_factory):
    """The whole loop on 2 gloo ranks: each samples half the questions, checkpoints gather every
    rank's rollouts (mu = 2, a checkpoint after every step), rank 0 writes."""
    from conftest import run_script
    base = smoke_base(tmp_path_factory)
    flags = ["--preset", "smoke", "--prompts-per-step", "4", "--num-iterations", "2", "--ckpt-every", "1",
             "--steps", "3", "--init-from", base, "--out-dir", tmp_path / "run"]
    out = run_script(f"{ROOT}/grpo.py", *flags, nproc=2).stdout
    assert "2 process(es)" in out and "R1-Zero summary" in out
    ckpt = common.load_checkpoint(str(tmp_path / "run"))
    assert ckpt["step"] == 3 and len(ckpt["rollouts"]) == 2
    assert len([r for r in common.read_metrics(str(tmp_path / "run" / "metrics.jsonl")) if r["kind"] == "train"]) == 6


@pytest.mark.slow
def test_a_nan_log_prob_stops_the_run_naming_it_and_keeps_the_last_good_checkpoint(tmp_path, tmp_path_factory,
                                                                                     monkeypatch):
    """NaN injected into the policy's log-probs at RL step 3: the run exits with one line naming the
    term and the step, saves nothing, and the checkpoint of step 2 holds finite weights."""
    base = smoke_base(tmp_path_factory)
    real, calls = grpo.token_logprobs, []

    def poisoned(model, tokens, temperature=1.0, entropy=False):
        out = real(model, tokens, temperature, entropy=entropy)
        if torch.is_grad_enabled():   # the update's forward, not pi_ref's
            calls.append(1)
            if len(calls) == 3:
                logp = out[0] if entropy else out
                logp = logp * float("nan")
                out = (logp, out[1]) if entropy else logp
        return out

    monkeypatch.setattr(grpo, "token_logprobs", poisoned)
    out_dir = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"error: non-finite policy log-probs \(\d+ values\).* in step 3; the run "
                                         r"stops without saving"):
        grpo.main(["--preset", "smoke", "--steps", "5", "--ckpt-every", "1", "--init-from", str(base),
                   "--out-dir", str(out_dir)])
    ckpt = common.load_checkpoint(str(out_dir))
    assert ckpt["step"] == 2 and all(t.isfinite().all() for t in ckpt["model"].values())
