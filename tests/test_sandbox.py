"""sandbox.py: ordinary programs behave as under `python main.py`, and a hostile suite where every
program is contained: it fails its test, the caller is unaffected (nothing raises, whatever the
program text), no process is left in the process table, no file appears or disappears outside the
sandbox, and nothing of the sandbox is left on disk. A busy program stops at its CPU budget. Runs
under bubblewrap and, for the attacks the fallback claims to stop, under the rlimits-only fallback
too (as root: each program runs as a fresh uid)."""
import os
import socket
import time
import uuid

import pytest

import rewards
import sandbox
import soak_sandbox
from sandbox import Limits, run_program, run_programs, sandbox_processes

FAST = Limits(timeout_s=0.5, cpu_s=1)
HAVE_BWRAP = sandbox.bwrap_path() is not None
IS_ROOT = os.geteuid() == 0
MODES = [pytest.param(True, id="bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="no working bwrap")),
         pytest.param(False, id="fallback", marks=pytest.mark.skipif(not IS_ROOT, reason="fallback tested as root"))]


@pytest.fixture(autouse=True)
def no_leftover_processes():
    assert sandbox_processes() == []
    yield
    deadline = time.monotonic() + 2.0  # the kernel finishes tearing a pid namespace down asynchronously
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sandbox_processes() == [], "a sandboxed process outlived run_program"


def run1(source: str, stdin: str = "", mode=None, limits: Limits = FAST) -> sandbox.RunResult:
    [result] = run_program(source, [stdin], limits, use_bwrap=mode)
    assert result.error == "", result.error  # whatever the program did, the sandbox itself survived
    return result


# ----------------------------------------------------------------------------- ordinary programs

@pytest.mark.parametrize("mode", MODES)
def test_runs_each_test_with_its_own_stdin(mode):
    results = run_program("a, b = map(int, input().split())\nprint(a * b)", ["2 3", "4 5\n", "x"], FAST,
                          use_bwrap=mode)
    assert [r.stdout for r in results] == ["6\n", "20\n", ""]
    assert [r.ok for r in results] == [True, True, False]
    assert "ValueError" in results[2].stderr and results[2].returncode == 1


@pytest.mark.parametrize("source, stdout, returncode", [
    ("print('héllo ✓')", "héllo ✓\n", 0),
    ("import sys\nprint(sys.stdin.read()[::-1], end='')", "cba", 0),
    ("print(__name__, __file__)", "__main__ main.py\n", 0),
    ("import sys\nprint(1)\nsys.exit(0)", "1\n", 0),
    ("import sys\nprint(1)\nsys.exit(3)", "1\n", 3),
    ("import sys\nsys.exit('bye')", "", 1),
    ("print(1)\nraise ValueError", "1\n", 1),
    ("import os\nprint(1)\nos._exit(0)", "", 0),                 # as in CPython: the buffer is lost
    ("import threading\nthreading.Thread(target=lambda: print('t')).start()", "t\n", 0),
    ("import atexit\natexit.register(print, 'bye')", "bye\n", 0),
    ("import math, collections, re\nprint(math.gcd(12, 18))", "6\n", 0),
    ("def f(:", "", 1),
])
def test_behaves_like_python_main(source, stdout, returncode):
    result = run1(source, "abc")
    assert (result.stdout, result.returncode) == (stdout, returncode)


def test_large_stdin_is_fed_without_deadlock():
    big = "7\n" * 300_000  # 600 KB, far beyond a pipe buffer
    assert run1("import sys\nprint(sum(map(int, sys.stdin)))", big).stdout == "2100000\n"
    assert run1("print('ignores stdin')", big).ok  # exits without reading: no EPIPE trouble


@pytest.mark.slow
def test_batch_runs_in_parallel_and_keeps_order():
    programs = [f"print({i} * int(input()))" for i in range(12)] + ["while True: pass"]
    stdins = [["2", "3"]] * 13
    t0 = time.monotonic()
    results = run_programs(programs, stdins, FAST, max_workers=4)
    assert [[r.stdout for r in rs] for rs in results[:12]] == [[f"{2 * i}\n", f"{3 * i}\n"] for i in range(12)]
    assert all(r.timed_out for r in results[12])
    assert time.monotonic() - t0 < 30


# ----------------------------------------------------------------------------- hostile programs

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_infinite_loop_times_out(mode):
    t0 = time.monotonic()
    result = run1("while True: pass", mode=mode)
    assert result.timed_out and not result.ok and result.returncode == -9
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.slow
def test_tests_after_a_timeout_are_skipped_unless_asked(skip):
    """A program that loops on one input costs one timeout: its later tests are reported like the
    one that timed out, without running (stop_after_failure, what code_rewards uses); with it off
    (the default) they run."""
    source = "x = input()\nwhile x == '2':\n    pass\nprint(x)"
    limits = Limits(timeout_s=0.5, cpu_s=1, stop_after_failure=skip)
    ok, looped, last = run_program(source, ["1", "2", "3"], limits, use_bwrap=None)
    assert ok.ok and ok.stdout == "1\n" and looped.timed_out
    if skip:   # "3" does not loop: timed out with no output means it never ran
        assert last.timed_out and last.stdout == "" and not last.ok
    else:
        assert last.ok and last.stdout == "3\n"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_fork_bomb_is_bounded_and_reaped(mode):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    assert not run1(bomb, mode=mode).ok


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb(mode):
    result = run1("x = []\nwhile True:\n    x.append(bytearray(10**8))", mode=mode)
    assert not result.ok and "MemoryError" in result.stderr
    assert not run1("x = bytearray(10**10)", mode=mode).ok


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_giant_output_is_capped_while_read(mode):
    t0 = time.monotonic()
    result = run1("while True:\n    print('x' * 10000)", mode=mode, limits=Limits(timeout_s=5, stdout_kb=64))
    assert result.output_truncated and not result.ok
    assert len(result.stdout) == 64 * 1024
    assert time.monotonic() - t0 < 4  # killed at the cap, not at the timeout
    assert len(run1("import sys\nwhile True: sys.stderr.write('e' * 10000)", mode=mode).stderr) <= 4 * 1024


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_deep_recursion(mode):
    python_level = "import sys\nsys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1)\nf(0)"
    c_level = "import sys\nsys.setrecursionlimit(10**6)\ndef f(n): return list(map(f, [n + 1]))\nf(0)"
    for source in (python_level, c_level):  # the second overflows the C stack: SIGSEGV
        assert not run1(source, mode=mode).ok


@pytest.mark.parametrize("mode", MODES)
def test_files_outside_the_sandbox_are_untouched(mode, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    source = f"""
import os
for attempt in (lambda: open({str(marker)!r}, "w").write("x"), lambda: os.remove({str(victim)!r}),
                lambda: os.rename({str(tmp_path)!r}, "/tmp/moved"), lambda: open(os.path.expanduser("~/x"), "w"),
                lambda: open("local.txt", "w").write("inside the sandbox's own temp dir is fine")):
    try:
        attempt()
    except Exception as e:
        print(type(e).__name__)
print(os.listdir("."))
"""
    result = run1(source, mode=mode)
    assert "local.txt" in result.stdout
    assert victim.read_text() == "keep me" and not marker.exists()


@pytest.mark.skipif(not HAVE_BWRAP, reason="no working bwrap")
def test_bwrap_hides_the_host_file_system():
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"  # world-writable on the host, private in the sandbox
    source = f"""
import os
open({marker!r}, "w").write("x")
for path in ("/home", "/work", "/etc/passwd", {__file__!r}):
    try:
        print(path, os.listdir(path) if os.path.isdir(path) else open(path).read()[:20])
    except Exception as e:
        print(path, type(e).__name__)
try:
    open("/usr/pwned", "w")
except Exception as e:
    print("/usr/pwned", type(e).__name__)
try:
    open("/tmp/big", "wb").write(b"x" * (2 << 20))
except Exception as e:
    print("big", type(e).__name__)
"""
    out = run1(source).stdout
    assert not os.path.exists(marker)
    assert "/work FileNotFoundError" in out and "/etc/passwd FileNotFoundError" in out
    assert f"{__file__} FileNotFoundError" in out and "/usr/pwned OSError" in out
    assert "big OSError" in out  # RLIMIT_FSIZE: 1 MiB per file


@pytest.mark.parametrize("mode", MODES)
def test_environment_of_the_trainer_is_unreadable(mode, monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("TRAINER_API_KEY", secret)
    source = """
import os
found = [v for v in os.environ.values() if v.startswith("sk-")]
for pid in [os.getppid(), 1] + [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        data = open(f"/proc/{pid}/environ", "rb").read()
        found += [w.decode() for w in data.split(b"\\0") if b"sk-" in w]
    except Exception:
        pass
print(*found)
"""
    result = run1(source, mode=mode)
    assert secret not in result.stdout and "TRAINER_API_KEY" not in result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_killing_the_parent_fails_and_the_driver_survives(mode):
    source = """
import os
pid = int(input())
for target in (pid, os.getppid(), 1):
    for sig in (9, 15):
        try:
            os.kill(target, sig)
        except Exception as e:
            pass
try:
    os.kill(-1, 9)      # everything this uid may signal: only its own processes
except Exception:
    pass
print("still here")
"""
    results = run_program(source, [str(os.getpid()), str(os.getpid())], FAST, use_bwrap=mode)
    assert [r.stdout for r in results] == ["still here\n"] * 2  # the driver lived to run test 2
    assert run1("import os\nos.killpg(0, 9)", mode=mode).returncode == -9  # kills only itself


@pytest.mark.parametrize("mode", MODES)
def test_setsid_daemon_is_reaped(mode):
    source = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
print("parent done")
"""
    assert run1(source, mode=mode).stdout == "parent done\n"
    # the autouse fixture checks that the sleeping grandchild is gone


@pytest.mark.skipif(not IS_ROOT, reason="the uid drop only happens as root")
@pytest.mark.parametrize("mode", MODES)
def test_root_privileges_are_gone(mode):
    source = """
import os, resource
for name, attempt in [("nproc", lambda: resource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))),
                      ("cpu", lambda: resource.setrlimit(resource.RLIMIT_CPU, (-1, -1))),
                      ("setuid", lambda: os.setuid(0))]:
    try:
        attempt()
        print(name, "RAISED")
    except Exception:
        print(name, "denied")
print(os.getuid() != 0, open("/proc/self/status").read().split("CapEff:")[1].split()[0])
"""
    assert run1(source, mode=mode).stdout == "nproc denied\ncpu denied\nsetuid denied\nTrue 0000000000000000\n"


@pytest.mark.skipif(not HAVE_BWRAP, reason="no working bwrap")
def test_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    source = f"""
import socket
for host in ("127.0.0.1", "8.8.8.8"):
    try:
        socket.create_connection((host, {port}), timeout=0.3)
        print("connected", host)
    except OSError as e:
        print("refused", host)
try:
    socket.getaddrinfo("example.com", 80)
    print("resolved")
except OSError:
    print("no dns")
"""
    try:
        out = run1(source).stdout
        assert "connected" not in out and "resolved" not in out
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


@pytest.mark.skipif(not HAVE_BWRAP or sandbox._seccomp_bpf() is None, reason="no bwrap or no seccomp filter here")
def test_no_new_user_namespaces():
    source = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000), ctypes.get_errno())      # CLONE_NEWUSER
"""
    assert run1(source).stdout == "-1 1\n"  # EPERM from the seccomp filter


def test_fallback_warns_once(capsys):
    if not IS_ROOT:
        pytest.skip("fallback tested as root")
    sandbox._bwrap_state.pop("warned", None)
    run1("print(1)", mode=False)
    run1("print(1)", mode=False)
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "NOT protected" in err


def test_sandbox_failure_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(sandbox, "_python", lambda: "/nonexistent/python")
    results = run_program("print(1)", ["", ""], FAST)
    assert len(results) == 2 and all(r.error and not r.ok for r in results)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_caller_deadline_tears_down_the_whole_sandbox(mode):
    # startup_s < 0 makes the caller give up long before the driver's own per-test timeout, so the
    # caller must kill the driver, the program and the program's setsid'd daemon itself
    source = """
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(60)
time.sleep(60)
"""
    t0 = time.monotonic()
    [result] = run_program(source, [""], Limits(timeout_s=5, startup_s=-5.2), use_bwrap=mode)
    assert result.error and not result.ok and time.monotonic() - t0 < 3


# ----------------------------------------------------------------------------- the file system outside, and cleanup

SHARED_DIRS = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d) and os.stat(d).st_mode & 0o002]


