"""Soak the code-execution reward under hostile load: RL-sized batches of programs scored the way
GRPO scores them (rewards.code_rewards, all in parallel in the sandbox), with a share of the
rollouts replaced by hostile programs. Programs are scored all-or-nothing, as a judge scores them
(a program's tests stop at the first one it fails by a limit or a crash). Prints the time per batch
with and without them, what the hostile programs scored (must be 0), and what was left behind
afterwards (must be 0 processes, 0 files written outside the sandbox, 0 temporary directories), then
the sandbox's programs/s with and without bubblewrap.

    python soak_sandbox.py                         # 10 batches of 64 programs, a quarter hostile (~2 min)
    python soak_sandbox.py --steps 2 --batch 16    # quicker
    python soak_sandbox.py --fallback              # the sandbox without bubblewrap (as root: fresh uids)
    python soak_sandbox.py --grpo-steps 10         # inside the RL loop: `grpo.py --task code` from
                                                   # out/base-code, 10 steps without and 10 with hostile rollouts

Inside the loop (--grpo-steps N): two GRPO runs of N steps from the same base model and seed, one
as it is and one where a share (--hostile) of every step's rollouts is replaced, for scoring, by
hostile programs (the policy's own tokens are still what is trained on: those rollouts simply earn
their reward, 0 for accuracy). It prints the seconds per RL step (whole step and the reward part)
of both runs (the first step of each left out: warm-up), what the hostile programs scored, and what
was left behind.

Hostile programs: a fork bomb, a memory bomb, an infinite loop, infinite output, deep recursion, a
setsid'd daemon that lives on, a parent killer, a writer of files outside the sandbox (the soak's own
directory, this project's, /tmp, /var/tmp, /dev/shm), a socket opener, a directory tree nested until
it is killed, and traps for the cleanup (CLEANUP_TRAPS). None of them prints an answer, so each must
score 0 (one that did harm AND printed the right output would earn it: the reward judges the output,
the sandbox contains the harm). The benign ones are the tasks' reference programs (tasks.CodeTask),
which pass their tests. Leftover processes are sandbox.sandbox_processes(): a sandbox uid, a driver
or a bwrap. Without bubblewrap (--fallback), writes outside are refused by Landlock, or else, as
root, found and removed afterwards; as another user without Landlock the programs write as you, and
the soak reports what got out.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass

import sandbox
from bench_rewards import sandbox_rate  # deliberate reuse: the one programs/s measurement
from common import check_ranges, checkpoint_path, config_from_args, read_metrics, run_dir
from rewards import code_rewards
from tasks import CodeTask

HERE = os.path.dirname(os.path.abspath(__file__))


def escape_paths(target_dir: str) -> list[str]:
    """Where the file writer (and, late, the daemon) try to leave a file: none may exist afterwards.
    The caller's own directory, this project's, and the places every user may write to."""
    name = os.path.basename(target_dir)  # unique per soak
    return [os.path.join(target_dir, "escaped.txt"), os.path.join(HERE, "soak-escaped.txt"),
            *(os.path.join(shared, f"{name}-escaped.txt") for shared in ("/tmp", "/var/tmp", "/dev/shm")),
            os.path.join(target_dir, "escaped.txt.daemon")]


# Traps for whoever deletes the sandbox's working directory afterwards: a tree nested past PATH_MAX,
# a directory and a file made unreadable, links in a loop and out of the tree, a fifo, a socket, the
# longest name, a name that is not UTF-8, and a daemon that keeps writing while the trees are deleted.
CLEANUP_TRAPS = """import os, time
os.makedirs('locked/inner')
open('locked/inner/f', 'w').write('x')
os.chmod('locked/inner/f', 0)
os.chmod('locked/inner', 0)
os.chmod('locked', 0o500)
os.symlink('loop', 'loop')
os.symlink('/', 'root')
os.symlink('..', 'up')
os.mkfifo('fifo')
os.mknod('sock', 0o140600)
open('n' * 255, 'w').close()
open(b'\\xff\\xfe', 'w').close()
if os.fork() == 0:
    os.setsid()
    while True:
        open(f'daemon-{time.monotonic()}', 'w').write('x' * 1000)
for _ in range(30):
    os.mkdir('d' * 250)
    os.chdir('d' * 250)
os.chmod('.', 0)"""


def hostile_programs(target_dir: str) -> dict[str, str]:
    """name -> source. `target_dir`: a directory of the caller's that the programs must not reach."""
    escape = escape_paths(target_dir)
    return {
        "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "memory bomb": "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))",
        "infinite loop": "while True:\n    pass",
        "infinite output": "while True:\n    print('x' * 1000)",
        "deep recursion": "import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(n):\n    return f(n + 1)\nf(0)",
        "daemon": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                   "        time.sleep(0.5)\n        open(" + repr(escape[-1]) + ", 'w').write('x')\n"
                   "    os._exit(0)"),
        "parent killer": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "file writer": "".join(f"try:\n    open({p!r}, 'w').write('x')\nexcept OSError:\n    pass\n"
                               for p in escape[:-1]),
        "socket opener": ("import socket\ns = socket.socket()\ntry:\n    s.connect(('1.1.1.1', 80))\n"
                          "except OSError:\n    pass"),
        "deep tree": "import os\nwhile True:\n    os.mkdir('d' * 250)\n    os.chdir('d' * 250)",
        "cleanup traps": CLEANUP_TRAPS,
    }


