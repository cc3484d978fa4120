"""bench.py: every section runs and prints its table (tiny sizes; the figures are bench.py's job, not
a test's)."""
import pytest

import bench


@pytest.mark.slow
def test_train_memory_and_compile_sections_print_their_tables(capsys):
    bench.main(["--sections", "train,memory", "--presets", "nano", "--batch-size", "2", "--seq-len", "32",
                "--train-steps", "1", "--matmul-size", "64"])
    out = capsys.readouterr().out
    assert "| nano | 0.80M |" in out and "fraction of matmul peak" in out
    assert "MiB | peak resident set growth of a fresh process |" in out


def test_rollout_and_step_sections_skip_without_checkpoints(capsys, tmp_path):
    bench.main(["--sections", "rollout,step", "--early", str(tmp_path / "a"), "--late", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert out.count("skipped, no checkpoint") == 3


@pytest.mark.slow
def test_rollout_section_on_a_real_checkpoint(capsys, tmp_path):
    """A smoke-pretrained base stands in for both policies: the table says the two paths sampled
    the same tokens."""
    import pretrain
    base = tmp_path / "base"
    pretrain.main(["--preset", "smoke", "--task", "add", "--out-dir", str(base)])
    bench.main(["--sections", "rollout", "--early", str(base), "--late", str(base), "--rollout-batches", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| early") or line.startswith("| late")]
    assert len(rows) == 2 and all(row.rstrip(" |").endswith("yes") for row in rows)


def test_unknown_section_is_a_one_line_error():
    with pytest.raises(SystemExit, match="unknown --sections nope"):
        bench.main(["--sections", "train,nope"])


def test_hf_section_matches_transformers_greedy(capsys, tmp_path):
    pytest.importorskip("transformers")
    bench.main(["--sections", "hf", "--presets", "nano", "--hf-ckpt", str(tmp_path), "--n-prompts", "3",
                "--new-tokens", "5", "--prompt-len", "6"])
    out = capsys.readouterr().out
    assert "| nano | random | greedy |" in out and "100.0% of tokens" in out
