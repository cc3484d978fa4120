"""plots.py: the aha figure draws the log's own numbers against the step."""
import json

from matplotlib.figure import Figure

import plots


def test_aha_figure_plots_the_logs_values_against_the_step(tmp_path, monkeypatch):
    records = [{"kind": "eval", "step": 0, "pass@1": 0.2, "cons@k": 0.3, "length": 40.0},
               {"kind": "train", "step": 1, "len": 41.0, "tries": 1.5, "backtracks": 0.5, "give_up": 0.6},
               {"kind": "train", "step": 1, "pass": 2, "len": 99.0, "tries": 9.0},  # a second pass: not plotted
               {"kind": "train", "step": 2, "len": 45.0, "tries": 2.0, "backtracks": 1.0, "give_up": 0.4},
               {"kind": "eval", "step": 2, "pass@1": 0.5, "cons@k": 0.6, "length": 47.0}]
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: drawn.append(fig))
    assert plots.plot_aha(str(log), str(tmp_path / "aha.png")) == str(tmp_path / "aha.png")
    # each panel's curves as (steps, values); tries > 0 makes it the search world's three panels
    panels = [{(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines()} for ax in drawn[0].axes]
    accuracy, length, reflection, give_up = panels
    assert accuracy == {((0, 2), (0.2, 0.5)), ((0, 2), (0.3, 0.6))}                  # pass@1, cons@k
    assert length == {((1, 2), (41.0, 45.0)), ((0, 2), (40.0, 47.0))}                # rollouts, held-out
    assert reflection == {((1, 2), (1.5, 2.0)), ((1, 2), (0.5, 1.0))}                # tries, failed tries
    assert give_up == {((1, 2), (0.6, 0.4))}