def completion(program: str) -> str:
    return f"<think>write the program</think><answer>```python\n{program}\n```</answer><|endoftext|>"


@dataclass
class SoakConfig:
    steps: int = 10                 # batches (RL steps) with hostile programs, and as many without
    batch: int = 64                 # programs per batch (an RL step's rollouts)
    hostile: float = 0.25           # share of each batch replaced by hostile programs
    timeout_s: float = 2.0          # sandbox wall clock per test (sandbox.Limits.timeout_s)
    throughput_programs: int = 64   # benign programs for the programs/s line, with and without bubblewrap
    seed: int = 0                   # seed for the problems and which rollouts turn hostile
    grpo_steps: int = 0             # > 0: soak inside the RL loop instead (--steps, --batch and
                                    # --throughput-programs then unused): two GRPO runs of this many steps,
                                    # --timeout-s their --code-timeout-s
    init_from: str = ""             # the code base model of those runs; "" = out/base-code (out/base-code-sN for --seed N)
    fallback: bool = False          # run the sandbox without bubblewrap (rlimits, Landlock), as where it is missing

    def __post_init__(self):
        self.init_from = self.init_from or run_dir("out/base", self.seed, "code")
        check_ranges(self, positive=("steps", "batch", "timeout_s"), non_negative=("throughput_programs", "grpo_steps"),
                     fraction=("hostile",))


def check_files(cfg: SoakConfig) -> None:
    """The RL soak starts from an existing code base model: it never pretrains one."""
    if cfg.grpo_steps and not os.path.exists(checkpoint_path(cfg.init_from)):
        raise ValueError(f"--init-from {cfg.init_from}: no checkpoint there; make the code base model first "
                         f"(python pretrain.py --task code{'' if cfg.seed == 0 else f' --seed {cfg.seed}'})")


def sandbox_tmp_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("sandbox-")}


def soak(cfg: SoakConfig) -> dict:
    """Run the soak; returns its figures (what main prints)."""
    rng = random.Random(cfg.seed)
    task = CodeTask()
    target = tempfile.mkdtemp(prefix="soak-target-")   # a directory of ours the writer must not reach
    hostile = hostile_programs(target)
    limits = sandbox.Limits(timeout_s=cfg.timeout_s)
    tmp_before = sandbox_tmp_dirs()
    seconds = {"benign": [], "mixed": []}
    hostile_scores, benign_scores = [], []
    for step in range(cfg.steps):
        problems = [task.sample(rng) for _ in range(cfg.batch)]
        tests = [list(p.tests) for p in problems]
        benign = [completion(p.gold) for p in problems]
        n_hostile = round(cfg.hostile * cfg.batch)
        turned = set(rng.sample(range(cfg.batch), n_hostile))
        names = list(hostile)
        mixed = list(benign)
        for j, i in enumerate(sorted(turned)):  # every kind in turn
            mixed[i] = completion(hostile[names[(step * n_hostile + j) % len(names)]])
        for kind, batch in (("benign", benign), ("mixed", mixed)):
            t0 = time.perf_counter()
            scores = code_rewards(batch, tests, all_or_nothing=True, limits=limits)
            seconds[kind].append(time.perf_counter() - t0)
            if kind == "mixed":
                hostile_scores += [scores[i] for i in turned]
                benign_scores += [s for i, s in enumerate(scores) if i not in turned]
        print(f"step {step + 1}/{cfg.steps}: benign batch {seconds['benign'][-1]:.1f} s, with {n_hostile} hostile "
              f"{seconds['mixed'][-1]:.1f} s", flush=True)
    return {"seconds": seconds, "hostile_max": max(hostile_scores, default=0.0),
            "benign_mean": sum(benign_scores) / max(1, len(benign_scores)), "n_hostile": len(hostile_scores),
            **leftovers(target, tmp_before)}


def hostile_scorer(score_batch, programs: list[str], share: float, rng: random.Random, record: list[float]):
    """score_batch with `share` of every batch's completions replaced by hostile programs (in turn)
    before scoring; what those scored for accuracy is appended to `record`."""
    def score(texts, problems):
        turned = set(rng.sample(range(len(texts)), round(share * len(texts))))
        texts = [completion(programs[i % len(programs)]) if i in turned else t for i, t in enumerate(texts)]
        scored = score_batch(texts, problems)
        record.extend(scored[i][1]["accuracy"] for i in sorted(turned))
        return scored
    return score