@pytest.fixture
def private_tempdir(monkeypatch, tmp_path_factory):
    """A fresh directory for the fallback's working directories, so that what is left there is
    this test's alone (other suites may run sandboxes at the same time)."""
    import tempfile
    tmp_path_factory.getbasetemp()  # pytest's own temporary directories stay where they were
    root = tempfile.mkdtemp(prefix="sandbox-test-", dir="/tmp")
    os.chmod(root, 0o1777)  # as /tmp is
    monkeypatch.setattr(tempfile, "tempdir", root)
    yield root
    assert sandbox._remove_tree(root)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shared", SHARED_DIRS)
@pytest.mark.slow
def test_a_program_that_writes_outside_its_directory_scores_0(mode, shared, private_tempdir):
    """Writable by everyone on the host, so a fresh uid could write there too; in the fallback the
    write is refused (Landlock), under bubblewrap everything but the working directory is read-only.
    (Under bubblewrap /tmp IS the private working directory: the file lands there and dies with it.)"""
    path = os.path.join(shared, f"pwned-{uuid.uuid4().hex}")
    source = f"open({path!r}, 'w').write('x')\nprint(int(input()) + 1)"
    score = rewards.code_reward(f"<answer>{source}</answer>", [{"input": "1", "output": "2"}], use_bwrap=mode)
    assert not os.path.exists(path)
    assert score == (1.0 if mode and shared == "/tmp" else 0.0)
    assert os.listdir(private_tempdir) == []


