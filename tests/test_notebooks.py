"""notebooks/: every notebook runs top to bottom in smoke mode (in-process, through
notebooks/execute.py), imports the project's functions instead of redefining them, starts with the
SMOKE switch, ends with exercises, and keeps its stored outputs small; and the executor itself
captures text and figures, cuts long output, and fails loudly."""
import ast
import base64
import glob
import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "0*.ipynb")))
MAX_IMAGE_BYTES = 150_000

_spec = importlib.util.spec_from_file_location("notebook_execute", os.path.join(ROOT, "notebooks", "execute.py"))
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def code_cells(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def project_names() -> set[str]:
    """Functions and classes defined at the top level of the project's .py files."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "*.py")):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return names


def test_the_notebooks_are_there():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert names == ["01_model.ipynb", "02_rewards.ipynb", "03_grpo.ipynb", "04_r1_pipeline.ipynb",
                     "05_distillation_and_scaling.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    monkeypatch.setenv("R1_SMOKE", "1")
    cwd = os.getcwd()
    nb = execute.execute(path, smoke=True, write_outputs=False)
    assert os.getcwd() == cwd  # the notebook's os.chdir does not leak out
    assert all(c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.slow
def test_notebook_imports_the_project_and_redefines_none_of_it(path):
    nb, owned = load(path), project_names()
    trees = [ast.parse(source) for source in code_cells(nb)]
    defined = {n.name for tree in trees for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & owned, f"{path} redefines {sorted(defined & owned)}: import them instead"
    modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    imported = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
                for tree in trees for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    assert imported & modules, f"{path} imports nothing from the project"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_shape(path):
    nb = load(path)
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    sources = code_cells(nb)
    assert 'SMOKE = os.environ.get("R1_SMOKE") == "1"' in sources[0]
    assert not [line for s in sources for line in s.splitlines() if line.lstrip().startswith(("%", "!"))]
    last = nb["cells"][-1]
    text = "".join(last["source"])
    assert last["cell_type"] == "markdown" and "Exercises" in text
    assert len(re.findall(r"^\d+\. ", text, re.MULTILINE)) >= 3, "at least 3 numbered exercises"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_stored_outputs_are_small(path):
    for cell in load(path)["cells"]:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                assert len(base64.b64decode(png)) <= MAX_IMAGE_BYTES, f"{path}: an image over 150 KB"
            text = output.get("text", output.get("data", {}).get("text/plain", []))
            assert len(text) <= execute.MAX_LINES + 1


# ----------------------------------------------------------------------------- the executor


def tiny_notebook(tmp_path, *sources):
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": s}
             for s in sources]
    path = tmp_path / "tiny.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return str(path)


def test_executor_stores_text_values_and_figures(tmp_path):
    path = tiny_notebook(tmp_path, "import os\nx = 2\nprint(os.environ['R1_SMOKE'])",
                         "for i in range(200):\n    print(i)",
                         "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nx * 21")
    execute.execute(path, smoke=True, write_outputs=True)
    cells = load(path)["cells"]
    assert cells[0]["outputs"][0]["text"] == ["1\n"] and cells[0]["execution_count"] == 1
    long = cells[1]["outputs"][0]["text"]
    assert len(long) == execute.MAX_LINES and "lines cut" in "".join(long) and long[-1] == "199\n"
    result, figure = cells[2]["outputs"]
    assert result["output_type"] == "execute_result" and result["data"]["text/plain"] == ["42"]
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")
    assert open(path, encoding="utf-8").read().endswith("}\n")


def test_executor_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("R1_SMOKE", raising=False)
    execute.execute(tiny_notebook(tmp_path, "import os\nassert os.environ['R1_SMOKE'] == '0'"), smoke=False)
    assert "R1_SMOKE" not in os.environ


def test_executor_fails_loudly_with_the_cell(tmp_path):
    path = tiny_notebook(tmp_path, "x = 1", "y = x + undefined_name")
    with pytest.raises(RuntimeError, match=r"tiny.ipynb: code cell 2 .*NameError"):
        execute.execute(path)


def test_executor_refuses_magics(tmp_path):
    with pytest.raises(ValueError, match="magic"):
        execute.execute(tiny_notebook(tmp_path, "%matplotlib inline\nx = 1"))
