"""Run untrusted programs for the code-execution reward. DeepSeek-R1 (arXiv v1, section 2.2.2,
accuracy rewards) checks code by compiling it and running it against predefined test cases, as a
LeetCode judge does. rewards.py stays pure; everything that forks, limits and kills lives here.
Linux only (namespaces, /proc, pidfds).

    python sandbox.py            # which isolation is in use, and one trivially correct program run

    from sandbox import run_programs
    run_programs(["print(int(input()) + 1)"], [["1", "41"]])   # -> [[RunResult(stdout="2\\n"), ...]]

How one program is run (one sandbox launch for all of its tests):
  1. The caller starts `bwrap ... python -I -S sandbox.py --driver` in a new session. bubblewrap gives
     it new pid, network, ipc and uts namespaces (no network at all), a read-only view of /usr and of
     the Python installation and nothing else of the host (no home directories, no project files, from
     /etc only the dynamic linker's cache), a fresh /proc that shows only the sandbox (so
     /proc/<ppid>/environ of the trainer does not exist), an empty environment, a private size-capped
     /tmp as the working directory (gone with the sandbox), a seccomp filter against new user
     namespaces, and SIGKILL for every process in it when the caller goes away (--die-with-parent;
     the pid namespace's teardown takes setsid'd daemons with it).
  2. The driver (this file's first half, pid 1 in the sandbox) reads the program and the test inputs
     from stdin, and forks one process per test. That process sets rlimits, drops from root to a
     fresh random uid (so RLIMIT_NPROC binds, the limits cannot be raised again, root's files are
     unreadable, the driver cannot be signalled), and runs the program as __main__ in the forked
     interpreter: ~1 ms per test instead of ~15 ms for a new interpreter. Expected outputs never
     enter the sandbox; rewards.py compares them outside.
  3. The driver feeds stdin, reads stdout/stderr with a cap WHILE reading, and every 20 ms adds up
     the CPU time of the test's processes; it kills on timeout, CPU budget or overflow, then SIGKILLs
     every remaining descendant (it is their subreaper) before the next test.
  4. The caller reads the driver's framed results with its own cap and deadline, kills the whole
     process group and (fallback only) every process of the sandbox uid or session.
Without bubblewrap (a laptop) steps 2-4 still run, in a temporary directory that is the program's
working directory, and a warning says once what is then NOT protected. Writes outside that
directory: refused by Landlock where the kernel has it (Linux >= 5.13, no privileges needed);
otherwise, as root, whatever the sandbox uid left in /tmp, /var/tmp, /dev/shm, /run/lock is found
afterwards, removed, and fails the program (RunResult.violation). The directory is then deleted
whatever the program did to it (any depth, chmod 000, links, fifos: _remove_tree).

Decisions (Limits below): no network; 2 s wall clock per test; 0.1 s CPU per test over all of the
program's processes (the wall clock is what a program may wait, the CPU budget what it may burn: the
tasks' reference programs need under 10 ms, and a busy loop or a fork bomb in an RL batch then costs
the waiting trainer ~0.1-0.3 s of CPU instead of 2 s of both cores; raise it for heavier programs);
256 MiB address space per process; 1 MiB per written file, 16 MiB of /tmp; 16 processes+threads; 64
open files; 64 KiB stdout per test (more kills the program and fails the test), 4 KiB stderr kept.
Programs get the standard library only (-S: no site-packages). The tests of one program run one
after another in the same sandbox, so files one test writes are visible to the next. A non-zero exit
status fails a test even with the right output (RunResult.ok; rewards.py decides). Nothing a program
does raises in the caller: a failure of the sandbox itself is RunResult.error.
"""
import os
import select
import sys
import time

# ============================================================================= the driver (in the sandbox)
# This half runs inside the sandbox as `python -I -S sandbox.py --driver` and imports only modules
# built into the interpreter, so that a launch costs one bare interpreter start (~15 ms).

_SIGKILL = 9  # signal.SIGKILL, without importing `signal` (its enum import costs ~10 ms per launch)
_TICK_S = 0.02  # how often the driver adds up the CPU time of a running test's processes
_PRELOAD = ("math", "collections", "itertools", "functools", "heapq", "bisect", "re", "string", "random",
            "fractions", "json", "copy", "operator", "threading", "traceback", "dataclasses", "typing")


