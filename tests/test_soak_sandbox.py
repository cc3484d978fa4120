"""soak_sandbox.py in its short form: one RL-sized batch where half the programs are hostile (every
kind once): they score 0, the benign ones in the same batch still pass, and nothing is left behind,
under bubblewrap and without it."""
import os

import pytest

import sandbox
import soak_sandbox

HAVE_BWRAP = sandbox.bwrap_path() is not None


@pytest.fixture
def restore_isolation(monkeypatch):
    """soak_sandbox.main(["--fallback"]) switches bubblewrap off for the whole process: switch it back.
    The fallback's working directories go to a tmpfs: on a disk mounted with `discard` each rmdir of
    the deep-tree program's thousand directories costs milliseconds (seconds in all)."""
    import tempfile
    saved = dict(sandbox._bwrap_state)
    if os.access("/dev/shm", os.W_OK):
        root = tempfile.mkdtemp(dir="/dev/shm")
        os.chmod(root, 0o1777)
        monkeypatch.setattr(tempfile, "tempdir", root)
    yield
    sandbox._bwrap_state.clear()
    sandbox._bwrap_state.update(saved)
    if os.access("/dev/shm", os.W_OK):
        assert os.listdir(root) == [] and sandbox._remove_tree(root)


@pytest.mark.parametrize("flags", [
    pytest.param([], id="bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="no working bwrap")),
    pytest.param(["--fallback"], id="fallback", marks=pytest.mark.skipif(
        os.geteuid() != 0 and not sandbox.landlock_abi(),
        reason="without bubblewrap, Landlock or root's fallback (an unprivileged uid) keeps the file writer out")),
])
@pytest.mark.slow
def test_hostile_batch_scores_zero_and_leaves_nothing_behind(flags, capsys, restore_isolation):
    kinds = len(soak_sandbox.hostile_programs("/nonexistent"))
    r = soak_sandbox.main(["--steps", "1", "--batch", str(2 * kinds), "--hostile", "0.5", "--timeout-s", "0.5",
                           "--throughput-programs", "0", *flags])
    assert r["n_hostile"] == kinds and r["hostile_max"] == 0.0 and r["benign_mean"] == 1.0
    assert r["processes"] == [] and r["files"] == [] and r["tmp_dirs"] == []
    assert "left behind: 0 processes, 0 files outside the sandbox, 0 temporary directories" in capsys.readouterr().out


def test_hostile_scorer_swaps_the_share_in_and_records_what_those_scored():
    """The in-loop soak's scorer: a quarter of each batch is replaced by hostile programs (in turn)
    before the real scorer sees it, and what exactly those scored is recorded."""
    import random

    seen, record = [], []

    def fake_score_batch(texts, problems):
        seen.append(texts)
        return [(0.5, {"accuracy": float(t.startswith("own"))}) for t in texts]

    programs = ["print(1)", "print(2)"]
    scorer = soak_sandbox.hostile_scorer(fake_score_batch, programs, 0.25, random.Random(0), record)
    texts = [f"own {i}" for i in range(8)]
    scored = scorer(texts, [{}] * 8)
    swapped = [i for i, t in enumerate(seen[0]) if not t.startswith("own")]
    assert len(swapped) == 2 and all(seen[0][i] == soak_sandbox.completion(programs[i % 2]) for i in swapped)
    assert [seen[0][i] for i in range(8) if i not in swapped] == [texts[i] for i in range(8) if i not in swapped]
    assert record == [0.0, 0.0] and len(scored) == 8


def test_the_rl_soak_refuses_a_missing_base_model_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        soak_sandbox.main(["--grpo-steps", "2", "--init-from", str(tmp_path / "nothing")])
    assert e.value.code == 2 and "python pretrain.py --task code" in capsys.readouterr().err
