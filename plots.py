"""Regenerate the README's figures from the metric logs committed under docs/runs/.

    python plots.py          # writes assets/aha.png from docs/runs/grpo-seed0.jsonl

A run's own figure is written by grpo.py itself (out/grpo/aha.png); this script only redraws the
committed ones, so the README's picture always matches a log in the repository.
"""
import os

from grpo import plot_aha

ROOT = os.path.dirname(os.path.abspath(__file__))
FIGURES = {  # figure -> (metrics log, title)
    "assets/aha.png": ("docs/runs/grpo-seed0.jsonl", "R1-Zero from scratch on a 2-core CPU (python grpo.py, seed 0)"),
}


def main():
    for png, (log, title) in FIGURES.items():
        print(plot_aha(os.path.join(ROOT, log), os.path.join(ROOT, png), title))


if __name__ == "__main__":
    main()
