"""Imported first by every stage script: a package of requirements.txt that is not installed is one
line on stderr and exit 2 (what a bad command line gets), not an import traceback.

    python grpo.py     # without torch: "error: not installed: torch; run: pip install ..."
"""
import importlib
import sys

REQUIRED = ("torch", "numpy", "tiktoken", "regex", "tqdm")  # requirements.txt's, for the scripts to run

missing = []
for name in REQUIRED:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
if missing:
    print(f"error: not installed: {', '.join(missing)}; run: pip install torch==2.13.0 --index-url "
          f"https://download.pytorch.org/whl/cpu && pip install -r requirements.txt (README.md, Install)",
          file=sys.stderr)
    sys.exit(2)
