"""model.py: each formula against a slow, obvious reference written here; cache == no cache; sampling
options; input checks; learning; the Hugging Face export."""
import cmath
import dataclasses
import json
import math
import os
import shutil
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from model import (GPT, PRESETS, Attention, GPTConfig, KVCache, RMSNorm, apply_rotary, export_hf, generate,
                   read_safetensors, write_safetensors,
                   load_hf, rotary_tables, sample_next, token_logprobs)



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is faster than two fighting over a small, shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_config(**kw):
    base = dict(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=64)
    return GPTConfig(**{**base, **kw})


def make_model(seed=0, scale=4.0, **kw):
    """A random model with peaked logits (weights scaled up) and untied embeddings: a random TIED model
    greedily repeats one token forever, which would make the cache tests too easy."""
    torch.manual_seed(seed)
    model = GPT(small_config(**{"tie_embeddings": False, **kw}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return model.eval()


def random_prompts(lengths, vocab=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


# ----------------------------------------------------------------------------- config


def test_config_derives_hidden_dim_and_round_trips():
    c = GPTConfig(n_embd=128, n_head=4, n_kv_head=2)
    assert c.hidden_dim == 352 and c.hidden_dim % 32 == 0 and c.hidden_dim >= 8 * 128 / 3
    assert c.head_dim == 32
    assert GPTConfig(**asdict(c)) == c  # what checkpoints store (common.py) rebuilds the same config
    assert GPTConfig(hidden_dim=100).hidden_dim == 100


@pytest.mark.parametrize("kwargs,field", [
    (dict(n_embd=130, n_head=4), "n_embd"),
    (dict(n_head=4, n_kv_head=3), "n_head"),
    (dict(n_embd=12, n_head=4, n_kv_head=2), "rotary"),       # head dim 3 is odd
    (dict(n_layer=0), "n_layer"),
    (dict(vocab_size=-1), "vocab_size"),
    (dict(n_kv_head=0), "n_kv_head"),
    (dict(max_seq_len=0), "max_seq_len"),
    (dict(hidden_dim=0), "hidden_dim"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(rope_theta=-1.0), "rope_theta"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs)


def test_presets():
    with pytest.raises(ValueError, match="nano.*tiny.*small"):
        GPTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="n_embed"):
        GPTConfig.from_preset("nano", n_embed=64)
    c = GPTConfig.from_preset("tiny", max_seq_len=1024)
    assert (c.n_embd, c.n_layer, c.n_head, c.n_kv_head, c.max_seq_len) == (256, 6, 8, 4, 1024)
    assert set(PRESETS) >= {"nano", "tiny", "small"}
    n_params = {name: GPT(GPTConfig.from_preset(name)).num_params() for name in ("nano", "tiny")}
    assert 0.5e6 < n_params["nano"] < 1.5e6 and 3e6 < n_params["tiny"] < 7e6


# ----------------------------------------------------------------------------- layers vs references


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    norm = RMSNorm(10, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(10))
        x = torch.randn(3, 4, 10) * 5
        x[0, 0] *= 1e-3  # mean(x^2) ~ 2.5e-5, the size of eps: eps inside or outside the root differ
        y = norm(x)
    for i in range(3):
        for j in range(4):
            v = x[i, j]
            rms = math.sqrt(sum(float(a) ** 2 for a in v) / len(v) + 1e-5)
            expected = [float(a) / rms * float(w) for a, w in zip(v, norm.weight.detach())]
            assert y[i, j].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def rotary_reference(x, positions, theta):
    """Rotate each pair (x_i, x_{i+D/2}) at position m by angle m * theta^(-2i/D), as complex numbers."""
    T, D = x.shape
    out = torch.empty_like(x)
    for t in range(T):
        for i in range(D // 2):
            z = complex(x[t, i], x[t, i + D // 2]) * cmath.exp(1j * positions[t] * theta ** (-2 * i / D))
            out[t, i], out[t, i + D // 2] = z.real, z.imag
    return out


@pytest.mark.parametrize("theta", [10000.0, 500.0])
def test_rotary_matches_complex_rotation(theta):
    torch.manual_seed(0)
    D, positions = 8, [0, 1, 2, 7, 63, 255]
    cos, sin = rotary_tables(D, 256, theta)
    x = torch.randn(len(positions), D)
    got = apply_rotary(x[None, None], cos[positions][None, None], sin[positions][None, None])[0, 0]
    torch.testing.assert_close(got, rotary_reference(x, positions, theta), atol=1e-4, rtol=1e-4)


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    cos, sin = rotary_tables(16, 64, 10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        qm = apply_rotary(q, cos[m], sin[m])
        kn = apply_rotary(k, cos[n], sin[n])
        return float(qm @ kn)

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)


def attention_reference(attn, x, theta):
    """Per batch row, per query head: project, rotate, explicit causal softmax, weighted sum of values."""
    B, T, C = x.shape
    H, K, D = attn.n_head, attn.n_kv_head, attn.head_dim
    Wq, Wk, Wv = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    out = torch.zeros(B, T, H * D)
    for b in range(B):
        for h in range(H):
            g = h // (H // K)  # the kv head this query head shares
            q = rotary_reference(x[b] @ Wq[h * D:(h + 1) * D].T, list(range(T)), theta)
            k = rotary_reference(x[b] @ Wk[g * D:(g + 1) * D].T, list(range(T)), theta)
            v = x[b] @ Wv[g * D:(g + 1) * D].T
            for i in range(T):
                scores = torch.tensor([float(q[i] @ k[j]) / math.sqrt(D) if j <= i else -math.inf
                                       for j in range(T)])
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                out[b, i, h * D:(h + 1) * D] = weights @ v
    return out @ attn.o_proj.weight.T


@pytest.mark.parametrize("n_head,n_kv_head", [(4, 2), (4, 4), (4, 1)])
def test_gqa_attention_matches_per_head_loop(n_head, n_kv_head):
    torch.manual_seed(0)
    cfg = small_config(n_head=n_head, n_kv_head=n_kv_head, n_embd=32)
    attn = Attention(cfg)
    cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        got = attn(x, cos[:6][None, None], sin[:6][None, None])
        torch.testing.assert_close(got, attention_reference(attn, x, cfg.rope_theta), atol=1e-5, rtol=1e-4)


def test_model_is_causal_and_checks_length():
    model = make_model()
    x = torch.randint(0, 64, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 64  # change the future
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :6], model(y)[:, :6])
        assert model(x).shape == (2, 10, 64)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_tied_embeddings():
    tied, untied = GPT(small_config()), GPT(small_config(tie_embeddings=False))
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert untied.num_params() - tied.num_params() == 64 * 32


# ----------------------------------------------------------------------------- log-probs


def test_token_logprobs_matches_prefix_by_prefix_loop():
    model = make_model(scale=2.0)
    tokens = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = token_logprobs(model, tokens)
        assert got.shape == (3, 8)
        for b in range(3):
            for t in range(8):
                logits = model(tokens[b:b + 1, :t + 1])[0, -1]                # next-token logits at t
                expected = F.log_softmax(logits, dim=-1)[tokens[b, t + 1]]
                assert float(got[b, t]) == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(ValueError, match="T >= 2"):
        token_logprobs(model, tokens[:, :1])


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
def test_sampler_and_trainer_agree_on_log_probs_at_the_sampling_temperature(temperature):
    """The sampler's log-prob of each token it sampled (KV cache, ragged left-padded batch) equals
    the trainer's token_logprobs at the same temperature on the packed sequence; at another
    temperature they differ, which is the bug of scoring T = 0.7 samples with untempered logits."""
    from common import pack
    model = make_model(scale=1.0)
    prompts = random_prompts([3, 7, 1, 5])
    new, lengths, sampler_logp = generate(model, prompts, 10, temperature=temperature, return_logprobs=True,
                                          generator=torch.Generator().manual_seed(0))
    completions = [row[:n].tolist() for row, n in zip(new, lengths)]
    tokens, mask = pack(prompts, completions, pad_id=0)
    with torch.no_grad():
        trainer = token_logprobs(model, tokens, temperature)        # (B, T-1), completion at mask
        untempered = token_logprobs(model, tokens)
    for b, c in enumerate(completions):
        at = mask[b].bool()
        torch.testing.assert_close(sampler_logp[b, :len(c)], trainer[b, at], rtol=0, atol=2e-5)
        assert (sampler_logp[b, len(c):] == 0).all()
        if temperature != 1.0:
            assert (trainer[b, at] - untempered[b, at]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(model, tokens, 0.0)


def test_token_logprobs_has_gradients():
    model = make_model(scale=1.0).train()
    token_logprobs(model, torch.randint(0, 64, (2, 5))).sum().backward()
    assert model.embed_tokens.weight.grad is not None


# ----------------------------------------------------------------------------- KV cache


def test_forward_with_cache_in_chunks_matches_full_forward():
    model = make_model()
    x = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(2))
    cache = KVCache(model.config, 2, 10)
    with torch.no_grad():
        full = model(x)
        chunks = [model(x[:, s:e], kv_cache=cache) for s, e in [(0, 3), (3, 4), (4, 8), (8, 10)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.pos == 10


@pytest.mark.parametrize("lengths", [[5], [3, 7, 1], [10, 2, 6, 6, 1], [4, 4]])
def test_greedy_with_cache_equals_full_recomputation_on_ragged_batches(lengths):
    model = make_model()
    prompts = random_prompts(lengths)
    fast, n_fast = generate(model, prompts, 16, temperature=0, use_cache=True)
    slow, n_slow = generate(model, prompts, 16, temperature=0, use_cache=False)
    assert fast.dtype == n_fast.dtype == torch.long and fast.shape == (len(lengths), 16)
    assert torch.equal(fast, slow) and torch.equal(n_fast, n_slow)
    assert len(set(fast.flatten().tolist())) > 5  # the model does not just repeat one token


@pytest.mark.parametrize("lengths", [[3, 7, 1], [10, 2, 6, 6, 1]])
def test_sampling_with_cache_equals_full_recomputation(lengths):
    model = make_model(scale=1.0)
    prompts = random_prompts(lengths)
    fast, _ = generate(model, prompts, 16, top_p=0.9, generator=torch.Generator().manual_seed(0))
    slow, _ = generate(model, prompts, 16, top_p=0.9, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("use_cache", [True, False])
def test_prompt_gives_same_tokens_alone_or_in_a_ragged_batch(use_cache):
    model = make_model(seed=1)
    prompts = random_prompts([2, 9, 5], seed=3)
    batch, _ = generate(model, prompts, 12, temperature=0, use_cache=use_cache)
    for b, p in enumerate(prompts):
        alone, _ = generate(model, [p], 12, temperature=0, use_cache=use_cache)
        assert torch.equal(alone[0], batch[b])


def test_greedy_continues_the_sequence_argmax():
    """Greedy generation = repeatedly appending argmax of a plain forward pass."""
    model = make_model(seed=2)
    prompt = random_prompts([4], seed=4)[0]
    new, _ = generate(model, [prompt], 6, temperature=0)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert new[0].tolist() == seq[4:]


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = make_model(scale=1.0)
    prompts = random_prompts([3, 6, 1])

    def run(seed):
        return generate(model, prompts, 10, temperature=1.0, generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("kwargs", [dict(top_k=1), dict(top_p=1e-6), dict(top_k=1, top_p=0.9)])
def test_top_k_1_and_tiny_top_p_equal_greedy(kwargs):
    model = make_model()
    prompts = random_prompts([3, 8])
    greedy, _ = generate(model, prompts, 10, temperature=0)
    sampled, _ = generate(model, prompts, 10, temperature=1.0, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(sampled, greedy)


def test_sample_next_follows_softmax_top_k_and_top_p():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0]).repeat(20000, 1)  # (N, 6)
    probs = logits[0].softmax(-1)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_next(logits, 1.0, generator=g), minlength=6) / 20000
    torch.testing.assert_close(counts, probs, atol=0.015, rtol=0)
    assert set(sample_next(logits, 1.0, top_k=3, generator=g).tolist()) == {0, 1, 2}
    # nucleus by hand: the likeliest tokens until their mass reaches p
    for p in (0.5, 0.8, 0.95):
        keep, mass = [], 0.0
        for i in probs.argsort(descending=True).tolist():
            keep.append(i)
            mass += float(probs[i])
            if mass >= p:
                break
        assert set(sample_next(logits, 1.0, top_p=p, generator=g).tolist()) == set(keep)
    hot = torch.bincount(sample_next(logits, 5.0, generator=g), minlength=6) / 20000
    torch.testing.assert_close(hot, (logits[0] / 5).softmax(-1), atol=0.015, rtol=0)


def first_stop(row, stops):
    for i, t in enumerate(row):
        if t in stops:
            return i + 1
    return len(row)


@pytest.mark.parametrize("use_cache", [True, False])
def test_stop_tokens_end_rows_and_are_counted(use_cache):
    model = make_model()
    prompts = random_prompts([3, 7, 5, 2])
    free, _ = generate(model, prompts, 14, temperature=0, use_cache=use_cache)
    stops = {free[0, 3].item(), free[2, 0].item()}  # tokens rows 0 and 2 are known to emit
    new, lengths = generate(model, prompts, 14, temperature=0, stop_tokens=tuple(stops), pad_id=63,
                            use_cache=use_cache)
    assert new.shape == (4, 14)
    for b in range(4):
        n = first_stop(free[b].tolist(), stops)
        assert lengths[b] == n
        assert new[b, :n].tolist() == free[b, :n].tolist()  # includes the stop token itself
        assert (new[b, n:] == 63).all()
    assert lengths[0] <= 4 and lengths[2] == 1


def test_stop_tokens_when_sampling_and_early_exit():
    model = make_model(scale=1.0)
    prompts = random_prompts([3, 7, 5, 2, 4, 4])
    stops = tuple(range(0, 64, 2))  # half the vocabulary: every row stops quickly
    new, lengths = generate(model, prompts, 40, stop_tokens=stops, generator=torch.Generator().manual_seed(0))
    assert new.shape == (6, 40) and lengths.max() < 40
    for b in range(6):
        n = int(lengths[b])
        assert n >= 1 and new[b, n - 1] in stops
        assert not any(t in stops for t in new[b, :n - 1].tolist())
        assert (new[b, n:] == 0).all()


def test_sample_next_is_multinomial_bit_for_bit():
    """The exponential race draws exactly the tokens torch.multinomial draws from the same generator
    (so compaction did not change the runs' random streams), including zero-probability tokens."""
    probs = torch.randn(64, 264, generator=torch.Generator().manual_seed(0)).softmax(-1)
    logits = probs.log().masked_fill(torch.rand(64, 264, generator=torch.Generator().manual_seed(1)) < 0.3,
                                     float("-inf"))
    for seed in range(3):
        expected = torch.multinomial(logits.softmax(-1), 1, generator=torch.Generator().manual_seed(seed))
        got = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got, expected.squeeze(-1))


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_compacting_finished_rows_samples_the_same_tokens(use_cache, temperature):
    """compact=True (finished rows leave the batch and the cache) = compact=False (they ride along
    as padding): the same tokens, lengths and (up to float rounding of a smaller batch) log-probs,
    on a batch whose rows stop at very different steps."""
    model = make_model(scale=1.0 if temperature else 4.0)
    prompts = random_prompts([3, 7, 5, 2, 4, 4, 9, 1], seed=5)
    stops = (1, 2, 3, 5, 8, 13)  # a few frequent-enough stop tokens: rows end anywhere from 1 to 30
    runs = [generate(model, prompts, 30, temperature=temperature, stop_tokens=stops, pad_id=63,
                     generator=torch.Generator().manual_seed(0), use_cache=use_cache, return_logprobs=True,
                     compact=compact) for compact in (True, False)]
    (new, lengths, logp), (ref_new, ref_lengths, ref_logp) = runs
    assert torch.equal(new, ref_new) and torch.equal(lengths, ref_lengths)
    torch.testing.assert_close(logp, ref_logp, rtol=0, atol=1e-5)
    assert len(set(lengths.tolist())) >= 3  # rows really did stop at different steps


def test_kv_cache_keep_rows_keeps_the_filled_slots_of_the_kept_rows():
    config = small_config()
    cache = KVCache(config, batch_size=4, max_len=10)
    k = torch.randn(4, config.n_kv_head, 3, config.head_dim)
    for layer in range(config.n_layer):
        cache.update(layer, k + layer, -k - layer)
    cache.pos = 3
    keep = torch.tensor([True, False, True, False])
    cache.keep_rows(keep)
    assert cache.k.shape[1] == 2 and cache.max_len == 10
    for layer in range(config.n_layer):
        assert torch.equal(cache.k[layer, :, :, :3], k[keep] + layer)
        assert torch.equal(cache.v[layer, :, :, :3], -k[keep] - layer)


def test_autocast_is_bf16_on_cuda_only():
    """The GPU path, checked without a GPU: CUDA devices get bf16 autocast (unless GPT.cuda_bf16 is
    off), CPUs run plain float32, and logits come back float32 either way."""
    import warnings
    from contextlib import nullcontext
    from model import autocast_for
    assert isinstance(autocast_for(torch.device("cpu")), nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": only the context's settings are checked
        ctx = autocast_for(torch.device("cuda"))
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
        GPT.cuda_bf16 = False
        try:
            assert isinstance(autocast_for(torch.device("cuda")), nullcontext)
        finally:
            GPT.cuda_bf16 = True
    model = make_model()
    seen = []
    model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    logits = model(torch.tensor([[1, 2, 3]]))
    assert seen == [torch.float32] and logits.dtype == torch.float32


def test_forward_returns_float32_logits_under_an_outer_autocast():
    """A caller's bf16 autocast (a CPU run that opts in) still gets float32 logits for its losses."""
    model = make_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, model(torch.tensor([[1, 2, 3]])), atol=0.5, rtol=0.05)


def test_generate_restores_mode_and_returns_trainable_tokens():
    model = make_model(scale=1.0).train()
    new, lengths = generate(model, [[1, 2, 3]], 4)
    assert model.training and not new.requires_grad
    model(new).sum().backward()  # not inference-mode tensors: usable as training inputs
    model.eval()
    generate(model, [[1, 2, 3]], 4)
    assert not model.training
    new, lengths = generate(model, [[1], [2, 3]], 0)
    assert new.shape == (2, 0) and lengths.tolist() == [0, 0]


@pytest.mark.parametrize("prompts,kwargs,field", [
    ([], {}, "prompts"),
    ([[1, 2], []], {}, r"prompts\[1\]"),
    ([1, 2, 3], {}, "prompts"),
    ([list(range(60)) + [1] * 5], {}, "max_seq_len"),
    ([[1] * 60], dict(max_new_tokens=5), "max_new_tokens"),
    ([[1, 64]], {}, "vocab_size"),
    ([[-1, 2]], {}, "vocab_size"),
    ([[1]], dict(max_new_tokens=-1), "max_new_tokens"),
    ([[1]], dict(temperature=-0.5), "temperature"),
    ([[1]], dict(top_p=0.0), "top_p"),
    ([[1]], dict(top_p=1.5), "top_p"),
    ([[1]], dict(top_k=0), "top_k"),
    ([[1]], dict(stop_tokens=(64,)), "stop_tokens"),
    ([[1]], dict(pad_id=64), "pad_id"),
])
def test_generate_rejects_bad_input_naming_the_field(prompts, kwargs, field):
    model = make_model(scale=1.0)
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=field):
        generate(model, prompts, **kwargs)


# ----------------------------------------------------------------------------- learning


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(small_config(n_embd=64))
    x = torch.randint(0, 64, (4, 24))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        logits = model(x[:, :-1])                                             # (B, T-1, V)
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.5 and losses[-1] < 0.1, (losses[0], losses[-1])


# ----------------------------------------------------------------------------- checkpoints and HF export


@pytest.mark.parametrize("tie", [True, False])
def test_export_hf_round_trip(tmp_path, tie):
    model = make_model(tie_embeddings=tie, rope_theta=500.0)
    export_hf(model, str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["num_hidden_layers"], cfg["head_dim"], cfg["vocab_size"], cfg["max_position_embeddings"]) == \
        (32, model.config.hidden_dim, 4, 2, 2, 8, 64, 64)
    assert cfg["rope_theta"] == 500.0 and cfg["rms_norm_eps"] == 1e-5 and cfg["tie_word_embeddings"] is tie
    assert cfg["hidden_act"] == "silu" and cfg["attention_bias"] is False and cfg["mlp_bias"] is False
    assert cfg["torch_dtype"] == "float32"
    weights = read_safetensors(str(tmp_path / "model.safetensors"))
    assert "model.layers.1.self_attn.k_proj.weight" in weights and "model.norm.weight" in weights
    assert "model.layers.0.mlp.gate_proj.weight" in weights and "model.layers.0.input_layernorm.weight" in weights
    assert ("lm_head.weight" in weights) is not tie
    back = load_hf(str(tmp_path))
    assert back.config == model.config
    x = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.equal(back.eval()(x), model(x))


HF_REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_reference")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "llama3"])
def test_load_hf_matches_transformers_logits_and_greedy_tokens(arch):
    """Checkpoints written by transformers (tests/make_hf_reference.py: Llama with tied embeddings in
    one file; Qwen2 with q/k/v biases, untied, rope theta 1e6, in 4 shards; Llama with Llama 3.1's
    rope scaling) load into our GPT with transformers' own float32 logits (relative error <= 1e-4)
    and its greedy tokens exactly."""
    with open(os.path.join(HF_REFERENCE, "reference.json")) as f:
        ref = json.load(f)[arch]
    model = load_hf(os.path.join(HF_REFERENCE, arch)).eval()
    assert model.config.attention_bias is (arch == "qwen2") and model.config.tie_embeddings is (arch != "qwen2")
    assert (model.config.rope_scaling is not None) is (arch == "llama3")
    ids = torch.tensor(ref["input_ids"])
    expected = torch.tensor(ref["logits"])
    with torch.no_grad():
        got = model(ids)
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel <= 1e-4, rel
    tokens, _ = generate(model, [ref["input_ids"][0]], 10, temperature=0)
    assert tokens[0].tolist() == ref["greedy"]
    if arch == "llama3":  # the scaling matters at these positions: plain RoPE is far off
        plain = GPT(dataclasses.replace(model.config, rope_scaling=None)).eval()
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert ((plain(ids) - expected).abs().max() / expected.abs().max()).item() > 1e-2


@pytest.mark.parametrize("arch", ["qwen2", "llama3"])
def test_hf_export_of_a_loaded_model_loads_back_exactly(tmp_path, arch):
    model = load_hf(os.path.join(HF_REFERENCE, arch)).eval()
    export_hf(model, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == ("qwen2" if arch == "qwen2" else "llama")
    back = load_hf(str(tmp_path)).eval()
    assert back.config == model.config
    x = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_safetensors_round_trip_of_every_dtype(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16), "c": torch.arange(6).view(2, 3),
               "d": torch.randn(2, 2).half(), "empty": torch.zeros(0, 3)}
    write_safetensors(tensors, str(tmp_path / "x.safetensors"))
    back = read_safetensors(str(tmp_path / "x.safetensors"))
    assert list(back) == list(tensors) and all(torch.equal(back[k], v) and back[k].dtype == v.dtype
                                               for k, v in tensors.items())


def _set_config(d, **fields):
    (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), **fields}))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


BAD_HF_DIRECTORIES = [  # (reference model, what breaks it, the error's words)
    ("llama", lambda d: (d / "config.json").unlink(), "config.json: missing"),
    ("qwen2", lambda d: (d / "model-00002-of-00004.safetensors").unlink(),
     "model-00002-of-00004.safetensors: a shard named by"),
    ("llama", lambda d: _set_config(d, model_type="gemma2"), "model_type 'gemma2' is not supported"),
    ("llama", lambda d: _set_config(d, intermediate_size=96), "hidden_dim: weights have 64, config has 96"),
    ("llama", lambda d: _set_config(d, rope_scaling={"rope_type": "yarn"}), "rope scaling 'yarn' is not supported"),
    ("llama", lambda d: _set_config(d, rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     "llama3 rope scaling needs factor, low_freq_factor"),
    ("llama", lambda d: _truncate(d / "model.safetensors"), r"model.safetensors: tensor .* \(truncated\?\)"),
    ("llama", lambda d: (d / "model.safetensors").write_bytes(b"\x05"), "model.safetensors: not a safetensors file"),
    ("llama", lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
]


@pytest.mark.parametrize("arch, breakage, message", BAD_HF_DIRECTORIES)
def test_bad_hf_directories_are_one_line_errors_naming_the_file(tmp_path, arch, breakage, message):
    directory = tmp_path / arch
    shutil.copytree(os.path.join(HF_REFERENCE, arch), directory)
    breakage(directory)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        load_hf(str(directory))
    assert "\n" not in str(info.value)


def test_loading_mismatched_weights_names_the_field(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match="n_layer"):
        GPT(small_config(n_layer=3)).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="hidden_dim"):
        GPT(small_config(hidden_dim=64)).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="n_kv_head"):
        GPT(small_config(n_kv_head=4)).load_state_dict(model.state_dict())
    export_hf(model, str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "vocab_size": 72}))
    with pytest.raises(ValueError, match="vocab_size"):
        load_hf(str(tmp_path))
