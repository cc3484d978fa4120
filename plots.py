"""The figures: the aha figure of a GRPO run, drawn from its metrics log (no torch, no model).

    python plots.py          # redraws the README's figures (assets/) from the logs in docs/runs/

grpo.py calls plot_aha after every held-out evaluation, so a run's own figure (out/grpo/aha.png)
grows while it trains; this script redraws the committed figures, so the README's picture always
matches a log in the repository.
"""
import os

from matplotlib.figure import Figure  # a figure object, not pyplot: no display or backend needed, and
                                      # importing this file leaves a notebook's inline backend alone
from common import read_metrics

ROOT = os.path.dirname(os.path.abspath(__file__))
FIGURES = {  # figure -> (metrics log, title[, the reasons panel])
    "assets/aha.png": ("docs/runs/grpo-pairsum-seed0.jsonl",
                       "R1-Zero from scratch on a 2-core CPU: the search world (python grpo.py, seed 0)"),
    "assets/aha-add.png": ("docs/runs/grpo-add-seed0.jsonl",
                           "The quick run: 3-digit addition (python grpo.py --task add, seed 0)"),
    "assets/aha-code.png": ("docs/runs/grpo-code-seed0.jsonl",
                            "Code judged in the sandbox: tiny programs (python grpo.py --task code, seed 0)", True),
}


def plot_aha(metrics_path: str, out_png: str, title: str = "R1-Zero on a CPU", reasons: bool = False) -> str:
    """The aha figure (R1 paper, Figures 2 and 3): held-out pass@1 and cons@k, the mean response
    length of the training rollouts, and persistence in the search (failed tries per completion: a try
    answered "no", or a "wait"; the logs' `backtracks`) with the tries and give-ups, against RL step.
    reasons: a third panel with the share of completions that reason first (the code world's plans)."""
    records = read_metrics(metrics_path)
    evals = [r for r in records if r["kind"] == "eval"]
    train_rows = [r for r in records if r["kind"] == "train" and r.get("pass", 1) == 1]  # one per RL step
    search = any(r.get("tries", 0) > 0 for r in train_rows)  # the search world: a third panel
    fig = Figure(figsize=(15 if search or reasons else 11, 4))
    ax1, ax2, *ax3 = fig.subplots(1, 3 if search or reasons else 2)
    ax1.plot([r["step"] for r in evals], [r["pass@1"] for r in evals], "o-", label="pass@1")
    ax1.plot([r["step"] for r in evals], [r["cons@k"] for r in evals], "s--", label="cons@k")
    ax1.set(xlabel="RL step", ylabel="held-out accuracy", ylim=(0, 1), title="accuracy (cf. R1 Fig. 2)")
    ax1.legend(loc="lower right")
    ax2.plot([r["step"] for r in train_rows], [r["len"] for r in train_rows], color="tab:red", alpha=0.8,
             label="training rollouts")
    ax2.plot([r["step"] for r in evals], [r["length"] for r in evals], "o", color="tab:purple",
             label="held-out samples")
    ax2.set(xlabel="RL step", ylabel="mean response length (tokens)", title="response length (cf. R1 Fig. 3)")
    ax2.legend()
    if search:
        draw_reflection(ax3[0], train_rows)
    elif reasons:
        ax3[0].plot([r["step"] for r in train_rows], [r["reasons"] for r in train_rows], color="tab:green",
                    label="training rollouts")
        ax3[0].plot([r["step"] for r in evals], [r["reasons"] for r in evals], "o", color="tab:purple",
                    label="held-out samples")
        ax3[0].set(xlabel="RL step", ylabel="share that reasons first", ylim=(0, 1), title="thinking before answering")
        ax3[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def draw_reflection(ax, train_rows) -> None:
    """Failed tries (the logs' `backtracks`: about tries - 1) and tries per completion, and the give-up
    rate, against RL step: persistence in a search, not R1's re-evaluation of a step."""
    steps = [r["step"] for r in train_rows]
    ax.plot(steps, [r.get("backtracks", 0.0) for r in train_rows], color="tab:green", label="failed tries (\"no\")")
    ax.plot(steps, [r.get("tries", 0.0) for r in train_rows], color="tab:blue", alpha=0.6, label="tries")
    ax.set(xlabel="RL step", ylabel="per completion (training rollouts)", title="persistence in the search")
    twin = ax.twinx()
    twin.plot(steps, [r.get("give_up", 0.0) for r in train_rows], color="tab:gray", ls=":", label="give-up rate")
    twin.set(ylim=(0, 1), ylabel="give-up rate")
    ax.legend(loc="upper left")
    twin.legend(loc="upper right")


def main():
    for png, (log, title, *reasons) in FIGURES.items():
        print(plot_aha(os.path.join(ROOT, log), os.path.join(ROOT, png), title, *reasons))


if __name__ == "__main__":
    main()
