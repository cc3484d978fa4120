"""Real small models from a local Hugging Face directory (issue 25), end to end through the scripts:
a tiny synthetic Qwen2 checkpoint (our GPT with attention biases, written by export_hf, its
embedding table padded past its tokenizer as Qwen2.5's is) with the reference Qwen2-style
tokenizer of tests/hf_reference. The loading itself is checked against transformers' logits in
test_model.py and test_tokenizer.py; here: the tokenizer travels with the model, the prompt is
TinyZero's, completions end at the text "</answer>", and every stage script runs on hf:DIR."""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch

import distill
import evaluate
import grpo
import sft
from common import TokenizerMismatch, checkpoint_sha256, load_checkpoint, load_model, read_metrics, save_checkpoint
from conftest import ROOT
from model import GPT, GPTConfig, KVCache, completion_text, cut_after_answer, ended, export_hf, load_hf, stop_tokens
from rewards import format_reward
from tasks import CountdownTask, format_prompt, get_task, prefill, sample_problems
from tokenizer import EOT, HFTokenizer, get_tokenizer, use_tokenizer

TOKENIZER = os.path.join(ROOT, "tests", "hf_reference", "tokenizer-qwen2")

# TinyZero's base-model prompt (examples/data_preprocess/countdown.py, template_type "base"), typed
# out here so that the test does not read it from the code it checks
TINYZERO = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
            "The assistant first thinks about the reasoning process in the mind and then provides the user with "
            "the answer.\nUser: Using the numbers {numbers}, create an equation that equals {target}. You can use "
            "basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
            "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> "
            "(1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>")


@pytest.fixture(autouse=True)
def project_tokenizer_around():
    """Each test starts with the project's tokenizer, unsettled (another test file may have loaded
    our models in this process), and the next one does too."""
    use_tokenizer(None)
    yield
    use_tokenizer(None)


