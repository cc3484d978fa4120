"""Shared plumbing for every stage: devices, torchrun/DDP, seeding, checkpoints, the LR schedule,
the metrics log, command-line flags from a config dataclass, and ONE training loop.

Every training script (pretrain.py, sft.py, grpo.py, distill.py) supplies only what is its own:
  - its micro-batches, once per optimizer step: a list (gradient accumulation: one backward each);
    for `train()`, a `batches` iterator that yields `(micro_batches, info)`, `info` a dict of
    step-level metrics to log;
  - a `loss_fn(model, micro_batch) -> (loss, metrics)` that returns the micro-batch's SHARE of the
    whole batch's loss: its sums divided by whole-batch counts (rows or tokens, over every
    micro-batch and every rank; `sum_over_ranks` gives them). Shares add up to the full-batch loss,
    so the accumulated gradient equals the one-shot full-batch gradient for any micro-batch size
    and any number of processes. Metrics are shares too: they are summed, not averaged.
`optimizer_step()` does one step over a list of micro-batches; `train()` below is the loop around
it for pretraining and SFT, top to bottom, with no callbacks. GRPO writes its own short loop
(grpo.py:run) around the same `optimizer_step`, so evaluation and the reference reset are visible.

Distributed (torchrun --standalone --nproc_per_node=N script.py): `setup_ddp()` reads RANK /
LOCAL_RANK / WORLD_SIZE, picks nccl on CUDA and gloo on CPU (so the multi-process path is testable
without a GPU). With one process nothing is wrapped. Only rank 0 prints and writes files.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import inspect
import itertools
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import typing
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from model import GPT, GPTConfig, load_hf
from tokenizer import HFTokenizer, get_tokenizer, settle_tokenizer, tokenizer_settled, use_tokenizer

# ----------------------------------------------------------------------------- devices and DDP


def get_device(override: str | None = None) -> torch.device:
    """cuda, then mps, then cpu; `override` ("cpu", "cuda", "cuda:1", "mps") wins if it is available.
    On CUDA, float32 matmuls outside bf16 autocast (model.autocast_for) may use TF32 tensor cores."""
    if override:
        dev = torch.device(override)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={override!r} asked for, but CUDA is not available here")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={override!r} asked for, but MPS is not available here")
    elif torch.cuda.is_available():
        dev = torch.device("cuda")
    elif torch.backends.mps.is_available():
        dev = torch.device("mps")
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


@dataclass
class DistInfo:
    rank: int           # global rank of this process (0 when not distributed)
    local_rank: int     # rank on this machine, picks the GPU
    world_size: int     # number of processes
    device: torch.device

    @property
    def is_ddp(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_ddp(device: str | None = None) -> DistInfo:
    """Detect torchrun by RANK; init the process group (nccl on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ:
        return DistInfo(0, 0, 1, get_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    world_size = int(os.environ["WORLD_SIZE"])
    dev = get_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    # imported before the group exists: its functions default to `group=group.WORLD`, and imported
    # later (DDP imports it) that default would hold the group forever, so teardown could not free it
    import torch.distributed.nn.functional  # noqa: F401
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, local_rank, world_size, dev)


def teardown_ddp() -> None:
    """Leave the process group once every rank is done, and free it while Python is still whole.
    A gloo worker thread drops its last collective's tensors a moment after the collective returns;
    dropping a tensor that Python has seen takes the GIL, and once interpreter shutdown has begun a
    thread that asks for the GIL is ended mid-destructor: the process aborts ("terminate called
    without an active exception"). Freeing the group joins its worker threads, so nothing of gloo
    runs at shutdown: wrap()'s DDP wrappers let go of it, and our reference goes last (pybind frees
    a group with the GIL released, so a worker still dropping tensors can finish)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    group = dist.group.WORLD
    dist.barrier()
    for ddp in list(_DDP_WRAPPERS):      # a DDP holds the group in Python and in its C++ reducer
        ddp.reducer = ddp.logger = ddp.process_group = None
    dist.destroy_process_group()
    gc.collect()                          # wrappers already dropped, caught in reference cycles
    del group                             # the last reference: joins the gloo worker threads


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only; while a progress bar is open, the line goes above it (the bar is
    cleared and redrawn below), so per-step lines and a bar share one terminal."""
    if is_main_process():
        with tqdm.external_write_mode() if getattr(tqdm, "_instances", None) else nullcontext():  # open bars only
            print(*args, **kwargs, flush=True)


def progress(iterable=None, total: int | None = None, desc: str | None = None, disable: bool = False,
             **kwargs) -> tqdm:
    """A tqdm progress bar for long work: where it is, the rate and the time left. Shown on rank 0
    only, and only when stderr is a terminal or the code runs in a Jupyter kernel (so log files,
    other ranks, tests and notebooks/execute.py see none of it) and `disable` is False; gone when it
    closes (leave=False): the printed lines are the record. Wrap an iterable, or pass `total` and
    call .update(n) (`initial` for a resumed run); use it as a context manager or .close() it.
    kwargs go to tqdm."""
    in_jupyter = "ipykernel" in sys.modules  # a notebook's stderr is no terminal, but shows a bar
    kwargs["disable"] = True if disable or not is_main_process() else (False if in_jupyter else None)  # None: tty only
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, **kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The raw model under DDP and/or torch.compile wrappers (for generation, checkpoints, config)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


_DDP_WRAPPERS: weakref.WeakSet = weakref.WeakSet()   # wrap()'s DDP wrappers, for teardown_ddp


def wrap(model: torch.nn.Module, dist_info: DistInfo, compile: bool = False) -> torch.nn.Module:
    """The model a training step calls: DDP around it under torchrun (gradients all-reduced), and
    torch.compile around that with --compile (opt-in: bench.py's `compile` section measures it).
    Sampling and checkpoints use the raw model (unwrap)."""
    wrapped = model
    if dist_info.is_ddp:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        _DDP_WRAPPERS.add(wrapped)
    return torch.compile(wrapped) if compile else wrapped


def all_reduce(metrics: dict[str, float], op: str = "mean") -> dict[str, float]:
    """Average ("mean") or add up ("sum") each scalar metric over ranks; identity with one process.
    Returned in the caller's order (the log line's fixed fields)."""
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum' (got {op!r})")
    if not (dist.is_available() and dist.is_initialized()) or not metrics:
        return dict(metrics)
    keys = sorted(metrics)                     # reduced in sorted order, the same on every rank
    vals = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        vals = vals.cuda()
    dist.all_reduce(vals, op=dist.ReduceOp.SUM)
    if op == "mean":
        vals = vals / dist.get_world_size()
    reduced = dict(zip(keys, vals.cpu().tolist()))
    return {k: reduced[k] for k in metrics}


def sum_over_ranks(x: float) -> float:
    """A count (rows, tokens) added up over all ranks: the whole batch's size, for loss shares."""
    return all_reduce({"x": float(x)}, "sum")["x"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# ----------------------------------------------------------------------------- seeding


def derive_seed(seed: int, *labels) -> int:
    """The one rule for seeds: a 63-bit integer from the run's seed and labels naming the stream,
    e.g. derive_seed(seed, "rollouts", step, rank). SHA-256 (not Python's salted hash()), so
    streams never collide, and a run is reproducible on any machine from its --seed."""
    digest = hashlib.sha256(repr((seed, *labels)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch's global generators, differently on each rank."""
    s = derive_seed(seed, "global", rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints

CKPT_NAME = "ckpt.pt"           # the latest checkpoint of a run directory
PREV_NAME = "ckpt.prev.pt"      # the one before it, kept for --resume to fall back to


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated or corrupt (the message names the file)."""


def file_sha256(path: str) -> str:
    """The SHA-256 of a file (a checkpoint, a dataset): what it holds, whatever its name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(out_dir: str, model, optimizer=None, step: int = 0, config: dict | None = None,
                    **extra) -> str:
    """Write {model, optimizer, step, config, model_config, rng} to out_dir/ckpt.pt with its SHA-256
    next to it (ckpt.pt.sha256, what load_checkpoint verifies). The file is written whole under a
    temporary name first, and the checkpoint it replaces is kept as ckpt.prev.pt (with its digest):
    a save killed at any moment leaves at least one good checkpoint. Rank 0 only."""
    path, prev = os.path.join(out_dir, CKPT_NAME), os.path.join(out_dir, PREV_NAME)
    if not is_main_process():
        return path
    raw = unwrap(model)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = {
        "model": raw.state_dict(),
        "model_config": dataclasses.asdict(raw.config),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "config": config or {},
        "rng": rng_state(),
        "tokenizer": get_tokenizer().name,  # load_checkpoint refuses a checkpoint made with another one
        **extra,
    }
    if hasattr(get_tokenizer(), "save"):  # trained from a real model: its tokenizer files go beside it
        get_tokenizer().save(out_dir)
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    with open(tmp + ".sha256", "w") as f:
        f.write(file_sha256(tmp) + "\n")
    if os.path.exists(path):  # the current checkpoint becomes the previous one (digest first)
        if os.path.exists(path + ".sha256"):
            os.replace(path + ".sha256", prev + ".sha256")
        elif os.path.exists(prev + ".sha256"):  # no digest to move: never leave prev a stale one
            os.remove(prev + ".sha256")
        os.replace(path, prev)
    os.replace(tmp, path)
    os.replace(tmp + ".sha256", path + ".sha256")
    return path


DEFAULT_TASK = "pairsum"  # the world `python grpo.py` runs: the search task (tasks.PairSumTask)


def run_dir(prefix: str, seed: int, task: str = DEFAULT_TASK) -> str:
    """A stage's default output directory: out/base for seed 0, out/base-s1 for seed 1, ...; a task
    other than the default is named too (out/base-add-s1), so runs of two worlds never mix."""
    name = prefix if task == DEFAULT_TASK else f"{prefix}-{task}"
    return name if seed == 0 else f"{name}-s{seed}"


def write_dataset(path: str, rows: list[dict], stats: dict, provenance: dict | None = None) -> None:
    """A dataset the stages make (OUT_ROOT/data/*.jsonl): the rows as JSONL, written atomically, and
    their statistics next to them (path + .stats.json: how many were sampled, kept, dropped and why,
    and under "provenance" what the dataset was made from: dataset_provenance)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if provenance:  # the record names the rows it describes: old rows under a new record never match
        provenance = {**provenance, "rows_sha256": file_sha256(path + ".tmp")}
    with open(path + ".stats.json.tmp", "w") as f:
        json.dump({**stats, **({"provenance": provenance} if provenance else {})}, f, indent=1)
    os.replace(path + ".tmp", path)
    os.replace(path + ".stats.json.tmp", path + ".stats.json")
    print0(f"wrote {path}: {len(rows)} rows; {stats}")


# the source files whose code decides what any dataset holds: how it is sampled, judged and filtered
# (each tool adds its own script: dataset_provenance's `code`)
DATA_CODE = ("model.py", "tokenizer.py", "tasks.py", "corpus.py", "rewards.py", "evaluate.py")


def code_sha256(files=DATA_CODE) -> str:
    """One SHA-256 over the named source files of this repository (what code made a dataset)."""
    h = hashlib.sha256()
    root = os.path.dirname(os.path.abspath(__file__))
    for name in files:
        h.update(name.encode() + b"\0")
        with open(os.path.join(root, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def git_commit() -> str | None:
    """The repository's HEAD commit (with "+changes" when the work tree differs), None outside git."""
    import subprocess
    root = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def dataset_provenance(source: str, config: dict, code: tuple = ()) -> dict:
    """What a dataset is made from, recorded with it: the source checkpoint (its path and SHA-256),
    the generating config (plus the SHA-256 of the code that samples, judges and filters: DATA_CODE
    and the tool's own scripts, `code`), the command, the code commit and the date; write_dataset adds
    the rows' own SHA-256. `source_sha256`, `config` and `rows_sha256` are what must match for the
    dataset to be reused (provenance_differs); the rest is for the reader."""
    config = json.loads(json.dumps(config))  # as it reads back from the file (tuples become lists)
    return {"source": source, "source_sha256": checkpoint_sha256(source),
            "config": {**config, "code_sha256": code_sha256(DATA_CODE + tuple(code))},
            "command": " ".join(["python", *sys.argv]), "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def provenance_differs(path: str, wanted: dict) -> str | None:
    """None when the dataset at `path` was made from `wanted`'s source checkpoint and config;
    otherwise what differs, in a few words ("no dataset", "no provenance record", "the source
    checkpoint", "the config: k, seed")."""
    if not os.path.exists(path):
        return "no dataset"
    found = read_dataset_stats(path).get("provenance")
    if not found:
        return "no provenance record"
    if found.get("rows_sha256") != file_sha256(path):
        return "its rows are not the ones its record describes"
    if found.get("source_sha256") != wanted["source_sha256"]:
        return f"the source checkpoint ({found.get('source')} {str(found.get('source_sha256'))[:12]} vs " \
               f"{wanted['source']} {wanted['source_sha256'][:12]})"
    old, new = found.get("config", {}), wanted["config"]
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return f"the config: {', '.join(keys)}" if keys else None


def dataset(name: str, path: str, fn, source: str, config: dict, code: tuple = ()) -> dict:
    """Make a dataset from the checkpoint `source` with the generating `config` (fn(provenance) writes
    it and returns its statistics), unless `path` holds one made from exactly these: then its
    statistics are read back. A dataset made from anything else is rebuilt, with a line saying what
    differed. `code`: the tool's own scripts, whose code the record covers too."""
    provenance = dataset_provenance(source, config, code)
    differs = provenance_differs(path, provenance)
    if differs is None:
        print0(f"== {name}: {path} was built from {source} with this config: reused")
        return read_dataset_stats(path)
    if os.path.exists(path):
        print0(f"== {name}: {path} was built from other inputs ({differs}): rebuilt")
    print0(f"\n== {name} -> {path}")
    try:
        return fn(provenance)
    except KeyboardInterrupt:
        print0(f"\ninterrupted while making {path}: the samples so far are saved in {path}.partial; run the "
               f"same command again to continue (finished stages are skipped)")
        raise


def reference_dataset(name: str, path: str) -> dict:
    """--reference-data: a given dataset, used as it is, never checked against this run; what its
    record says it was made from is printed. Returns its statistics."""
    stats = read_dataset_stats(path)
    made = stats.get("provenance", {})
    print0(f"== {name}: the reference copy {path} (--reference-data), made by {made.get('command', '?')} "
           f"at commit {str(made.get('commit'))[:12]} on {made.get('date', '?')}; not this run's own data")
    return stats


def stage_inputs(out_dir: str) -> dict:
    """What a stage's checkpoint says it started from: the SHA-256 of its initial model and (SFT) of
    its data, None where it records nothing. {} when it holds no checkpoint."""
    if not has_checkpoint(out_dir):
        return {}
    ckpt = load_checkpoint(out_dir, fallback=True, quiet=True)
    return {"init_sha256": ckpt.get("init_sha256"), "data_sha256": ckpt.get("data_sha256")}


def run_stage(name: str, out_dir: str, fn, init: str, data: str | None = None, given: bool = False) -> dict:
    """Run one stage of a chain (fn(resume) trains out_dir from the model `init`, on the dataset `data`),
    unless out_dir says it is done: its done.json exists and its checkpoint records `init`'s and
    `data`'s SHA-256. A half-done stage with those records resumes. A stage that records another start
    (or none) is redone from the start, the old directory moved aside to OUT_DIR.stale-<time> with a
    line saying so; or, for a `given` directory (one the user named, e.g. --r1-zero), the run stops with
    that line instead. Returns what the stage recorded in done.json."""
    done = os.path.join(out_dir, "done.json")
    wanted = {"init_sha256": checkpoint_sha256(init), "data_sha256": file_sha256(data) if data else None}
    found = stage_inputs(out_dir)
    if found and found != wanted:
        what = " and ".join(w for w, k in (("model", "init_sha256"), ("data", "data_sha256")) if found[k] != wanted[k])
        why = (f"{out_dir} records another starting {what} than {init}{', ' + data if data else ''} "
               f"(or none: made before checkpoints recorded it)")
        if given:
            raise SystemExit(f"error: {why}; pass the directories of one run, or move {out_dir} away to redo it")
        stale = moved = f"{out_dir}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        for i in itertools.count(2):  # never onto another stale copy
            if not os.path.exists(stale):
                break
            stale = f"{moved}-{i}"
        os.replace(out_dir, stale)
        print0(f"== {name}: {why}: redone from the start ({out_dir} moved to {stale})")
    if os.path.exists(done):
        print0(f"== {name}: done already ({out_dir}/done.json), skipped")
        with open(done) as f:
            return json.load(f)
    print0(f"\n== {name} -> {out_dir}")
    t0 = time.time()
    try:
        result = {"result": fn(has_checkpoint(out_dir)), "seconds": None}
    except KeyboardInterrupt:
        print0(f"interrupted in {name}: its checkpoint is saved; run the same command again to resume here "
               f"(finished stages are skipped)")
        raise
    result["seconds"] = round(time.time() - t0, 1)
    os.makedirs(out_dir, exist_ok=True)
    with open(done, "w") as f:
        json.dump(result, f, indent=1, default=float)
    print0(f"== {name}: {result['seconds']:.0f} s")
    return result


def read_dataset_stats(path: str) -> dict:
    """The statistics write_dataset saved next to a dataset ({} if there are none)."""
    stats = path + ".stats.json"
    if not os.path.exists(stats):
        return {}
    with open(stats) as f:
        return json.load(f)


HF_PREFIX = "hf:"  # --init-from hf:DIR: a local Hugging Face model directory (issue 25)


def hf_dir(path: str) -> str | None:
    """DIR for "hf:DIR" (a real model's directory), else None (one of our checkpoints)."""
    return os.path.expanduser(path[len(HF_PREFIX):]) if path.startswith(HF_PREFIX) else None


def checkpoint_path(path: str) -> str:
    """Accept a run directory (out/base) or the file itself; for hf:DIR, DIR/config.json."""
    if hf_dir(path) is not None:
        return os.path.join(hf_dir(path), "config.json")
    return os.path.join(path, CKPT_NAME) if os.path.isdir(path) else path


def checkpoint_sha256(path: str) -> str:
    """The SHA-256 of a checkpoint (a run directory or the file): what it is, whatever its path.
    Read from the digest save_checkpoint wrote next to it, computed when there is none. For hf:DIR,
    one digest over config.json and the weight files."""
    if hf_dir(path) is not None:
        names = sorted(n for n in os.listdir(hf_dir(path)) if n == "config.json" or n.endswith(".safetensors")
                       or n == "pytorch_model.bin")
        return hashlib.sha256("".join(file_sha256(os.path.join(hf_dir(path), n)) for n in names).encode()).hexdigest()
    p = checkpoint_path(path)
    if os.path.exists(p + ".sha256"):
        with open(p + ".sha256") as f:
            return f.read().strip()
    return file_sha256(p)


def read_checkpoint_file(p: str, map_location="cpu") -> dict:
    """torch.load one checkpoint file after checking it against its SHA-256 (when save_checkpoint
    wrote one; older checkpoints have none). CheckpointError, naming the file, if it is truncated or
    corrupt."""
    digest = p + ".sha256"
    if os.path.exists(digest):
        with open(digest) as f:
            expected = f.read().strip()
        if file_sha256(p) != expected:
            raise CheckpointError(f"checkpoint {p} is corrupt: its SHA-256 differs from the one saved "
                                  f"with it ({digest}); truncated or overwritten")
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated zip, a pickle error: name the file, keep the cause short
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from e


class TokenizerMismatch(ValueError):
    """A checkpoint made with another tokenizer than this code's (its token ids mean other text)."""


def check_tokenizer(ckpt: dict, p: str) -> dict:
    """ckpt itself if it was made with the tokenizer in use, else TokenizerMismatch in one line
    saying what to run. Checkpoints from before the BPE tokenizer carry no name: byte-level. A
    checkpoint of a real model (or trained from one) puts its tokenizer in use, read from the files
    beside it (HFTokenizer.save), when the process has loaded no model yet; after the first model,
    the tokenizer is settled."""
    made_with, ours = ckpt.get("tokenizer", "bytes"), get_tokenizer().name
    if made_with.startswith("hf-") and made_with != ours and not tokenizer_settled():
        use_tokenizer(checkpoint_tokenizer(os.path.dirname(p), made_with))
        ours = made_with
    if made_with == ours:
        settle_tokenizer()
        return ckpt
    if "hf-" in made_with + ours:
        raise TokenizerMismatch(
            f"checkpoint {p} was made with the tokenizer {made_with!r}, and this process already uses {ours!r}: "
            f"one process holds one tokenizer, so every model it loads must share it")
    raise TokenizerMismatch(
        f"checkpoint {p} was made with the tokenizer {made_with!r}, this code uses {ours!r} "
        f"(data/merges.tiktoken): its token ids mean other text. Move its run directory aside and "
        f"make it again (e.g. `python pretrain.py`, then the stage that wrote it)")


def checkpoint_tokenizer(directory: str, name: str) -> HFTokenizer:
    """The real model's tokenizer saved in `directory` (tokenizer.json), which must be the one named
    `name`; TokenizerMismatch in one line if it is missing, unreadable or another one."""
    try:
        tok = HFTokenizer(directory)
    except ValueError as e:
        raise TokenizerMismatch(f"{directory}: made with a real model's tokenizer ({name}): {e}") from None
    if tok.name != name:
        raise TokenizerMismatch(f"{directory}: tokenizer.json is {tok.name}, the checkpoint was made with {name}")
    return tok


def tokenizer_name(path: str) -> str:
    """The name of the tokenizer a checkpoint (or hf:DIR) was made with, nothing put in use: what
    the scripts compare before any work, so two models that cannot share a process are refused in
    one line."""
    if hf_dir(path) is not None:
        try:
            return HFTokenizer(hf_dir(path)).name
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    return read_checkpoint_file(checkpoint_path(path)).get("tokenizer", "bytes")


def check_one_tokenizer(models: list[tuple[str, str]]) -> None:
    """(flag, checkpoint path) of the models one run loads: a ValueError in one line if their
    tokenizers differ (one process holds one tokenizer). Missing checkpoints are skipped."""
    named = [(flag, path, tokenizer_name(path)) for flag, path in models if os.path.exists(checkpoint_path(path))]
    if len({name for _, _, name in named}) > 1:
        raise ValueError("these models were made with different tokenizers, and one process holds one: " +
                         ", ".join(f"{flag} {path} ({name})" for flag, path, name in named))


def hf_checkpoint(directory: str) -> dict:
    """A local Hugging Face model directory as a checkpoint dict (model.load_hf's weights, no
    optimizer, step 0, Countdown as its task: evaluate.py's default for it), its tokenizer
    (tokenizer.json) named in it; a bad directory is a CheckpointError naming the file."""
    try:
        model, tok = load_hf(directory), HFTokenizer(directory)
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from None
    if tok.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"{directory}: tokenizer.json has {tok.vocab_size} tokens, more than config.json's "
                              f"vocab_size {model.config.vocab_size}")
    return {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config), "optimizer": None,
            "step": 0, "config": {"task": "countdown"}, "tokenizer": tok.name}  # a real model's task here


def load_checkpoint(path: str, map_location="cpu", fallback: bool = False, quiet: bool = False) -> dict:
    """The checkpoint of a run directory (or a checkpoint file), verified. With fallback (what
    --resume uses), a latest checkpoint that fails verification is reported (unless quiet) and the
    previous one (ckpt.prev.pt) is loaded instead, if it is good."""
    p = checkpoint_path(path)
    if hf_dir(path) is not None:  # a real model: read as it is, its tokenizer put in use
        return check_tokenizer(hf_checkpoint(hf_dir(path)), p)
    if not os.path.exists(p) and not (fallback and os.path.exists(os.path.join(os.path.dirname(p), PREV_NAME))):
        raise FileNotFoundError(f"no checkpoint at {p}")
    try:
        return check_tokenizer(read_checkpoint_file(p, map_location), p)
    except (CheckpointError, FileNotFoundError) as e:
        prev = os.path.join(os.path.dirname(p), PREV_NAME)
        if not fallback or not os.path.exists(prev):
            raise
        ckpt = check_tokenizer(read_checkpoint_file(prev, map_location), prev)
        if not quiet:  # the run goes on from prev: set the bad file aside, so no save rotates it into prev
            print0(f"WARNING: {e}; falling back to the previous checkpoint {prev} (step {ckpt['step']})")
            if is_main_process() and os.path.exists(p):
                os.replace(p, p + ".corrupt")
                print0(f"(the bad file is kept as {p}.corrupt)")
        return ckpt


def has_checkpoint(out_dir: str) -> bool:
    """Whether a run directory holds a checkpoint to resume from (the latest or the previous one)."""
    return any(os.path.exists(os.path.join(out_dir, name)) for name in (CKPT_NAME, PREV_NAME))


def start_fresh(out_dir: str) -> None:
    """A run that does not resume: drop an earlier run's previous checkpoint, so a later fallback can
    never land on another run's weights (the latest one is replaced by the first save). Rank 0."""
    if is_main_process():
        for name in (PREV_NAME, PREV_NAME + ".sha256"):
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))


def check_model_config(expected: dict, found) -> None:
    """Raise a ValueError naming every field where a checkpoint's model config differs from ours."""
    found = dataclasses.asdict(found) if dataclasses.is_dataclass(found) else dict(found)
    diffs = [f"{k}: checkpoint has {expected.get(k)!r}, model has {found.get(k)!r}"
             for k in sorted(set(expected) | set(found)) if expected.get(k) != found.get(k)]
    if diffs:
        raise ValueError("checkpoint does not match the model config: " + "; ".join(diffs))


def load_model(path: str, device="cpu", **overrides):
    """Build a GPT from a checkpoint directory and load its weights. Returns (model, ckpt)."""
    ckpt = load_checkpoint(path, map_location=device)
    cfg = GPTConfig(**{**ckpt["model_config"], **overrides})
    model = GPT(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def restore(model, optimizer, ckpt: dict) -> int:
    """Load weights, optimizer and RNG from a checkpoint dict into live objects; return its step."""
    check_model_config(ckpt["model_config"], unwrap(model).config)
    unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    return int(ckpt["step"])


# ----------------------------------------------------------------------------- LR schedule


def lr_at(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup to max_lr over warmup_steps, then cosine decay to min_lr_ratio * max_lr at
    total_steps (and flat after). Pure function of the step."""
    if warmup_steps > 0 and step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return max_lr * min_lr_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return max_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


# ----------------------------------------------------------------------------- metrics


class MetricsLogger:
    """One JSON object per line in out_dir/metrics.jsonl, plus the console line
    `step 12/100 | loss 1.234 | ...` with fields in a fixed order. Rank 0 only. Every record says
    what it is in its "kind" field ("train", "eval", ...), never by which keys it happens to have.

    keep=None starts a fresh log; keep=N (a resumed run) keeps the first N records, the ones
    written before the checkpoint it resumes from, so the resumed log equals an uninterrupted one."""

    def __init__(self, out_dir: str | None, filename: str = "metrics.jsonl", keep: int | None = None):
        self.path = os.path.join(out_dir, filename) if out_dir else None
        self.n_records = 0  # records in the file: a checkpoint stores it as its "keep"
        if self.path and is_main_process():
            os.makedirs(out_dir, exist_ok=True)
            kept = read_metrics(self.path)[:keep] if keep and os.path.exists(self.path) else []
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            self.n_records = len(kept)

    def log(self, record: dict) -> None:
        if self.path and is_main_process():
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.n_records += 1

    @staticmethod
    def format_line(record: dict) -> str:
        parts = []
        for k, v in record.items():
            if isinstance(v, float):
                parts.append(f"{k} {v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{k} {v:.2e}")
            else:
                parts.append(f"{k} {v}")
        return " | ".join(parts)


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- command line


def _field_comments(cls) -> dict[str, str]:
    """Trailing `# comment` of each `name: type = default  # comment` line in a dataclass's source:
    the config documents itself once, and --help shows it."""
    comments = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^\n#]*#\s*(.+)$", src, re.MULTILINE):
            comments[m.group(1)] = m.group(2).strip()
    return comments


def _parse_type(tp):
    """The argparse `type` for an annotation: int, float, str, or X | None ("none" on the command line)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    if typing.get_args(tp) and type(None) in typing.get_args(tp):
        return lambda s, base=base: None if s.lower() == "none" else base(s)
    return base


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad command line is ONE line on stderr (no multi-line usage block), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`python {self.prog} --help` lists every flag)\n")


def config_from_args(cls, argv: list[str] | None = None, presets: dict[str, dict] | None = None,
                     description: str | None = None, check=None):
    """Build a `cls` instance from the command line: one --kebab-case flag per dataclass field, help
    text from the field's trailing comment, defaults shown. With `presets`, --preset NAME sets a
    group of defaults first, and explicit flags override them. A config that cannot work (a
    ValueError from the dataclass's __post_init__, or from `check(cfg)`, which may look at files)
    ends here, before any work: one `error: ...` line and exit status 2, no traceback."""
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)  # resolves string annotations too
    parser = OneLineErrorParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=None,
                            help="a named group of defaults; explicit flags override it")
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_text = comments.get(f.name, "")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif typing.get_origin(tp) is list:  # list[str]: --flag a b c
            parser.add_argument(flag, dest=f.name, nargs="+", type=typing.get_args(tp)[0], default=default,
                                help=help_text, metavar=f.name.upper())
        else:
            parser.add_argument(flag, dest=f.name, type=_parse_type(tp), default=default, help=help_text,
                                metavar=f.name.upper())
    if presets:  # a preset replaces the defaults (so --help shows them); explicit flags still win
        preset_parser = argparse.ArgumentParser(add_help=False)
        preset_parser.add_argument("--preset", choices=sorted(presets), default=None)
        known, _ = preset_parser.parse_known_args(argv)
        if known.preset:
            unknown = set(presets[known.preset]) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"preset {known.preset!r} sets unknown fields {sorted(unknown)}")
            parser.set_defaults(**presets[known.preset])
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    try:
        get_tokenizer()  # a missing or corrupt data/merges.tiktoken: one line here, before any work
        cfg = cls(**values)
        if check is not None:
            check(cfg)
    except ValueError as e:  # a config that cannot work: one clear line and exit 2, no traceback
        parser.error(str(e))
    return cfg


