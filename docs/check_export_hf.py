"""Check that model.export_hf writes a checkpoint transformers loads with the same logits.

transformers is NOT a dependency of this project; run this in a throwaway environment:
    python -m venv --system-site-packages /tmp/hfenv && /tmp/hfenv/bin/pip install transformers
    /tmp/hfenv/bin/python docs/check_export_hf.py
"""
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig, export_hf, load_hf  # noqa: E402

import transformers  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

torch.manual_seed(0)
for preset, tie in (("nano", False), ("tiny", True), ("tiny", False)):
    model = GPT(GPTConfig.from_preset(preset, tie_embeddings=tie)).eval()
    with torch.no_grad():  # random, non-trivial norm gains, so the check sees them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    idx = torch.randint(0, model.config.vocab_size, (3, 40))
    with tempfile.TemporaryDirectory() as d:
        export_hf(model, d)
        hf, info = LlamaForCausalLM.from_pretrained(d, output_loading_info=True)
        hf.eval()
        with torch.no_grad():
            ours, theirs = model(idx), hf(idx).logits
        missing, unexpected = info["missing_keys"], info["unexpected_keys"]
        diff = (ours - theirs).abs().max().item()
        print(f"transformers {transformers.__version__} | preset {preset} tie {tie} | missing {missing} | "
              f"unexpected {unexpected} | max |logit diff| {diff:.2e}")
        assert not missing and not unexpected and diff < 1e-4
        hf.save_pretrained(d + "/saved")  # and back: a checkpoint written BY transformers loads into GPT
        back = load_hf(d + "/saved").eval()
        with torch.no_grad():
            back_diff = (back(idx) - theirs).abs().max().item()
        print(f"  load_hf(save_pretrained(...)) max |logit diff| {back_diff:.2e}")
        assert back_diff < 1e-4
print("OK: export_hf checkpoints load in transformers with the same logits")