def make_tiny_qwen2(where, eos: str = "<|endoftext|>", vocab: int = 400) -> str:
    """A Hugging Face Qwen2 directory: config.json, model.safetensors, tokenizer.json (388 tokens)
    and tokenizer_config.json; returns "hf:<dir>"."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, hidden_dim=64,
                          max_seq_len=1024, rope_theta=1e6, attention_bias=True, tie_embeddings=False))
    export_hf(model, str(where))
    shutil.copy(os.path.join(TOKENIZER, "tokenizer.json"), where)
    with open(os.path.join(where, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": eos, "chat_template": "{{ messages }}"}, f)  # a base model ships one too
    return f"hf:{where}"


@pytest.fixture
def tiny_qwen2(tmp_path):
    return make_tiny_qwen2(tmp_path / "qwen2-tiny")


def test_loading_a_real_model_puts_its_tokenizer_and_template_in_use(tiny_qwen2):
    assert get_tokenizer().template == "chat" and format_prompt("q") == "<|user|>q<|assistant|>"
    ckpt = load_checkpoint(tiny_qwen2)
    tok = get_tokenizer()
    assert isinstance(tok, HFTokenizer) and ckpt["tokenizer"] == tok.name and tok.eot_id == 0
    assert ckpt["model_config"]["vocab_size"] == 400 and tok.vocab_size == 388
    p = sample_problems(CountdownTask(), 1, "train", seed=3)[0]
    assert format_prompt(p.question) == TINYZERO.format(numbers=list(p.numbers), target=p.target)
    assert prefill() == "<think>"  # the template wrote it: judged as the completion's start
    assert format_reward(prefill() + "3+4</think><answer>3+4</answer>") == 1.0
    # another task's question carries no format instruction: the system line is R1's whole Table 1
    pairsum = format_prompt(sample_problems(get_task("pairsum"), 1, "train", seed=0)[0].question)
    assert "<answer> answer here </answer>.\nUser: Which two of" in pairsum and pairsum.endswith("\n<think>")


def test_cut_after_answer_matches_a_prefix_by_prefix_loop(tiny_qwen2):
    load_checkpoint(tiny_qwen2)
    tok = get_tokenizer()
    rng = random.Random(0)
    words = ["</", "answer", ">", "</answer>", "x", " 7", "é", "🙂", "<think>", "ans", "wer>", "\n"]
    for _ in range(200):
        ids = tok.encode("".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
        if rng.random() < 0.2:
            ids.insert(rng.randint(0, len(ids)), 395)  # a padded row of the embedding: spells nothing
        slow = next((ids[:n] for n in range(1, len(ids) + 1) if "</answer>" in tok.decode(ids[:n])), ids)
        assert cut_after_answer(tok, ids) == slow
        assert ended(tok, slow) == ("</answer>" in tok.decode(slow))
    assert stop_tokens(tok) == (tok.eot_id,) and ended(tok, tok.encode("no answer") + [tok.eot_id])
    assert tok.decode([395, *tok.encode("ok")]) == "ok"


class _Pieces:
    """A vocabulary of a few multi-character pieces, as a real one has ('>.' after '</answer')."""
    special_ids, pieces = {}, ["<think>", "7", "</think><answer>7</answer", ">.", " more"]

    def decode_bytes(self, ids):
        return "".join(self.pieces[i] for i in ids).encode()

    def decode(self, ids):
        return self.decode_bytes(ids).decode()


def test_a_token_that_spells_past_answer_is_kept_but_not_judged():
    tok, ids = _Pieces(), [0, 1, 2, 3, 4]
    assert cut_after_answer(tok, ids) == [0, 1, 2, 3]                   # the token completing "</answer>"
    assert completion_text(tok, [0, 1, 2, 3]) == "<think>7</think><answer>7</answer>"   # without its "."
    assert format_reward(completion_text(tok, [0, 1, 2, 3])) == 1.0 and format_reward(tok.decode([0, 1, 2, 3])) == 0.0


def test_countdown_smoke_run_then_every_script_reads_its_checkpoint(tiny_qwen2, tmp_path):
    out = str(tmp_path / "grpo")
    grpo.main(["--init-from", tiny_qwen2, "--task", "countdown", "--preset", "smoke", "--out-dir", out])
    train = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if r["kind"] == "train"]
    assert len(train) == 2 and all(0 < r["len"] <= 16 for r in train)
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=False)
    assert ckpt["tokenizer"] == get_tokenizer().name and ckpt["init_sha256"] == checkpoint_sha256(tiny_qwen2)
    assert os.path.exists(os.path.join(out, "tokenizer.json"))  # the tokenizer went with the checkpoint
    # a fresh process: the checkpoint alone brings back its tokenizer and task (Countdown)
    code = ("import evaluate, tokenizer; evaluate.main(['--ckpt', %r, '--n-problems', '2', '--k', '2']); "
            "print('TOKENIZER', tokenizer.get_tokenizer().name)" % out)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"TOKENIZER {ckpt['tokenizer']}" in result.stdout
    assert json.load(open(os.path.join(out, "eval.json")))["task"].startswith("CountdownTask")


def test_sft_rewrites_chat_rows_in_the_real_models_template(tiny_qwen2, tmp_path):
    rows = [json.loads(line) for line in open(os.path.join(ROOT, "data", "cold_start.jsonl"))][:8]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    load_checkpoint(tiny_qwen2)
    tok = get_tokenizer()
    (p, c), row = sft.tokenize_rows(rows[:1], tok)[0], rows[0]
    question = row["prompt"].removeprefix("<|user|>").removesuffix("<|assistant|>")
    assert tok.decode(p) == format_prompt(question) and tok.decode(p).endswith("<think>")
    assert tok.decode(c) == row["completion"].removeprefix("<think>").replace(EOT, tok.decode([tok.eot_id]))
    sft.main(["--init-from", tiny_qwen2, "--data", str(data), "--out-dir", str(tmp_path / "sft"), "--steps", "2",
              "--eval-problems", "0"])
    model, ckpt = load_model(str(tmp_path / "sft"))
    assert ckpt["step"] == 2 and model.config.attention_bias


def test_distill_student_from_a_real_model(tiny_qwen2, tmp_path, capsys):
    rows = [json.loads(line) for line in open(os.path.join(ROOT, "data", "distill.jsonl"))][:16]
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    distill.main(["--student-base", tiny_qwen2, "--reference-data", str(data), "--epochs", "1", "--out-dir",
                  str(tmp_path / "student"), "--teacher", str(tmp_path / "none"), "--rl-student",
                  str(tmp_path / "none"), "--eval-problems", "2", "--eval-k", "2"])
    table = capsys.readouterr().out
    assert "student base" in table and "student distilled (SFT)" in table


def test_one_process_one_tokenizer(tiny_qwen2, tmp_path, capsys):
    ours = str(tmp_path / "ours")
    save_checkpoint(ours, GPT(GPTConfig.from_preset("pico")))  # made with the project's tokenizer
    load_checkpoint(tiny_qwen2)
    with pytest.raises(TokenizerMismatch, match="one process holds one tokenizer"):
        load_checkpoint(ours)
    use_tokenizer(None)
    load_checkpoint(ours)  # the other order: once a model is loaded, the tokenizer is settled
    with pytest.raises(TokenizerMismatch, match="one process holds one tokenizer"):
        load_checkpoint(tiny_qwen2)
    assert get_tokenizer().template == "chat"
    use_tokenizer(None)
    for argv in (["--compare", ours, tiny_qwen2], ["--compare", tiny_qwen2, ours]):  # refused before any work
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv)
        assert e.value.code == 2 and "made with different tokenizers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a teacher that would sample in this process, then a real student
        distill.main(["--teacher", ours, "--student-base", tiny_qwen2, "--out-dir", str(tmp_path / "d")])
    assert e.value.code == 2 and "made with different tokenizers" in capsys.readouterr().err


def test_export_of_a_model_trained_from_a_real_one_carries_its_tokenizer(tiny_qwen2, tmp_path):
    model, _ = load_model(tiny_qwen2)
    export_hf(model, str(tmp_path / "export"))
    assert open(tmp_path / "export" / "tokenizer.json", "rb").read() == \
        open(os.path.join(TOKENIZER, "tokenizer.json"), "rb").read()
    again = load_hf(str(tmp_path / "export"))
    x = torch.randint(0, 388, (2, 9))
    assert torch.equal(model(x)[0], again(x)[0])


def test_a_real_models_rows_and_forced_prefixes(tmp_path, monkeypatch):
    """Rows spell the end of text as ours (EOT) and sft maps it to the tokenizer's own, whatever the
    prompt's form; forced prefixes (written for our template) are not used with a real model."""
    monkeypatch.chdir(tmp_path)  # evaluate.py writes out/hf-NAME/ under the working directory
    llama3 = make_tiny_qwen2(tmp_path / "llama3-like")  # the same model, Llama 3's end-of-text token
    spec = json.load(open(tmp_path / "llama3-like" / "tokenizer.json"))
    spec["added_tokens"][0]["content"] = "<|end_of_text|>"
    spec["model"]["vocab"]["<|end_of_text|>"] = spec["model"]["vocab"].pop("<|endoftext|>")
    json.dump(spec, open(tmp_path / "llama3-like" / "tokenizer.json", "w"))
    json.dump({"eos_token": "<|end_of_text|>"}, open(tmp_path / "llama3-like" / "tokenizer_config.json", "w"))
    model, _ = load_model(llama3)
    tok = get_tokenizer()
    assert tok.decode([tok.eot_id]) == "<|end_of_text|>"
    samples = evaluate.sample_training_set(llama3, get_task("countdown"), 2, 2, 8, (0, 1), str(tmp_path / "p"), "cpu")[0]
    assert all(c.startswith("<think>") and c.endswith(EOT) and "<|end_of_text|>" not in c for _, c in samples)
    row = {"prompt": format_prompt("q"), "completion": "3+4</think><answer>7</answer>" + EOT}
    p, c = sft.tokenize_rows([row], tok)[0]
    assert c[-1] == tok.eot_id and tok.decode(p) == row["prompt"]
    assert format_reward("<think>3+4</think><answer>7</answer>" + EOT) == 1.0
    evaluate.main(["--ckpt", llama3, "--task", "add", "--n-problems", "1", "--k", "1"])  # --forced is the default
    result = json.load(open(tmp_path / "out" / "hf-llama3-like" / "eval.json"))  # not in the model's directory
    assert result["task"].startswith("AdditionTask") and not any(k.startswith("forced_") for k in result)
    assert not os.path.exists(tmp_path / "llama3-like" / "eval.json")


