"""Benchmark the rule-based rewards (rewards.py) and the code sandbox (sandbox.py).

    python bench_rewards.py                      # 10,000 completions per family, 200 programs
    python bench_rewards.py --n 1000 --programs 40

Prints completions/s for format+countdown and format+math over generated completions (a mix of
correct, wrong and malformed ones, as a policy early in RL writes them), the time those rewards take
for one R1-Zero GRPO step (32 prompts x 16 samples = 512 rollouts), and programs/s for the sandbox on
trivially correct programs (each run against 3 stdin/stdout tests). Targets (issue 3): reward time
under 5% of a GRPO step; the sandbox at least 20 programs/s on 2 cores.
"""
import argparse
import os
import random
import time
from dataclasses import dataclass, fields

import rewards
import sandbox


@dataclass
class BenchConfig:
    n: int = 10_000              # generated completions per reward family
    programs: int = 200          # trivially correct programs for the sandbox
    tests_per_program: int = 3   # stdin/stdout tests per program
    workers: int = 0             # sandbox threads; 0 = sandbox's default (2 x CPU cores)
    rollouts: int = 512          # rollouts per GRPO step to cost the rewards for (R1-Zero: 32 x 16)
    seed: int = 0                # RNG seed for the generated completions


THINK_WORDS = "let me check the tens digit so far the answer is wait i know it carry and add the ones".split()


def think(rng: random.Random) -> str:
    return " ".join(rng.choice(THINK_WORDS) for _ in range(rng.randint(5, 60)))


def countdown_case(rng: random.Random) -> tuple[str, list[int], int]:
    """A random expression over 3-4 numbers; the target is its value when it is an integer."""
    numbers = [rng.randint(1, 100) for _ in range(rng.randint(3, 4))]
    expr = str(numbers[0])
    for x in numbers[1:]:
        expr = f"({expr} {rng.choice('+-*/')} {x})" if rng.random() < 0.5 else f"{expr} {rng.choice('+-*')} {x}"
    value = rewards._CountdownParser(rewards._tokenize_countdown(expr)).expr(0)
    target = int(value) if value.denominator == 1 else rng.randint(1, 1000)
    kind = rng.random()
    if kind < 0.1:
        expr = expr.replace(" ", "", 1) + " * " + str(numbers[0])       # reuses a number
    elif kind < 0.2:
        expr = expr + "**2"                                             # illegal operator
    body = f"<think>{think(rng)}</think>\n<answer>{expr}</answer><|endoftext|>"
    return (body if kind < 0.9 else body.replace("</think>", "")), numbers, target  # 10% malformed


def math_case(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 10**6), rng.randint(1, 1000)
    gold = f"{a}/{b}" if rng.random() < 0.3 else str(a)
    pred = rng.choice([gold, f"{a:,}", f"\\boxed{{{gold}}}", f"The answer is {gold}.", str(a + 1), f"{a}.00"])
    return f"<think>{think(rng)}</think><answer>{pred}</answer><|endoftext|>", gold


def rate(fn, cases) -> float:
    t0 = time.perf_counter()
    for case in cases:
        fn(*case)
    return len(cases) / (time.perf_counter() - t0)


def sandbox_rate(n: int, tests_per_program: int = 3, use_bwrap: bool | None = None,
                 workers: int | None = None) -> tuple[float, int, float]:
    """(programs/s, programs that passed, seconds) of sandbox.run_programs on n trivially correct
    programs, each run against tests_per_program stdin/stdout tests (after a 2-program warm-up)."""
    programs = [f"x = int(input())\nprint(x + {i})" for i in range(n)]
    stdins = [[str(j) for j in range(tests_per_program)]] * n
    sandbox.run_programs(programs[:2], stdins[:2], use_bwrap=use_bwrap)  # warm-up: probes bwrap once
    t0 = time.perf_counter()
    results = sandbox.run_programs(programs, stdins, max_workers=workers, use_bwrap=use_bwrap)
    dt = time.perf_counter() - t0
    passed = sum(all(r.ok and r.stdout == f"{j + i}\n" for j, r in enumerate(rs)) for i, rs in enumerate(results))
    return n / dt, passed, dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(BenchConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    cfg = BenchConfig(**vars(parser.parse_args()))
    rng = random.Random(cfg.seed)
    print(f"cores: {os.cpu_count()} | sandbox: {'bubblewrap' if sandbox.bwrap_path() else 'rlimits fallback'}")

    countdown = [countdown_case(rng) for _ in range(cfg.n)]
    math = [math_case(rng) for _ in range(cfg.n)]
    cd_rate = rate(lambda c, nums, t: rewards.format_reward(c) + rewards.countdown_reward(c, nums, t), countdown)
    m_rate = rate(lambda c, gold: rewards.format_reward(c) + rewards.math_reward(c, gold), math)
    for name, r in [("format+countdown", cd_rate), ("format+math", m_rate)]:
        step_ms = 1000 * cfg.rollouts / r
        print(f"{name:17s}: {r:10,.0f} completions/s over {cfg.n:,} | {step_ms:6.1f} ms per {cfg.rollouts}-rollout "
              f"GRPO step (under 5% of any step longer than {20 * step_ms / 1000:.2f} s)")
    accuracy = sum(rewards.countdown_reward(c, nums, t) for c, nums, t in countdown) / cfg.n
    print(f"(generated countdown completions judged correct: {accuracy:.0%})")

    programs_per_s, passed, dt = sandbox_rate(cfg.programs, cfg.tests_per_program, workers=cfg.workers or None)
    print(f"sandbox          : {programs_per_s:10,.1f} programs/s ({cfg.tests_per_program} tests each, "
          f"{passed}/{cfg.programs} passed, {dt:.1f} s)")


if __name__ == "__main__":
    main()
