"""soak_sandbox.py in its short form: one RL-sized batch where half the programs are hostile (every
kind once): they score 0, the benign ones in the same batch still pass, and nothing is left behind."""
import os

import pytest

import sandbox
import soak_sandbox


@pytest.mark.skipif(sandbox.bwrap_path() is None and os.geteuid() != 0,
                    reason="without bubblewrap, only root's fallback (an unprivileged uid) keeps the file writer out")
def test_hostile_batch_scores_zero_and_leaves_nothing_behind(capsys):
    kinds = len(soak_sandbox.hostile_programs("/nonexistent"))
    r = soak_sandbox.main(["--steps", "1", "--batch", str(2 * kinds), "--hostile", "0.5", "--timeout-s", "0.5",
                           "--throughput-programs", "0"])
    assert r["n_hostile"] == kinds and r["hostile_max"] == 0.0 and r["benign_mean"] == 1.0
    assert r["processes"] == [] and r["files"] == [] and r["tmp_dirs"] == []
    assert "left behind: 0 processes, 0 files outside the sandbox, 0 temporary directories" in capsys.readouterr().out