@pytest.mark.skipif(not IS_ROOT or not sandbox.landlock_abi(), reason="fallback tested as root; no Landlock here")
def test_landlock_refuses_the_write_itself(private_tempdir):
    """In the fallback the write fails inside the program (it is not merely cleaned up afterwards),
    while its own working directory stays writable."""
    path = f"/dev/shm/pwned-{uuid.uuid4().hex}" if "/dev/shm" in SHARED_DIRS else f"/tmp/pwned-{uuid.uuid4().hex}"
    source = f"open('mine', 'w').write('ok')\nprint(open('mine').read())\nopen({path!r}, 'w')"
    result = run1(source, mode=False)
    assert result.stdout == "ok\n" and "PermissionError" in result.stderr and result.violation == ""
    assert not os.path.exists(path)


def test_landlock_is_used_only_where_a_real_restriction_works(monkeypatch):
    """A container may answer Landlock's version query and refuse the rest: the probe (a throwaway
    interpreter restricting itself) then says 0, rather than every program failing to start."""
    monkeypatch.delitem(sandbox._bwrap_state, "landlock", raising=False)
    monkeypatch.setattr(sandbox, "_python", lambda: "/bin/false")  # stands in for a refused restriction
    assert sandbox.landlock_abi() == 0


@pytest.mark.skipif(not IS_ROOT, reason="the fallback finds files by the sandbox uid only as root")
def test_without_landlock_files_left_outside_fail_the_program_and_are_removed(monkeypatch, private_tempdir):
    """On a kernel without Landlock the write succeeds; the fallback then finds what the fresh uid
    owns in the shared writable directories (and in world-writable directories below them), deletes
    it, and fails the program, which printed the right answer."""
    monkeypatch.setitem(sandbox._bwrap_state, "landlock", 0)
    world = f"/tmp/world-writable-{uuid.uuid4().hex}"
    os.mkdir(world)
    os.chmod(world, 0o1777)
    try:
        tag = uuid.uuid4().hex
        targets = [os.path.join(d, f"pwned-{tag}") for d in SHARED_DIRS] + [os.path.join(world, "pwned")]
        tree = os.path.join(SHARED_DIRS[-1], f"tree-{tag}")
        source = f"""
import os
for path in {targets!r}:
    open(path, 'w').write('x')
os.makedirs({tree!r} + '/a/b')
os.rename(os.getcwd(), os.getcwd() + '-moved')     # its own working directory, out of the cleanup's way
print(int(input()) + 1)
"""
        [result] = run_program(source, ["1"], FAST, use_bwrap=False)
        assert result.stdout == "2\n" and result.returncode == 0 and not result.ok
        for path in targets + [tree]:
            assert path in result.violation and not os.path.lexists(path)
        assert "-moved" in result.violation and os.listdir(private_tempdir) == []
    finally:
        os.rmdir(world)