def check_resume(out_dir: str, resume: bool, config: dict | None = None, must_match=()) -> None:
    """--resume needs a checkpoint in out_dir, written with the same values of the fields that an
    exact resume depends on (`must_match`, compared with `config`)."""
    if not resume:
        return
    if not has_checkpoint(out_dir):
        raise ValueError(f"--resume: no checkpoint in {out_dir}")
    saved = load_checkpoint(out_dir, fallback=True, quiet=True)["config"]
    diffs = [f"{flag(k)} {config[k]!r} (the checkpoint has {saved.get(k)!r})" for k in must_match
             if saved.get(k) != config[k]]
    if diffs:
        raise ValueError("--resume with other settings than the run it continues: " + ", ".join(diffs))


def check_fits(longest_prompt: int, max_new_tokens: int, max_seq_len: int, what: str = "--max-new-tokens") -> None:
    """The longest prompt + the completion budget must fit the model's context."""
    if longest_prompt + max_new_tokens > max_seq_len:
        raise ValueError(f"{what} {max_new_tokens} + the longest prompt ({longest_prompt} tokens) > the model's "
                         f"max_seq_len {max_seq_len}; use at most {max_seq_len - longest_prompt}")


def check_processes(n: int, what: str) -> None:
    """`n` (a per-step count) must split evenly over the torchrun processes (WORLD_SIZE), checked
    before any work."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if n % world:
        raise ValueError(f"{what} ({n}) must be divisible by the number of processes ({world})")


def flag(name: str) -> str:
    """A config field's command-line spelling: prompts_per_step -> --prompts-per-step."""
    return "--" + name.replace("_", "-")


