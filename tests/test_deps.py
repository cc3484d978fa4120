"""deps.py: a script started without a required package says so in one line and exits 2."""
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("script", ["grpo.py", "pretrain.py", "sft.py", "distill.py", "evaluate.py", "pipeline.py"])
def test_a_missing_package_is_one_line_and_exit_2(script):
    hide = "import sys; sys.modules['torch'] = sys.modules['tiktoken'] = None"  # as if not installed
    run = f"{hide}; import runpy; sys.argv = [{script!r}, '--steps', '-1']; runpy.run_path({script!r}, run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: not installed: torch, tiktoken; run: pip install")
    assert len(result.stderr.strip().splitlines()) == 1
