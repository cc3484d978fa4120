"""Make the tiny Hugging Face reference checkpoints that tests/test_model.py loads through model.load_hf.

Run once, by hand, where transformers is installed (it is never a dependency of the project, and
the tests never import it: they read what this script wrote):

    pip install --target /tmp/hf transformers safetensors && rm -rf /tmp/hf/numpy*
    PYTHONPATH=/tmp/hf python tests/make_hf_reference.py

It writes tests/hf_reference/llama/ (tied embeddings, one model.safetensors), tests/hf_reference/
qwen2/ (q/k/v biases, untied, rope theta 1e6, sharded with model.safetensors.index.json), and
tests/hf_reference/reference.json: per model the input ids, transformers' float32 logits for them,
a 10-token greedy continuation, and the library versions. Random weights (seed 0), made larger
than the default init so the logits and the greedy choices are far from ties.
"""
import json
import os

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_reference")
SHAPE = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, initializer_range=0.2)
MODELS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**SHAPE, rope_theta=500000.0, tie_word_embeddings=True), None),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**SHAPE, rope_theta=1000000.0, tie_word_embeddings=False), "40KB"),
}


def main() -> None:
    torch.manual_seed(0)
    reference = {}
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
    reference["versions"] = {"transformers": transformers.__version__, "torch": torch.__version__}
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main()