def test_instruct_models_and_bad_directories_are_one_line_errors(tmp_path, capsys):
    instruct = make_tiny_qwen2(tmp_path / "instruct", eos="<|im_end|>")
    no_tokenizer = make_tiny_qwen2(tmp_path / "no-tokenizer")
    os.remove(tmp_path / "no-tokenizer" / "tokenizer.json")
    for init, message in [(instruct, "eos_token '<|im_end|>' ends a chat turn: an instruct model"),
                          (no_tokenizer, "tokenizer.json: missing")]:
        with pytest.raises(SystemExit) as e:
            grpo.main(["--init-from", init, "--task", "countdown", "--preset", "smoke", "--out-dir",
                       str(tmp_path / "out")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    for argv in (["distill.py", "--student-base", f"hf:{tmp_path}/typo"], ["pipeline.py", "--base", instruct]):
        result = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and ("typo/config.json" in result.stderr or "run the stages one by one"
                                           in result.stderr), result.stderr
        assert not os.path.exists(os.path.join(ROOT, f"hf:{tmp_path}"))  # never pretrained into "hf:..."
    result = subprocess.run([sys.executable, "grpo.py", "--init-from", instruct, "--task", "countdown"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "an instruct model" in result.stderr and "Traceback" not in result.stderr


def test_memory_estimate_against_the_tensors_it_counts():
    config = GPTConfig(vocab_size=300, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, hidden_dim=96, max_seq_len=256,
                       attention_bias=True)
    cfg = grpo.GRPOConfig(init_from="x", prompts_per_step=4, group_size=2, max_new_tokens=40, micro_batch_size=3)
    est = grpo.memory_estimate(config, cfg, prompt_len=24)
    model = GPT(config)
    assert est["params (B)"] * 1e9 == model.num_params()
    n_bytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors) / 2 ** 30  # noqa: E731
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 2, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if t.dim() > 0]
    grads = [p.grad for p in model.parameters()]
    assert est["weights+grads+AdamW"] == pytest.approx(n_bytes([*model.parameters(), *grads, *state]))
    cache = KVCache(config, batch_size=8, max_len=64)  # 4 x 2 rows, 24 + 40 positions
    assert est["KV cache (rollout)"] == pytest.approx(n_bytes([cache.k, cache.v]))
    assert est["logits (update)"] == pytest.approx(3 * n_bytes([torch.zeros(3, 64, 300)]))


def test_the_gpu_presets_fit_their_cards_by_the_estimate():
    """The presets' promise (docs/REAL_MODELS.md): Qwen2.5-0.5B on a 24 GB card (24 GiB, an RTX 4090),
    Qwen2.5-1.5B on an 80 GB one (79.6 GiB, an H100), with 20% left for the allocator and CUDA's own
    memory (published shapes, bench.REAL_MODELS)."""
    import bench
    for name, preset, card in [("Qwen2.5-0.5B", "gpu-24gb", 24), ("Qwen2.5-1.5B", "gpu-80gb", 79.6)]:
        L, C, H, K, hidden, V = bench.REAL_MODELS[name]
        model = GPTConfig(n_layer=L, n_embd=C, n_head=H, n_kv_head=K, hidden_dim=hidden, vocab_size=V,
                          max_seq_len=2048, tie_embeddings=True, attention_bias=True)
        parts = grpo.memory_estimate(model, grpo.GRPOConfig(**grpo.PRESETS[preset]), bench.COUNTDOWN_PROMPT_TOKENS)
        params = parts.pop("params (B)")
        assert sum(parts.values()) < 0.8 * card, (name, parts)
        assert abs(params - float(name.split("-")[-1].rstrip("B"))) < 0.1