def _pump(stdin_fd: int, data: bytes, streams: dict, deadline: float, exit_fd: int = -1, on_exit=None,
          over_budget=None):
    """Write `data` to stdin_fd while reading streams {name: (fd, cap_bytes)} until every stream is at
    EOF. Returns ({name: bytes}, timed_out, truncated). Caps are enforced while reading: "stdout" over
    its cap stops everything (truncated); other streams keep their cap and drop the rest. `exit_fd`
    (a pidfd) calls on_exit() once when the process exits, so that leftover children can be killed
    and their pipe ends closed. over_budget() is asked every _TICK_S; True stops everything as a
    timeout does. The caller closes the stream fds; stdin_fd is closed here."""
    poller, names, bufs = select.poll(), {}, {}
    for name, (fd, _) in streams.items():
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
        names[fd], bufs[name] = name, bytearray()
    pending = memoryview(data)
    if pending:
        os.set_blocking(stdin_fd, False)
        poller.register(stdin_fd, select.POLLOUT)
    else:
        os.close(stdin_fd)
        stdin_fd = -1
    if exit_fd >= 0:
        poller.register(exit_fd, select.POLLIN)
    open_streams, timed_out, truncated = len(streams), False, False
    next_check = time.monotonic() + _TICK_S
    try:
        while open_streams and not truncated:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                timed_out = True
                break
            if over_budget is not None:
                if now >= next_check:
                    if over_budget():
                        timed_out = True
                        break
                    next_check = now + _TICK_S
                left = min(left, next_check - now)
            for fd, _ in poller.poll(max(1, int(left * 1000))):
                if fd == stdin_fd:
                    try:
                        pending = pending[os.write(fd, pending[:1 << 16]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the program exited or closed stdin without reading it all
                        pending = pending[:0]
                    if not pending:
                        poller.unregister(fd)
                        os.close(fd)
                        stdin_fd = -1
                elif fd == exit_fd:
                    poller.unregister(fd)
                    on_exit()
                elif fd in names:
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        poller.unregister(fd)
                        del names[fd]
                        open_streams -= 1
                        continue
                    name, buf = names[fd], bufs[names[fd]]
                    room = streams[name][1] - len(buf)
                    buf += chunk[:max(room, 0)]
                    truncated = truncated or (name == "stdout" and len(chunk) > room)
    finally:
        if stdin_fd >= 0:
            os.close(stdin_fd)
    return {name: bytes(buf) for name, buf in bufs.items()}, timed_out, truncated


def _proc_table() -> list:
    """[(pid, ppid, session, state)] for every process visible in /proc."""
    table = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat(int(name))
        if fields is not None:
            table.append((int(name), int(fields[1]), int(fields[3]), fields[0]))
    return table


def _stat(pid: int):
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()  # the command name may contain spaces and ')'


def _process_tree() -> dict:
    """{pid: [its children's pids]} for this process and every descendant of it. Read from
    /proc/<pid>/task/<tid>/children (a few files per process of the sandbox) where the kernel has
    them, else from the whole process table (slow without bubblewrap's own /proc)."""
    me = os.getpid()
    if os.path.exists(f"/proc/{me}/task/{me}/children"):
        children_of = _children
    else:
        table = {}
        for pid, ppid, *_ in _proc_table():
            table.setdefault(ppid, []).append(pid)
        children_of = lambda pid: table.get(pid, [])  # noqa: E731
    tree, stack = {}, [me]
    while stack:
        pid = stack.pop()
        tree[pid] = children_of(pid)
        stack += tree[pid]
    return tree


def _children(pid: int) -> list:
    """The children of every thread of `pid` ([] once it has exited)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids += map(int, f.read().split())
    except OSError:  # it has just exited
        pass
    return kids


def _cpu_s_of_descendants() -> float:
    """CPU seconds of every descendant of this process (the running test's processes, orphans and
    daemons included): user + system time of all their threads and of the children they waited for."""
    ticks, me = 0, os.getpid()
    for pid in _process_tree():
        fields = _stat(pid) if pid != me else None
        if fields is not None:
            ticks += sum(map(int, fields[11:15]))  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _kill_descendants() -> None:
    """SIGKILL and reap every descendant of this process. The driver is a subreaper (or pid 1), so
    orphans, double forks and setsid'd daemons are re-parented to it and cannot slip away. A fork bomb
    races this loop, but RLIMIT_NPROC bounds it and a pending SIGKILL makes fork() fail."""
    me = os.getpid()
    for _ in range(10_000):
        tree = _process_tree()
        if not tree[me]:
            return
        for pid in tree:
            if pid != me:
                try:
                    os.kill(pid, _SIGKILL)
                except OSError:
                    pass
        for pid in tree[me]:  # direct children die promptly once killed; reap them
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _apply_limits(lim: dict, uid, landlock_abi: int) -> None:
    """In the test process, before the program runs: rlimits, the file system outside the working
    directory made read-only (fallback, where the kernel has Landlock), then (as root) a fresh uid,
    which drops every capability, so none of it can be undone."""
    import resource
    nproc = lim["nproc"]
    if uid is None:  # not root: RLIMIT_NPROC counts all of this user's processes, not just ours
        me = os.getuid()
        nproc += sum(1 for p, *_ in _proc_table() if _owner(p) == me)
    cpu_s = int(-(-lim["cpu_s"] // 1))  # whole seconds, rounded up: a backstop behind the driver's budget
    wanted = {resource.RLIMIT_CPU: (cpu_s, cpu_s + 1),  # SIGXCPU, then SIGKILL
              resource.RLIMIT_AS: (lim["memory_mb"] << 20,) * 2,
              resource.RLIMIT_FSIZE: (lim["file_size_mb"] << 20,) * 2,
              resource.RLIMIT_NOFILE: (lim["nofile"],) * 2,
              resource.RLIMIT_NPROC: (nproc,) * 2,
              resource.RLIMIT_CORE: (0, 0)}
    for res, (soft, hard) in wanted.items():
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
        resource.setrlimit(res, (min(soft, hard), hard))
    if landlock_abi:
        _landlock_write_only_here(landlock_abi)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


def _landlock_write_only_here(abi: int) -> None:
    """Landlock (Linux >= 5.13, no privileges needed): from now on this process and its children may
    create, write, rename or delete files only below the current directory (and write /dev/null);
    reading is unrestricted. `abi` is the kernel's Landlock version: later versions know more rights,
    and a right the ruleset does not list stays allowed everywhere. Raises OSError if it fails."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def syscall(nr, *args):
        ret = libc.syscall(ctypes.c_long(nr), *args)
        if ret < 0:
            raise OSError(ctypes.get_errno(), f"landlock syscall {nr}")
        return ret

    def u64(x):
        return x.to_bytes(8, sys.byteorder)

    WRITE_FILE, TRUNCATE = 1 << 1, 1 << 14
    write = 0x1FF2  # WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_{CHAR,DIR,REG,SOCK,FIFO,BLOCK,SYM} (ABI 1)
    write |= (1 << 13 if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)  # REFER (move across dirs)
    ruleset = syscall(444, u64(write), ctypes.c_long(8), ctypes.c_long(0))  # landlock_create_ruleset
    for path, allowed in ((".", write), ("/dev/null", write & (WRITE_FILE | TRUNCATE))):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = u64(allowed) + fd.to_bytes(4, sys.byteorder)  # struct landlock_path_beneath_attr (packed)
        syscall(445, ctypes.c_long(ruleset), ctypes.c_long(1), rule, ctypes.c_long(0))  # landlock_add_rule
        os.close(fd)
    PR_SET_NO_NEW_PRIVS = 38
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    syscall(446, ctypes.c_long(ruleset), ctypes.c_long(0))  # landlock_restrict_self
    os.close(ruleset)


def _owner(pid: int):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _exit_status(code) -> int:
    """What `sys.exit(code)` makes the exit status, as CPython does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _exec_program(source: str) -> int:
    """Run `source` as __main__ in this forked, limited interpreter, like `python main.py` would:
    fresh stdio on fds 0/1/2, SystemExit honoured, uncaught exceptions printed with exit status 1,
    non-daemon threads and atexit handlers run at the end. Returns the exit status."""
    import builtins
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.argv = ["main.py"]
    main = type(sys)("__main__")
    main.__builtins__, main.__file__ = builtins, "main.py"
    sys.modules["__main__"] = main
    code = 0
    try:
        try:
            exec(compile(source, "main.py", "exec"), main.__dict__)
        finally:
            threading = sys.modules.get("threading")
            if threading is not None:
                threading._shutdown()
            import atexit
            atexit._run_exitfuncs()
    except SystemExit as e:
        code = _exit_status(e.code)
    except BaseException as e:
        code = 1
        try:
            import traceback
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # hide this driver frame
        except BaseException:
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = code or 1
    return code


def _run_test(source: str, stdin: bytes, lim: dict, uid, landlock_abi: int) -> tuple:
    """One test in a forked child. Returns (returncode, timed_out, truncated, stdout, stderr);
    returncode is negative when a signal killed the program (-9 for our SIGKILL)."""
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # the test process; it must never return into the driver's code
        code = 125
        try:
            os.dup2(r0, 0)
            os.dup2(w1, 1)
            os.dup2(w2, 2)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            try:
                _apply_limits(lim, uid, landlock_abi)
            except BaseException as e:  # fail closed: the program does not run
                os.write(2, f"sandbox: the limits could not be applied: {e!r}\n".encode())
                raise
            code = _exec_program(source)
        finally:
            os._exit(code)
    for fd in (r0, w1, w2):
        os.close(fd)
    status = []

    def on_exit():
        status.append(os.waitpid(pid, 0)[1])
        _kill_descendants()  # daemons it left behind still hold the pipes open

    pidfd = os.pidfd_open(pid)
    try:
        out, timed_out, truncated = _pump(
            w0, stdin, {"stdout": (r1, lim["stdout_kb"] << 10), "stderr": (r2, lim["stderr_kb"] << 10)},
            time.monotonic() + lim["timeout_s"], pidfd, on_exit,
            over_budget=lambda: _cpu_s_of_descendants() > lim["cpu_s"])
    finally:
        for fd in (pidfd, r1, r2):
            os.close(fd)
    if not status:  # timeout or overflow: it is still running
        os.kill(pid, _SIGKILL)
        status.append(os.waitpid(pid, 0)[1])
    _kill_descendants()
    return os.waitstatus_to_exitcode(status[0]), timed_out, truncated, out["stdout"], out["stderr"]


def _driver_main() -> None:
    import marshal  # built in; the request comes from the trusted caller
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    req = marshal.loads(b"".join(chunks))
    if os.getpid() != 1:  # without bwrap's pid namespace: become the subreaper of our descendants
        import ctypes
        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if req["preload"]:  # the sandbox uid may not be able to read the stdlib later (fallback as root)
        for name in _PRELOAD:
            __import__(name)
    reply, hit = bytearray(), None
    for stdin in req["stdins"]:
        if hit is None:
            rc, timed_out, truncated, out, err = _run_test(req["source"], stdin.encode("utf-8", "replace"),
                                                           req["limits"], req["uid"], req["landlock"])
            if (timed_out or truncated or rc != 0) and req["limits"]["stop_after_failure"]:
                hit = (rc, timed_out, truncated)
        else:  # not run: reported like the test that failed, with no output
            (rc, timed_out, truncated), out, err = hit, b"", b""
        reply += b"%d %d %d %d %d\n" % (rc, timed_out, truncated, len(out), len(err)) + out + err
    view = memoryview(reply)
    while view:
        view = view[os.write(1, view):]


if __name__ == "__main__" and sys.argv[1:] == ["--driver"]:
    _driver_main()
    sys.exit(0)  # the sandboxed interpreter never imports the caller's half below

# ============================================================================= the caller (in the trainer)

import dataclasses  # noqa: E402  (after the driver on purpose, see above)
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402

SANDBOX_UIDS = range(1 << 30, (1 << 30) + (1 << 24))  # as root, each launch runs as a fresh uid from here
_DRIVER = os.path.abspath(__file__)
_DRIVER_IN_SANDBOX = "/opt/sandbox/sandbox.py"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 2.0    # wall clock per test, seconds; the program is killed after it
    cpu_s: float = 0.1        # CPU time per test, seconds, summed over all of the program's processes: over
                              # it the program is killed as at timeout_s (each process also gets this, rounded
                              # up, as RLIMIT_CPU). Below timeout_s, so a busy loop or a fork bomb stops early
    memory_mb: int = 256      # RLIMIT_AS per process, MiB of address space
    file_size_mb: int = 1     # RLIMIT_FSIZE, MiB, the largest file a process may write
    tmp_mb: int = 16          # size of the sandbox's private /tmp (the working directory), MiB (bwrap only)
    nproc: int = 16           # RLIMIT_NPROC: processes + threads of the sandbox uid
    nofile: int = 64          # RLIMIT_NOFILE: open file descriptors per process
    stdout_kb: int = 64       # stdout kept per test, KiB; a program writing more is killed, the test fails
    stderr_kb: int = 4        # stderr kept per test, KiB; the rest is read and dropped
    stop_after_failure: bool = False  # once a test times out, overflows stdout, crashes or exits non-zero, the
                                      # program's later tests are not run (reported like that one, no output):
                                      # a looping program costs one timeout, as at a judge (code_rewards on)
    startup_s: float = 10.0   # wall clock allowed for starting the sandbox itself, seconds


@dataclass
class RunResult:
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None   # exit status; negative: killed by that signal; None: never ran
    timed_out: bool = False         # killed at Limits.timeout_s (wall clock) or Limits.cpu_s (CPU time)
    output_truncated: bool = False  # killed for writing more than Limits.stdout_kb
    error: str = ""                 # the sandbox itself failed (not the program's fault)
    violation: str = ""             # fallback: what the program left behind outside its working directory
                                    # (removed afterwards), or a working directory that could not be deleted

    @property
    def ok(self) -> bool:
        """Exited normally with status 0 within every limit, and left nothing behind."""
        return self.returncode == 0 and not (self.timed_out or self.output_truncated or self.error or self.violation)


def _python() -> str:
    return os.path.realpath(sys.executable)


def _seccomp_bpf() -> bytes | None:
    """A classic-BPF seccomp program (bwrap --seccomp) that refuses new user namespaces: unshare and
    setns fail with EPERM, clone with CLONE_NEWUSER too, clone3 with ENOSYS (glibc then uses clone).
    Otherwise an unprivileged program could enter a user namespace, become root in it and mount an
    unbounded tmpfs. Foreign syscall ABIs (i386, x32) are refused. None on other architectures."""
    import platform
    import struct
    arch = {"x86_64": (0xC000003E, 56, 272, 308), "aarch64": (0xC00000B7, 220, 97, 268)}.get(platform.machine())
    if arch is None:
        return None
    audit_arch, nr_clone, nr_unshare, nr_setns = arch
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06          # BPF_LD|W|ABS, BPF_JMP|..|K, BPF_RET|K
    ALLOW, KILL, EPERM, ENOSYS = 0x7FFF0000, 0x80000000, 0x50001, 0x50026  # SECCOMP_RET_*, ERRNO|errno
    prog = [(LD, 0, 0, 4),                    # 0  A = seccomp_data.arch
            (JEQ, 1, 0, audit_arch),          # 1  native ABI -> 3
            (RET, 0, 0, KILL),                # 2
            (LD, 0, 0, 0),                    # 3  A = seccomp_data.nr
            (JGE, 7, 0, 0x40000000),          # 4  x32 ABI -> 12
            (JEQ, 6, 0, nr_unshare),          # 5  -> 12
            (JEQ, 5, 0, nr_setns),            # 6  -> 12
            (JEQ, 6, 0, 435),                 # 7  clone3 -> 14
            (JEQ, 1, 0, nr_clone),            # 8  -> 10
            (RET, 0, 0, ALLOW),               # 9
            (LD, 0, 0, 16),                   # 10 A = low 32 bits of args[0], clone's flags
            (JSET, 0, 1, 0x10000000),         # 11 CLONE_NEWUSER -> 12, else 13
            (RET, 0, 0, EPERM),               # 12
            (RET, 0, 0, ALLOW),               # 13
            (RET, 0, 0, ENOSYS)]              # 14
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def _bwrap_argv(bwrap: str, limits: Limits, as_root: bool, seccomp_fd: int | None) -> list:
    argv = [bwrap, "--die-with-parent", "--new-session", "--as-pid-1",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not as_root:
        argv += ["--unshare-user"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        argv += ["--ro-bind-try", path, path]
    prefix = os.path.realpath(sys.base_prefix)
    for path in sorted({prefix, os.path.dirname(_python())}):
        if not path.startswith("/usr/"):
            for parent in _ancestors(path):  # bwrap would copy their modes (/root: 0700); the uid needs 0755
                argv += ["--perms", "0755", "--dir", parent]
            argv += ["--ro-bind", path, path]
    argv += ["--ro-bind", _DRIVER, _DRIVER_IN_SANDBOX,
             "--proc", "/proc", "--dev", "/dev",
             "--size", str(limits.tmp_mb << 20), "--perms", "1777", "--tmpfs", "/tmp",
             "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/tmp",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "LANG", "C.UTF-8"]
    if as_root:  # bwrap run by root keeps every capability unless told otherwise
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + [_python(), "-I", "-S", _DRIVER_IN_SANDBOX, "--driver"]


_lock = threading.Lock()
_bwrap_state: dict = {}


def sandbox_processes() -> list[str]:
    """Every live process that belongs to a sandbox: a sandbox uid, a driver, or a bwrap, as
    "pid uid=... cmdline". None should outlive run_program (tests and soak_sandbox.py count them)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                status = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid = int(status.split("Uid:")[1].split()[0])
        if uid in SANDBOX_UIDS or "--driver" in cmdline or os.path.basename(cmdline.split(" ")[0]) == "bwrap":
            found.append(f"{name} uid={uid} {cmdline[:80]}")
    return found


def bwrap_path() -> str | None:
    """Path to a bubblewrap that works here (probed once with a real launch), else None."""
    with _lock:
        if "path" not in _bwrap_state:
            path = shutil.which("bwrap")
            if path is not None:
                probe = _bwrap_argv(path, Limits(), os.geteuid() == 0, None)[:-2] + ["-c", "pass"]
                try:
                    done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                    ok = done.returncode == 0
                except (OSError, subprocess.SubprocessError):
                    ok = False
                path = path if ok else None
            _bwrap_state["path"] = path
        return _bwrap_state["path"]


def landlock_abi() -> int:
    """The kernel's Landlock version (0: none), probed once with a real restriction of a throwaway
    interpreter (a container may allow the version query and refuse the rest). The fallback uses it
    to refuse programs every write outside their working directory."""
    with _lock:
        if "landlock" not in _bwrap_state:
            try:
                import ctypes
                LANDLOCK_CREATE_RULESET_VERSION = 1
                abi = max(0, ctypes.CDLL(None, use_errno=True).syscall(
                    ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(LANDLOCK_CREATE_RULESET_VERSION)))
                if abi:
                    here = os.path.dirname(_DRIVER)
                    probe = f"import sys; sys.path.insert(0, {here!r}); import sandbox; " \
                            f"sandbox._landlock_write_only_here({abi})"
                    done = subprocess.run([_python(), "-I", "-S", "-c", probe], cwd="/", stdin=subprocess.DEVNULL,
                                          capture_output=True, timeout=30)
                    abi = abi if done.returncode == 0 else 0
            except (OSError, AttributeError, subprocess.SubprocessError):
                abi = 0
            _bwrap_state["landlock"] = abi
        return _bwrap_state["landlock"]


def disable_bwrap() -> None:
    """From now on run every program in the fallback, as if bubblewrap were not installed
    (soak_sandbox.py --fallback)."""
    with _lock:
        _bwrap_state["path"] = None


def _warn_fallback_once() -> None:
    with _lock:
        if _bwrap_state.get("warned"):
            return
        _bwrap_state["warned"] = True
    root = os.geteuid() == 0
    prefix = os.path.realpath(sys.base_prefix)
    private = root and not all(os.stat(p).st_mode & 0o001 for p in _ancestors(prefix) + [prefix])
    if landlock_abi():
        writes = "Writes outside that directory are refused (Landlock)."
    elif root:
        writes = (f"Without Landlock (Linux >= 5.13) writes outside that directory are only found afterwards, "
                  f"in {', '.join(_SHARED_DIRS)} (removed; the program fails), not in other world-writable places.")
    else:
        writes = "Without Landlock (Linux >= 5.13) programs can write wherever you can."
    print("sandbox.py WARNING: bubblewrap (bwrap) is not available, so untrusted programs run with "
          "rlimits, a private temp directory and process reaping only. " + writes + " NOT protected: "
          "reading world-readable files, the network, new user namespaces" + ("" if root else
          ", and this user's other processes (a program "
          "can signal or inspect them, read /proc/<pid>/environ of the trainer, and escape reaping by "
          "killing its driver)") + "." + (f" Python lives in a directory other users cannot enter ({prefix}), "
          f"so programs (run as an unprivileged uid) can import only: {', '.join(_PRELOAD)}." if private else "")
          + " Install bubblewrap (apt-get install bubblewrap).", file=sys.stderr)


def _ancestors(path: str) -> list:
    """"/a/b/c" -> ["/a", "/a/b"]."""
    out, parent = [], os.path.dirname(path)
    while parent != "/":
        out.insert(0, parent)
        parent = os.path.dirname(parent)
    return out


def _kill_leftovers(session: int, uid) -> None:
    """Fallback only: SIGKILL processes still in the driver's session or running as the sandbox uid."""
    for _ in range(1000):
        victims = []
        for pid, _, sid, state in _proc_table():
            if state == b"Z":
                continue
            if sid == session or (uid is not None and _real_uid(pid) == uid):
                victims.append(pid)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, _SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)


def _real_uid(pid: int):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _parse_reply(blob: bytes, n: int) -> list:
    results, pos = [], 0
    for _ in range(n):
        nl = blob.index(b"\n", pos, pos + 100)
        rc, timed_out, truncated, n_out, n_err = (int(x) for x in blob[pos:nl].split())
        start, end = nl + 1, nl + 1 + n_out + n_err
        if n_out < 0 or n_err < 0 or end > len(blob):
            raise ValueError("truncated reply from the driver")
        results.append(RunResult(blob[start:start + n_out].decode("utf-8", "replace"),
                                 blob[start + n_out:end].decode("utf-8", "replace"),
                                 rc, bool(timed_out), bool(truncated)))
        pos = end
    return results


def run_program(source: str, stdins: list, limits: Limits | None = None, *, use_bwrap: bool | None = None) -> list:
    """Run `source` (Python) once per stdin string, all in one sandbox launch. Returns one RunResult
    per input, in order. Never raises for anything the program does or leaves behind; a failure of the
    sandbox itself comes back as RunResult.error. use_bwrap=None: bubblewrap when it works here, else
    the fallback."""
    import secrets
    import tempfile
    limits = limits or Limits()
    stdins = list(stdins)
    if not stdins:
        return []
    bwrap = bwrap_path() if use_bwrap in (None, True) else None
    if use_bwrap and bwrap is None:
        raise RuntimeError("use_bwrap=True, but bubblewrap does not work here")
    if bwrap is None:
        _warn_fallback_once()
    uid = SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))] if os.geteuid() == 0 else None
    workdir = None
    try:
        if bwrap is None:
            workdir = tempfile.mkdtemp(prefix="sandbox-")
            if uid is not None:
                os.chown(workdir, uid, uid)
        results = _launch(source, stdins, limits, bwrap, uid, workdir)
    except Exception as e:  # the sandbox failed; the caller gets failed tests, never an exception
        results = [RunResult(error=f"{type(e).__name__}: {e}") for _ in stdins]
    if bwrap is None:  # every process of the sandbox is dead by now; bubblewrap's /tmp died with it
        violation = _remove_files(workdir, uid)
        if violation:
            results = [dataclasses.replace(r, violation=violation) for r in results]
    return results


