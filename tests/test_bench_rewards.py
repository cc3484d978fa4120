"""bench_rewards.py: the completions it times are judged as Python's own exact arithmetic judges them
(the timings themselves are the benchmark's job, not a test's)."""
import random
import re
from fractions import Fraction

import bench_rewards
import rewards


def reference_value(expr: str) -> Fraction:
    """The expression's value by Python's own parser and precedence, on exact fractions."""
    return eval(re.sub(r"\d+", lambda m: f"Fraction({m.group()})", expr), {"Fraction": Fraction})


def test_countdown_cases_are_judged_as_exact_arithmetic_judges_them():
    rng = random.Random(0)
    verdicts = []
    for _ in range(300):
        completion, numbers, target = bench_rewards.countdown_case(rng)
        expr = re.search(r"<answer>(.*)</answer>", completion).group(1)
        each_once = sorted(int(n) for n in re.findall(r"\d+", expr)) == sorted(numbers)
        want = float("**" not in expr and each_once and reference_value(expr) == target)
        assert rewards.countdown_reward(completion, numbers, target) == want, completion
        verdicts.append(want)
    assert 0.3 < sum(verdicts) / len(verdicts) < 0.9  # a mix of right and wrong, as the docstring says