# Traps for the cleanup, all inside the program's own working directory (so they are allowed: the
# program is judged by what it prints), and a daemon that keeps writing while it is deleted.
TRAPS = soak_sandbox.CLEANUP_TRAPS + "\nprint(int(input()) + 1)"


@pytest.mark.parametrize("mode", MODES)
def test_cleanup_traps_neither_raise_nor_leave_anything(mode, private_tempdir, tmp_path):
    """The program passes (its traps are its own business) and its directory is gone afterwards; the
    link out of the tree points at a directory of ours, which the cleanup must not enter."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep me")
    source = TRAPS.replace("os.symlink('/', 'root')", f"os.symlink({str(victim)!r}, 'root')")
    [result] = run_program(source, ["1"], Limits(timeout_s=2, cpu_s=1), use_bwrap=mode)
    assert result.error == "" and result.violation == "", (result.error, result.violation)
    assert result.stdout == "2\n" and result.ok
    assert os.listdir(private_tempdir) == [] and (victim / "keep").read_text() == "keep me"


def test_remove_tree_deletes_any_depth_and_never_follows_links(tmp_path):
    """A tree deeper than Python's recursion limit and longer than PATH_MAX, with a link out of the
    tree at the bottom: the tree goes, what the link points to stays."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path)  # tmpfs: quick to fill and empty
    top = os.path.join(base, f"deep-{uuid.uuid4().hex}")
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY)
    for _ in range(1500):  # 1500 x 5 bytes: past PATH_MAX (4096) and the recursion limit (1000)
        os.mkdir("dddd", dir_fd=fd)
        child = os.open("dddd", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.symlink(str(tmp_path), "out", dir_fd=fd)
    os.close(fd)
    (tmp_path / "keep").write_text("keep me")
    assert sandbox._remove_tree(top) and not os.path.lexists(top)
    assert (tmp_path / "keep").read_text() == "keep me"
    assert sandbox._remove_tree(str(tmp_path / "keep")) and sandbox._remove_tree(str(tmp_path / "nothing"))


@pytest.mark.skipif(not IS_ROOT, reason="needs root to become another user")
def test_remove_tree_as_the_owner_reopens_what_it_made_unreadable():
    """Not root (the fallback run by a normal user): directories chmod 000 and 0500 by their owner."""
    import pathlib
    import tempfile
    base = tempfile.mkdtemp(dir="/tmp")  # not below pytest's tmp_path: its parent is root's, 0700
    os.chown(base, 65534, 65534)
    top = pathlib.Path(base) / "tree"
    pid = os.fork()
    if pid == 0:  # a throwaway user, as a normal user's trainer would be
        code = 1
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.makedirs(top / "a" / "b")
            (top / "a" / "b" / "f").write_text("x")
            os.chmod(top / "a" / "b", 0)
            os.chmod(top / "a", 0o500)
            code = 0 if sandbox._remove_tree(str(top)) else 2
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 and not top.exists()
    os.rmdir(base)


# ----------------------------------------------------------------------------- what a program may burn

@pytest.mark.parametrize("mode", MODES)
def test_cpu_budget_stops_a_busy_loop_long_before_its_wall_clock(mode):
    """Limits.cpu_s, summed over the program's processes, is checked while it runs: the loop reports
    its own CPU time and is killed near 0.2 s, not at the wall clock (30 s) nor at RLIMIT_CPU (1 s)."""
    source = ("import time\nn = 0\nwhile True:\n    n += 1\n"
              "    if n % 20000 == 0:\n        print(time.process_time(), flush=True)")
    result = run1(source, mode=mode, limits=Limits(timeout_s=30, cpu_s=0.2))
    assert result.timed_out and not result.ok
    assert 0.1 < float(result.stdout.split()[-1]) < 0.6


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_cpu_budget_counts_every_process_of_a_fork_bomb(mode):
    """16 spinning processes: each alone stays under RLIMIT_CPU (1 s), their sum is stopped at the budget.
    Measured as CPU time of the whole sandbox (reaped into this process's children), not wall time."""
    import resource

    def children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    before = children_cpu()
    result = run1(bomb, mode=mode, limits=Limits(timeout_s=30, cpu_s=0.2))
    assert result.timed_out and children_cpu() - before < 3.0  # without the budget: up to 16 x 1 s


def test_tests_after_a_crash_are_skipped_too():
    """stop_after_failure: a crash (non-zero exit) stops the program's tests like a timeout; a wrong
    output does not."""
    source = "x = input()\nassert x != '2'\nprint(x if x != '1' else 'wrong')"
    limits = Limits(timeout_s=0.5, cpu_s=1, stop_after_failure=True)
    wrong, crashed, skipped = run_program(source, ["1", "2", "3"], limits)
    assert wrong.ok and wrong.stdout == "wrong\n"
    assert crashed.returncode == 1 and "AssertionError" in crashed.stderr
    assert (skipped.returncode, skipped.stdout, skipped.stderr, skipped.ok) == (1, "", "", False)


# ----------------------------------------------------------------------------- code_rewards never raises

def test_the_tests_fraction_counts_tests_after_a_crash_as_failed():
    """As a judge: the program would pass tests 2 and 3 but crashes on test 1, so it scores 0, not 2/3."""
    tests = [{"input": "1", "output": "1"}, {"input": "2", "output": "2"}, {"input": "3", "output": "3"}]
    source = "x = input()\nassert x != '1'\nprint(x)"
    assert rewards.code_reward(f"<answer>{source}</answer>", tests) == 0.0
    assert rewards.code_reward(f"<answer>{source.replace('1', '9')}</answer>", tests) == 1.0


NASTY = [
    "\x00", "\ud800", "print('\\ud800')", "import sys; sys.stdout.buffer.write(b'\\xff' * 10)", "x" * 100_000,
    "raise SystemExit(2**70)", "import os; os.close(1); os.close(2)", "import os; os.kill(os.getpid(), 19)",
    "import os\nfor _ in range(30):\n    os.mkdir('d' * 250)\n    os.chdir('d' * 250)",
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        open(f'f{time.time()}', 'w')",
    "import os\nos.chmod('.', 0)",
    "import os\nos.rename(os.getcwd(), os.getcwd() + '-x')",
    "import os\nos.link('/etc/passwd', 'passwd')",
    "open('/dev/shm/nasty-' + str(id(0)), 'w').write('x')",
    soak_sandbox.CLEANUP_TRAPS,
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_code_rewards_never_raise_on_nasty_programs(mode, private_tempdir):
    """Each program scores 0 (none prints "2") and leaves nothing behind, in one parallel batch."""
    tests = [{"input": "1", "output": "2"}, {"input": "1", "output": "2"}]
    completions = [f"<answer>```python\n{p}\n```</answer>" for p in NASTY] + NASTY
    scores = rewards.code_rewards(completions, [tests] * len(completions), limits=Limits(timeout_s=1, cpu_s=0.3),
                                  use_bwrap=mode)
    assert scores == [0.0] * len(completions)
    assert os.listdir(private_tempdir) == [] and not [f for f in os.listdir("/dev/shm") if f.startswith("nasty-")]


@pytest.mark.parametrize("mode", MODES)
def test_code_reward_never_raises_on_any_text(mode, private_tempdir):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(), st.booleans())
    def check(text, fenced):
        completion = f"<answer>```python\n{text}\n```</answer>" if fenced else text
        assert rewards.code_reward(completion, [{"input": "", "output": "\x00 never printed"}], use_bwrap=mode,
                                   limits=Limits(timeout_s=1, cpu_s=0.3)) == 0.0

    check()
    assert os.listdir(private_tempdir) == []
