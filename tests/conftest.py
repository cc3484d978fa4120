"""Shared test helpers: put the repo root on sys.path, run a script under torchrun on gloo."""
import os
import socket
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(script_path, *args, nproc: int = 1, timeout: int = 150) -> subprocess.CompletedProcess:
    """Run a python script as one plain process (nproc=1) or under torchrun with nproc CPU processes
    (gloo), with one thread each; fail the test with its stderr if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if nproc == 1:
        cmd = [sys.executable, str(script_path), *map(str, args)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--master-port={_free_port()}", str(script_path), *map(str, args)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def raising_on_call(fn, n: int, error: BaseException):
    """fn, except that its n-th call raises `error` instead: a Ctrl-C (KeyboardInterrupt) or a crash
    at a chosen moment of a run, for the tests that interrupt and resume."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise error
        return fn(*args, **kwargs)

    return wrapped
