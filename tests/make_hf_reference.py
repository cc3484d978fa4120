"""Make the tiny Hugging Face reference checkpoints that tests/test_model.py loads through model.load_hf.

Run once, by hand, where transformers is installed (it is never a dependency of the project, and
the tests never import it: they read what this script wrote):

    pip install --target /tmp/hf transformers safetensors && rm -rf /tmp/hf/numpy*
    PYTHONPATH=/tmp/hf python tests/make_hf_reference.py

It writes tests/hf_reference/llama/ (tied embeddings, one model.safetensors), tests/hf_reference/
qwen2/ (q/k/v biases, untied, rope theta 1e6, sharded with model.safetensors.index.json),
tests/hf_reference/llama3/ (Llama 3.1's "llama3" rope scaling), and
tests/hf_reference/reference.json: per model the input ids, transformers' float32 logits for them,
a 10-token greedy continuation, and the library versions. Random weights (seed 0), made larger
than the default init so the logits and the greedy choices are far from ties.

And three byte-level BPE tokenizers trained by the `tokenizers` library on a small multilingual text
(tests/hf_reference/tokenizer-qwen2/: NFC normalizer, Qwen2's split pattern, added special tokens;
tokenizer-gpt2/: GPT-2's byte-level pre-tokenizer; tokenizer-digits/: SmolLM2's, single digits
split off before GPT-2's pattern), with the token ids `tokenizers` gives for
TOKENIZER_TEXTS (numbers, whitespace runs, non-ASCII text, special tokens) in reference.json.
"""
import json
import os

import tokenizers
import torch
import transformers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_reference")
SHAPE = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, initializer_range=0.2)
MODELS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**SHAPE, rope_theta=500000.0, tie_word_embeddings=True), None),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**SHAPE, rope_theta=1000000.0, tie_word_embeddings=False), "40KB"),
    # Llama 3.1's rope scaling, with a short original context so that every branch of it acts on the
    # 12 test positions (the shortest wavelength is interpolated, the longer ones stretched)
    "llama3": (LlamaForCausalLM, LlamaConfig(**SHAPE, tie_word_embeddings=True, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}), None),
}


QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAINING_TEXT = ["What is 472 + 385? The answer is 857.", "¿Qué dos de 7 1 3 5 suman 8? entonces la respuesta es 3+5.",
                 "Which two of 7 1 3 5 add up to 8? so the answer is 3+5.", "def f(x):\n    return x * 2\n\n\n",
                 "naïve café — 東京 🙂 ünïcödé", "    indented   spaces\t\ttabs\r\nwindows lines"] * 20
TOKENIZER_TEXTS = ["What is 472 + 385?", "1234567890 12,345.67 -0.5e10", "  two  spaces,   three,\t\ttabs\n\n\nlines",
                   "¿Qué dos de 7 1 3 5 suman 8? Ünïcödé: naïve café, 東京, 🙂👍🏽", "e\u0301 (e + combining acute)",
                   "<|endoftext|>text<|im_start|>user\nhi<|im_end|>", "don't I'LL we've", "x" * 50, "",
                   "a   1  22\t333 x4y55 ٣٤ ½"]  # whitespace runs before digits, other scripts' digits


def make_tokenizer(kind: str) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.BPE())
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "digits":  # SmolLM2's (and StarCoder2's): every digit its own piece, then GPT-2's split
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    return tok


def main() -> None:
    torch.manual_seed(0)
    reference = {}
    for kind in ("qwen2", "gpt2", "digits"):
        tok = make_tokenizer(kind)
        out = os.path.join(HERE, f"tokenizer-{kind}")
        os.makedirs(out, exist_ok=True)
        tok.save(os.path.join(out, "tokenizer.json"))
        reference[f"tokenizer-{kind}"] = {"texts": TOKENIZER_TEXTS,
                                          "ids": [tok.encode(t, add_special_tokens=False).ids for t in TOKENIZER_TEXTS]}
    for name, (cls, config, shard) in MODELS.items():
        config._attn_implementation = "eager"
        model = cls(config).eval()
        with torch.no_grad():  # norm gains and biases away from their init (1 and 0), so the tests see them
            for pname, p in model.named_parameters():
                if "norm" in pname or pname.endswith("bias"):
                    p.add_(0.3 * torch.randn_like(p))
        ids = torch.randint(0, SHAPE["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = model(ids).logits.float()                      # (2, 12, V)
            seq = ids[:1]
            for _ in range(10):                                     # greedy, one token at a time
                nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        for f in os.listdir(out):
            os.remove(os.path.join(out, f))
        model.save_pretrained(out, **({"max_shard_size": shard} if shard else {}))
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(out, extra)):
                os.remove(os.path.join(out, extra))
        reference[name] = {"input_ids": ids.tolist(), "logits": [[[round(v, 7) for v in row] for row in b]
                                                                  for b in logits.tolist()],
                           "greedy": seq[0, 12:].tolist(), "files": sorted(os.listdir(out))}
        print(name, sorted(os.listdir(out)))
    reference["versions"] = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                             "torch": torch.__version__}
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main()