def _launch(source: str, stdins: list, limits: Limits, bwrap: str | None, uid, workdir: str | None) -> list:
    """run_program's steps 1-4 (module docstring): start the driver, send it the request, read its
    results, kill whatever is left of the sandbox. Raises if the sandbox itself fails."""
    import marshal
    request = marshal.dumps({"source": source, "stdins": stdins, "limits": dataclasses.asdict(limits), "uid": uid,
                             "preload": bwrap is None and uid is not None,
                             "landlock": landlock_abi() if bwrap is None else 0})
    fds, proc = [], None
    try:
        if bwrap is not None:
            bpf = _seccomp_bpf()
            seccomp_r = None
            if bpf is not None:
                seccomp_r, seccomp_w = os.pipe()
                fds.append(seccomp_r)
                os.write(seccomp_w, bpf)  # ~120 bytes: fits the pipe buffer
                os.close(seccomp_w)
            argv, cwd, pass_fds = _bwrap_argv(bwrap, limits, uid is not None, seccomp_r), "/", fds[:]
            env = {"PATH": "/usr/bin:/bin"}  # bwrap's own; the sandbox starts from --clearenv
        else:
            argv, cwd, pass_fds = [_python(), "-I", "-S", _DRIVER, "--driver"], workdir, ()
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        r0, w0 = os.pipe()
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        fds += [r0, w0, w1, w2, r1, r2]
        proc = subprocess.Popen(argv, stdin=r0, stdout=w1, stderr=w2, env=env, cwd=cwd, pass_fds=pass_fds,
                                start_new_session=True, close_fds=True)
        for fd in [r0, w1, w2] + list(pass_fds):
            os.close(fd)
            fds.remove(fd)
        n = len(stdins)
        deadline = time.monotonic() + limits.startup_s + n * (limits.timeout_s + 0.5)
        cap = n * ((limits.stdout_kb + limits.stderr_kb) * 1024 + 100) + 4096
        fds.remove(w0)  # _pump closes it
        out, timed_out, truncated = _pump(w0, request, {"stdout": (r1, cap), "stderr": (r2, 8192)}, deadline)
        if timed_out or truncated:
            raise RuntimeError("the sandbox driver " + ("timed out" if timed_out else "wrote too much"))
        proc.wait(timeout=limits.startup_s)
        if proc.returncode != 0:
            raise RuntimeError(f"sandbox exited with {proc.returncode}: "
                               f"{out['stderr'][-500:].decode('utf-8', 'replace')}")
        return _parse_reply(out["stdout"], n)
    finally:
        for fd in fds:
            os.close(fd)
        if proc is not None:
            try:
                os.killpg(proc.pid, _SIGKILL)  # before wait(): the pid cannot have been reused yet
            except OSError:
                pass
            proc.wait()
            if bwrap is None:
                _kill_leftovers(proc.pid, uid)