def check_ranges(cfg, *, positive=(), non_negative=(), fraction=(), choices: dict | None = None) -> None:
    """Raise ValueError naming the flag of the first field out of range: `positive` fields must be
    > 0, `non_negative` >= 0, `fraction` in [0, 1], `choices` {field: allowed values}."""
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{flag(name)} must be > 0 (got {getattr(cfg, name)})")
    for name in non_negative:
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{flag(name)} must be >= 0 (got {getattr(cfg, name)})")
    for name in fraction:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{flag(name)} must lie in [0, 1] (got {getattr(cfg, name)})")
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{flag(name)} must be one of {', '.join(map(str, allowed))} (got {getattr(cfg, name)!r})")


# ----------------------------------------------------------------------------- the training loop


@dataclass
class LoopConfig:
    """The fields train() reads. Stage configs carry these same names (duck typing), so a stage can
    pass its own config straight in."""
    steps: int = 100            # optimizer steps in total
    lr: float = 1e-3            # peak learning rate
    warmup_steps: int = 10      # linear warmup steps
    min_lr_ratio: float = 0.1   # final lr as a fraction of lr (cosine decay)
    grad_clip: float = 1.0      # max global grad norm (0 = off)
    log_every: int = 1          # print a console line every N steps
    ckpt_every: int = 0         # save a checkpoint every N steps (0 = only at the end)
    out_dir: str = ""           # where checkpoints and metrics go ("" = nowhere)


@contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C (SIGINT) back until the block is done, then raise it: an optimizer step and
    the step counter that says it happened change together, so a checkpoint saved on Ctrl-C never
    holds updated weights under the previous step's number. Outside the main thread (where no
    signal handler can be set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class NonFiniteError(ArithmeticError):
    """A NaN or infinity in a loss, a loss term, a log-prob or a gradient (the message says which)."""


def optimizer_step(model, optimizer, micro_batches, loss_fn, grad_clip: float = 0.0) -> dict:
    """One optimizer step over a whole batch given as micro-batches (gradient accumulation):
    forward + backward each micro-batch, clip the global grad norm, step. `loss_fn` returns each
    micro-batch's SHARE of the whole batch's loss (sums over its rows or tokens divided by the
    whole batch's counts over all ranks), so the backward passes add up to exactly the full-batch
    gradient. DDP averages gradients over ranks, so each share is scaled by the world size first;
    gradients are synchronised on the last micro-batch only. Returns the metric shares summed over
    micro-batches and ranks (the whole batch's values), plus grad_norm. A non-finite loss, metric,
    `nonfinite_<term>` count (a loss_fn's own check, e.g. of log-probs) or gradient raises
    NonFiniteError before optimizer.step, so the weights are never updated with it."""
    ddp = dist.is_available() and dist.is_initialized() and hasattr(model, "no_sync")
    scale = world_size() if ddp else 1
    model.train()
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if (last or not ddp) else model.no_sync():
            loss, metrics = loss_fn(model, mb)
            (loss * scale).backward()
        for k, v in {"loss": loss.item(), **metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    # divergence guard, before the weights change: the same verdict on every rank (all-reduced sums,
    # synchronised gradients), so a run stops whole and no checkpoint ever holds poisoned weights
    totals = all_reduce(sums, "sum")
    counts = {k.removeprefix("nonfinite_"): totals.pop(k) for k in list(totals) if k.startswith("nonfinite_")}
    bad = [f"{name} ({v:.0f} values)" for name, v in counts.items() if v > 0]
    bad += [f"{k} = {v}" for k, v in totals.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteError("non-finite " + ", ".join(bad))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    try:  # raises before it scales anything, so the culprit can still be named
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"),
                                                   error_if_nonfinite=True)
    except RuntimeError as e:
        name = next((n for n, p in unwrap(model).named_parameters() if p.grad is not None and not p.grad.isfinite().all()),
                    None)
        raise NonFiniteError(f"non-finite gradient (first in {name})" if name else
                             "non-finite gradient norm (every gradient finite, their norm overflowed)") from e
    optimizer.step()
    return {**totals, "grad_norm": float(grad_norm)}


def diverged_message(error: NonFiniteError, step: int, out_dir: str) -> str:
    """The one-line error a diverged run exits with (exit status 1)."""
    return (f"error: {error} in step {step}; the run stops without saving, so {out_dir or 'the last checkpoint'} "
            f"keeps its last good checkpoint (--resume continues from it; a lower --lr may avoid this)")


def set_lr(optimizer, lr: float) -> float:
    """Set every group's lr to lr times the group's lr_scale (Muon's matrices run at a larger lr)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def train(model, optimizer, cfg, batches, loss_fn, *, start_step: int = 0,
          logger: MetricsLogger | None = None, config_dict: dict | None = None, extra: dict | None = None,
          bar: tqdm | None = None) -> dict:
    """The training loop of pretraining and SFT. Each step: set the lr; take (micro_batches, info)
    from `batches`; optimizer_step; log one line + one record; checkpoint every cfg.ckpt_every
    steps and at the end (`extra`: more fields for every checkpoint, e.g. what the run started from).
    Ctrl-C saves a checkpoint, then re-raises. Returns the last record. bar: a progress bar
    (`progress`) advanced once per step, left open for the caller to close; None = one over
    cfg.steps, made and closed here."""
    raw = unwrap(model)
    own_bar = bar is None
    if own_bar:
        bar = progress(total=cfg.steps, initial=start_step, desc="training", unit="step")
    record: dict = {}
    step = start_step
    t_last = time.time()

    def save(at_step):
        if cfg.out_dir:
            save_checkpoint(cfg.out_dir, raw, optimizer, at_step, config_dict,
                            keep=logger.n_records if logger else None, **(extra or {}))

    try:
        while step < cfg.steps:
            # 1. learning rate for this step (warmup + cosine)
            lr = set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
            # 2. the stage's data for this step, and 3. one optimizer step over it
            micro_batches, info = next(batches)
            with interrupts_deferred():  # the weights and `step` change together
                metrics = optimizer_step(model, optimizer, micro_batches, loss_fn, cfg.grad_clip)
                step += 1
            # 4. one JSON record (info averaged over ranks) and, every log_every steps, one line
            now = time.time()
            record = {"kind": "train", "step": step, **all_reduce(info), **metrics, "lr": lr, "dt": now - t_last}
            t_last = now
            bar.set_postfix_str(f"loss {record['loss']:.3f}", refresh=False)
            bar.update(1)
            if logger is not None:
                logger.log(record)
            if step % cfg.log_every == 0 or step == cfg.steps:
                print0(MetricsLogger.format_line({"step": f"{step}/{cfg.steps}",
                                                  **{k: v for k, v in record.items() if k not in ("kind", "step")}}))
            # 5. checkpoint
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
                save(step)
    except KeyboardInterrupt:
        print0(f"\ninterrupted at step {step}: saving a checkpoint to {cfg.out_dir or '(nowhere: no out_dir)'}; "
               f"continue with --resume")
        save(step)
        raise
    except NonFiniteError as e:  # nothing is saved: the last checkpoint stays the last good one
        raise SystemExit(diverged_message(e, step + 1, cfg.out_dir)) from e
    finally:
        if own_bar:
            bar.close()
    save(step)
    return record


# ----------------------------------------------------------------------------- batches and optimizer


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int):
    """Right-padded (B, T) tokens = prompt + completion, and the (B, T-1) mask that marks which
    next-token positions (as model.token_logprobs returns them) are completion tokens: the only
    ones a loss is taken on (GRPO's policy tokens, SFT's targets)."""
    # >>> exercise: completion_mask
    B = len(prompt_ids)
    T = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    tokens = torch.full((B, T), pad_id, dtype=torch.long)                 # (B, T)
    mask = torch.zeros((B, T - 1))                                        # (B, T-1)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        tokens[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, len(p) - 1:len(p) - 1 + len(c)] = 1.0  # logp of token t+1 sits at index t
    return tokens, mask
    # <<< exercise: completion_mask


def newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to G (U V^T of its SVD, approximately), by the quintic
    Newton-Schulz iteration of Muon (Keller Jordan 2024; nanochat, modded-nanogpt), in float32:
    torch.optim.Muon's bfloat16 version is ~300x slower on a CPU without fast bfloat16. G may be a
    stack of matrices (..., rows, cols), each orthogonalised on its own."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Muon for the hidden matrices: SGD-momentum (Nesterov) whose update is orthogonalised by
    newton_schulz and scaled by sqrt(max(1, rows / cols)); matrices of one shape are orthogonalised
    in one batched call. Groups with "adamw": True are AdamW (torch.optim.AdamW's update)."""

    def __init__(self, groups, lr: float, momentum: float = 0.95, betas=(0.9, 0.95), eps: float = 1e-8):
        super().__init__(groups, dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=0.0, adamw=False))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["adamw"]:
                for p in params:
                    state = self.state[p]
                    if not state:
                        state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                    state["step"] += 1
                    b1, b2 = group["betas"]
                    state["m"].lerp_(p.grad, 1 - b1)
                    state["v"].lerp_(p.grad * p.grad, 1 - b2)
                    m_hat = state["m"] / (1 - b1 ** state["step"])
                    v_hat = state["v"] / (1 - b2 ** state["step"])
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])
                continue
            by_shape: dict[tuple, list] = {}
            for p in params:
                by_shape.setdefault(tuple(p.shape), []).append(p)
            for shape, same in by_shape.items():
                updates = []
                for p in same:
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    updates.append(p.grad.lerp(buf, group["momentum"]))  # Nesterov
                orthogonal = newton_schulz(torch.stack(updates))
                for p, u in zip(same, orthogonal):
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(u, alpha=-group["lr"] * max(1.0, shape[0] / shape[1]) ** 0.5)


def make_optimizer(model, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.95), muon_lr: float = 0.0):
    """AdamW with weight decay on matrices only (not on norms' gains), as in nanoGPT. muon_lr > 0:
    Muon (above) at that lr for the blocks' matrices, AdamW at lr for the embeddings and gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    if muon_lr > 0:
        embed = {id(p) for name, p in unwrap(model).named_parameters() if "embed" in name or "lm_head" in name}
        hidden = [p for p in params if p.dim() >= 2 and id(p) not in embed]
        rest_decay = [p for p in params if p.dim() >= 2 and id(p) in embed]
        rest = [p for p in params if p.dim() < 2]
        return Muon([{"params": hidden, "lr_scale": muon_lr / lr, "weight_decay": 0.0},
                     {"params": rest_decay, "adamw": True, "weight_decay": weight_decay},
                     {"params": rest, "adamw": True, "weight_decay": 0.0}], lr=lr, betas=betas)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)