def soak_in_loop(cfg: SoakConfig) -> dict:
    """Two GRPO runs on the code task from cfg.init_from: as they are, and with a share of every
    step's rollouts scored as hostile programs. Step means leave out the first step (warm-up)."""
    import grpo  # deliberate reuse: the real RL loop, its reward batching and its timings

    target = tempfile.mkdtemp(prefix="soak-target-")
    programs = list(hostile_programs(target).values())
    hostile_scores, runs = [], {}
    tmp_before = sandbox_tmp_dirs()
    out = tempfile.mkdtemp(prefix="soak-grpo-")
    for name in ("as is", "with hostile rollouts"):
        run_cfg = grpo.GRPOConfig(task="code", init_from=cfg.init_from, out_dir=os.path.join(out, name.replace(" ", "-")),
                                  steps=cfg.grpo_steps, seed=cfg.seed, eval_every=0, eval_problems=8, eval_k=2,
                                  show_every=0, ckpt_every=0, code_timeout_s=cfg.timeout_s)
        scorer = None if name == "as is" else hostile_scorer(
            grpo.reward_fn(run_cfg), programs, cfg.hostile, random.Random(cfg.seed), hostile_scores)
        grpo.run(run_cfg, score_batch=scorer)
        train = [r for r in read_metrics(os.path.join(run_cfg.out_dir, "metrics.jsonl")) if r["kind"] == "train"][1:]
        runs[name] = {k: sum(r[k] for r in train) / len(train) for k in ("dt", "t_reward", "reward")}
    shutil.rmtree(out, ignore_errors=True)
    return {"runs": runs, "hostile_max": max(hostile_scores, default=0.0), "n_hostile": len(hostile_scores),
            **leftovers(target, tmp_before)}


def leftovers(target: str, tmp_before: set[str]) -> dict:
    """What a soak left behind, after a second for anything that escaped to show itself (the daemon
    writes at 0.5 s): sandbox processes, files outside the sandbox, temporary directories. Removes
    `target`."""
    time.sleep(1.0)
    found = {"processes": sandbox.sandbox_processes(), "files": [p for p in escape_paths(target) if os.path.exists(p)],
             "tmp_dirs": sorted(sandbox_tmp_dirs() - tmp_before)}
    shutil.rmtree(target, ignore_errors=True)
    return found


def print_leftovers(r: dict) -> None:
    print(f"left behind: {len(r['processes'])} processes, {len(r['files'])} files outside the sandbox, "
          f"{len(r['tmp_dirs'])} temporary directories")
    for what in ("processes", "files", "tmp_dirs"):
        if r[what]:
            print(f"  {what}: {r[what]}")


def main(argv=None) -> dict:
    cfg = config_from_args(SoakConfig, argv, description=__doc__.split("\n")[0], check=check_files)
    if cfg.fallback:
        sandbox.disable_bwrap()
    if cfg.grpo_steps:
        print(f"{os.cpu_count()} cores; isolation: {'bubblewrap' if sandbox.bwrap_path() else 'rlimits fallback'}; "
              f"GRPO on the code task from {cfg.init_from}, {cfg.grpo_steps} steps as is and {cfg.grpo_steps} with "
              f"{cfg.hostile:.0%} of the rollouts hostile")
        r = soak_in_loop(cfg)
        print()
        for name, m in r["runs"].items():
            print(f"{name:>22}: {m['dt']:.2f} s per RL step, of which rewards {m['t_reward']:.2f} s; mean reward "
                  f"{m['reward']:.3f}")
        a, b = (r["runs"][k]["dt"] for k in ("as is", "with hostile rollouts"))
        print(f"step time with hostile rollouts / as is: {b / a:.2f}x")
        print(f"scores: hostile programs max {r['hostile_max']:.1f} over {r['n_hostile']}")
        print_leftovers(r)
        return r
    print(f"{os.cpu_count()} cores; isolation: {'bubblewrap' if sandbox.bwrap_path() else 'rlimits fallback'}; "
          f"{cfg.steps} batches of {cfg.batch} programs, {cfg.hostile:.0%} hostile")
    r = soak(cfg)
    benign, mixed = (sum(r["seconds"][k]) / cfg.steps for k in ("benign", "mixed"))
    print(f"\nseconds per batch: benign only {benign:.2f}, with hostile programs {mixed:.2f} ({mixed / benign:.2f}x)")
    print(f"scores: hostile programs max {r['hostile_max']:.1f} over {r['n_hostile']}; benign programs in the "
          f"same batches mean {r['benign_mean']:.2f}")
    print_leftovers(r)
    if cfg.throughput_programs:
        n = cfg.throughput_programs
        rates = {"bubblewrap": sandbox_rate(n, use_bwrap=True)[0] if sandbox.bwrap_path() else None,
                 "rlimits only": sandbox_rate(n, use_bwrap=False)[0]}
        print("programs/s (3 tests each): " + ", ".join(f"{k} {v:.1f}" if v else f"{k} n/a (no bwrap)"
                                                       for k, v in rates.items()))
        r["rates"] = rates
    return r


if __name__ == "__main__":
    main()