# World-writable on most systems: where a fresh uid can create files outside its working directory
_SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")


def _remove_files(workdir: str | None, uid) -> str:
    """Fallback, once every process of the sandbox is dead: delete the working directory and (as
    root) everything the sandbox uid owns in the shared writable directories. Returns what the program
    left behind ("" if nothing): writing outside its working directory fails a program, as does a
    working directory that cannot be deleted. Never raises."""
    import tempfile
    problems = []
    try:
        if uid is not None:
            for path in _owned_in_shared_dirs(uid, {*_SHARED_DIRS, tempfile.gettempdir()}, skip=workdir):
                _remove_tree(path)
                problems.append(f"wrote {path} outside its working directory")
        if workdir is not None and not _remove_tree(workdir):
            problems.append(f"left {workdir} undeletable")
    except Exception as e:  # defensive: cleanup must not take the caller down
        problems.append(f"cleanup failed: {type(e).__name__}: {e}")
    return "; ".join(problems)


def _owned_in_shared_dirs(uid: int, dirs, skip: str | None) -> list:
    """Paths owned by `uid` in `dirs` and in the world-writable directories below them, `skip` aside."""
    import stat
    found, seen, stack = [], set(), [d for d in dirs if os.path.isdir(d)]
    while stack:
        parent = os.path.realpath(stack.pop())
        if parent in seen:
            continue
        seen.add(parent)
        try:
            with os.scandir(parent) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_uid == uid and entry.path != skip:
                        found.append(entry.path)
                    elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002:
                        stack.append(entry.path)
        except OSError:
            continue
    return found


