"""Run the notebooks top to bottom without Jupyter, and (with --write) store their outputs.

    python notebooks/execute.py                                  # every notebooks/0*.ipynb, full size
    python notebooks/execute.py notebooks/03_grpo.ipynb --smoke  # R1_SMOKE=1: tiny runs, seconds
    python notebooks/execute.py --write                          # full size, outputs stored for git

What it does, as a Jupyter kernel would: the code cells run in order in one namespace, starting in
the notebook's folder, with matplotlib's file-only Agg backend. Each cell's stdout is captured (the
console sees it too with echo), and so is every figure the cell leaves open (a PNG at DPI_OUT).
A cell whose last line is an expression shows its value, as in Jupyter (end it with ";" to hide it).
Outputs are kept small for git: at most MAX_LINES lines of text per cell. A cell that raises stops
everything with the notebook's name and the cell's number. IPython magics (`%...`, `!...`) are
refused: the notebooks are plain Python, so this executor and tests/test_notebooks.py can run them.
"""
import argparse
import ast
import base64
import contextlib
import glob
import io
import json
import linecache
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures go to PNG bytes, never to a window
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_LINES = 60  # text lines kept per cell output (head and tail)
DPI_OUT = 72    # resolution of stored figures: small PNGs in git


class _Tee(io.StringIO):
    """Captures what a cell prints and, with echo, shows it on the console as it comes."""

    def __init__(self, echo: bool):
        super().__init__()
        self.console = sys.stdout if echo else None

    def write(self, text):
        if self.console is not None:
            self.console.write(text)
        return super().write(text)


def _text(text: str) -> list[str]:
    """nbformat's list of lines, cut to MAX_LINES (the first third and the rest from the end)."""
    lines = text.splitlines(keepends=True)
    if len(lines) > MAX_LINES:
        head, tail = MAX_LINES // 3, MAX_LINES - MAX_LINES // 3 - 1
        lines = lines[:head] + [f"... ({len(lines) - head - tail} lines cut)\n"] + lines[-tail:]
    return lines


def _figures() -> list[dict]:
    """Every open matplotlib figure as a display_data output; then all are closed."""
    outputs = []
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=DPI_OUT, bbox_inches="tight")
        outputs.append({"output_type": "display_data", "metadata": {},
                        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                                 "text/plain": ["<Figure>"]}})
    plt.close("all")
    return outputs


def run_cell(source: str, namespace: dict, filename: str):
    """exec a cell in namespace; if its last statement is an expression (without a trailing ";"),
    evaluate it last and return its value, as Jupyter displays it."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)  # tracebacks
    tree = ast.parse(source, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    return None if last is None else eval(compile(last, filename, "eval"), namespace)


def execute(path: str, smoke: bool = False, write_outputs: bool = False, echo: bool = False) -> dict:
    """Run one notebook's code cells in order; return the notebook with its new outputs, and with
    write_outputs store it back in place. smoke sets R1_SMOKE=1 while it runs."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    name = os.path.basename(path)
    saved_env, saved_cwd = os.environ.get("R1_SMOKE"), os.getcwd()
    os.environ["R1_SMOKE"] = "1" if smoke else "0"
    os.chdir(os.path.dirname(os.path.abspath(path)))  # a Jupyter kernel starts in the notebook's folder
    namespace = {"__name__": "__main__"}
    plt.close("all")
    count = 0
    try:
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            count += 1
            source = "".join(cell["source"])
            where = f"{name}: code cell {count} (cell {index} of the notebook)"
            magics = [line for line in source.splitlines() if line.lstrip().startswith(("%", "!"))]
            if magics:
                raise ValueError(f"{where}: IPython magic {magics[0].strip()!r}; the notebooks are plain Python")
            stdout, t0 = _Tee(echo), time.time()
            try:
                with contextlib.redirect_stdout(stdout):
                    value = run_cell(source, namespace, f"<{name} cell {index}>")
            except Exception as e:
                plt.close("all")
                raise RuntimeError(f"{where} raised {type(e).__name__}: {e}") from e
            outputs = [{"output_type": "stream", "name": "stdout", "text": _text(stdout.getvalue())}] \
                if stdout.getvalue() else []
            if value is not None:
                outputs.append({"output_type": "execute_result", "execution_count": count, "metadata": {},
                                "data": {"text/plain": _text(repr(value))}})
            cell["outputs"], cell["execution_count"] = outputs + _figures(), count
            if echo:
                print(f"[{name} cell {count}: {time.time() - t0:.1f} s]", file=sys.stderr)
    finally:
        os.chdir(saved_cwd)
        if saved_env is None:
            os.environ.pop("R1_SMOKE", None)
        else:
            os.environ["R1_SMOKE"] = saved_env
    if write_outputs:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(nb, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", help="notebooks to run (default: notebooks/0*.ipynb, in order)")
    parser.add_argument("--smoke", action="store_true", help="R1_SMOKE=1: tiny models, 2 steps (what the tests run)")
    parser.add_argument("--write", action="store_true", help="store the outputs in the notebooks")
    args = parser.parse_args(argv)
    for path in args.paths or sorted(glob.glob(os.path.join(HERE, "0*.ipynb"))):
        t0 = time.time()
        execute(path, smoke=args.smoke, write_outputs=args.write, echo=True)
        print(f"{path}: ran in {time.time() - t0:.0f} s" + (", outputs written" if args.write else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