def _remove_tree(path: str) -> bool:
    """Delete `path` and everything below it, whatever a program did to it; True when it is gone.
    Rules: every name is opened relative to its parent directory's descriptor, one directory open at
    a time, with an explicit stack, so a tree nested far past PATH_MAX and Python's recursion limit
    is no problem; links are never followed; fifos and sockets are never opened, only unlinked;
    every directory is made rwx for its owner before it is read (a program may chmod 000 its own).
    Never raises."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def open_dir(name, parent_fd=None):
        try:
            fd = os.open(name, flags, dir_fd=parent_fd)
        except PermissionError:  # chmod 000 (O_NOFOLLOW has already refused a link: ELOOP)
            os.chmod(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, flags, dir_fd=parent_fd)
        try:
            os.chmod(fd, 0o700)  # write permission, to unlink what is inside
        except OSError:
            pass
        return fd

    def unlink_all_but_dirs(fd):  # -> names of the subdirectories
        subdirs = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                except OSError:
                    pass
        return subdirs

    fd = -1
    try:
        if not os.path.isdir(path) or os.path.islink(path):
            os.unlink(path)
            return True
        fd = open_dir(path)
        pending, stack = unlink_all_but_dirs(fd), []  # stack: (name in the parent, the parent's pending)
        while pending or stack:
            if pending:
                name = pending.pop()
                try:
                    child = open_dir(name, fd)
                except OSError:
                    continue
                stack.append((name, pending))
                os.close(fd)
                fd, pending = child, unlink_all_but_dirs(child)
            else:  # this directory is empty: go up, remove it
                name, pending = stack.pop()
                parent = os.open("..", flags, dir_fd=fd)
                os.close(fd)
                fd = parent
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError:
                    pass
        os.close(fd)
        fd = -1
        os.rmdir(path)
    except OSError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    return not os.path.lexists(path)


def run_programs(programs: list, stdins: list, limits: Limits | None = None, *,
                 max_workers: int | None = None, use_bwrap: bool | None = None) -> list:
    """run_program for many programs in parallel: threads, each waiting on its own sandbox process.
    stdins[i] is the list of test inputs of programs[i]. Returns [[RunResult per input] per program]."""
    from concurrent.futures import ThreadPoolExecutor
    if len(programs) != len(stdins):
        raise ValueError("one list of stdins per program")
    if not programs:
        return []
    workers = max_workers or min(len(programs), 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda args: run_program(*args, limits, use_bwrap=use_bwrap), zip(programs, stdins)))


def main() -> None:
    print(f"isolation: {'bubblewrap at ' + bwrap_path() if bwrap_path() else 'rlimits fallback (no bubblewrap)'}")
    t0 = time.perf_counter()
    print(run_program("print(int(input()) + 1)", ["41"])[0], f"{time.perf_counter() - t0:.3f}s")


if __name__ == "__main__":
    main()
