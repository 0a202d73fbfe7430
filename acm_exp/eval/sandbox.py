"""Run untrusted Python programs (model-written code) and report what happened.

Every program runs in its own process with its own temporary working directory, a scrubbed
environment, a wall-clock timeout and resource limits (CPU seconds, address space, processes,
file size, no core dumps), with stdout/stderr read incrementally and capped.

Isolation modes (``isolation=`` argument, else the ``ACM_EXP_SANDBOX`` environment variable):

- ``auto`` (default): ``bwrap``. Where bubblewrap is missing or cannot create namespaces, this
  fails closed: ConfigError with how to install it, before any program runs.
- ``bwrap``: bubblewrap with the namespaces unshared (no network, own PID namespace, own user
  namespace), a read-only view of only the system and Python directories, a small tmpfs /tmp and
  the working directory (a size-limited tmpfs) as the one writable place; programs run as uid 65534 without
  capabilities. A root harness runs bwrap privileged and drops to uid 65534 (setpriv) right
  before Python starts, because the kernel never applies RLIMIT_NPROC to real root. Fails with
  ConfigError if bwrap is unusable. (Debian/Ubuntu: ``apt-get install bubblewrap``.)
- ``none``: the explicit opt-out (eval.sandbox=none or ACM_EXP_SANDBOX=none): the resource
  limits and the scrubbed environment only. The program can still read and write whatever the
  harness user can, and reach the network; one warning per process says so, and results record
  the waiver. Never chosen implicitly.

Outcomes are data, never exceptions: a program that hangs, forks wildly, allocates without
bound, floods its output or exits early gets a ProgramResult with a failing status, every
process it started is killed, and the caller carries on.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from acm_exp.errors import ConfigError

logger = logging.getLogger(__name__)

ISOLATION_ENV_VAR = "ACM_EXP_SANDBOX"
ISOLATION_MODES = ("auto", "bwrap", "none")
RUN_MARKER_VAR = "ACM_EXP_SANDBOX_RUN"
SCRIPT_NAME = "main.py"

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_TIMEOUT = "timeout"
STATUS_OOM = "oom"
STATUS_OUTPUT_LIMIT = "output_limit"

_MIB = 1024 * 1024
_READ_CHUNK = 64 * 1024
_WRITE_CHUNK = 64 * 1024
# Unprivileged id ("nobody") programs run as under bwrap, so they hold no capability and cannot
# remount their read-only view. A root harness runs bwrap privileged (no user namespace) and
# drops to this id as the last step before Python starts: the kernel exempts real root from
# RLIMIT_NPROC even inside a user namespace, and the fork-bomb limit must hold.
_SANDBOX_UID = 65534
# Used to drop root inside bwrap where util-linux's setpriv is missing.
_DROP_ROOT_LAUNCHER = (
    f"import os, sys; os.setgroups([]); os.setresgid({_SANDBOX_UID}, {_SANDBOX_UID}, {_SANDBOX_UID}); "
    f"os.setresuid({_SANDBOX_UID}, {_SANDBOX_UID}, {_SANDBOX_UID}); os.execv(sys.argv[1], sys.argv[1:])"
)
# /etc entries the dynamic loader, libc and Python need; the rest of /etc stays hidden.
_ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf", "hosts")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits applied to every program (and, where noted, to its children)."""

    memory_mb: int = 2048  # RLIMIT_AS per process
    max_processes: int = 64  # RLIMIT_NPROC headroom: processes + threads the program may add
    max_file_mb: int = 64  # RLIMIT_FSIZE: the largest file the program may write
    max_output_bytes: int = _MIB  # cap on stdout and on stderr, each
    tmpfs_mb: int = 64  # size of the private /tmp and of the working directory under bwrap, each

    def __post_init__(self) -> None:
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_output_bytes", "tmpfs_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"sandbox limit {name}={value!r}: expected a positive integer")


@dataclass(frozen=True)
class ProgramResult:
    """What one program run produced.

    status: "ok" (exit 0 within all limits), "error" (non-zero exit or killed by a signal),
    "timeout" (wall clock or CPU limit), "oom" (MemoryError under the address-space limit),
    "output_limit" (stdout or stderr passed the cap; the program was killed).
    """

    status: str
    stdout: str
    stderr: str
    returncode: int | None
    wall_s: float
    isolation: str  # "bwrap" or "none"
    run_id: str  # also in the program's environment and its working directory's name

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


# ---------------------------------------------------------------------------------------------
# Isolation mode: probe bwrap once per process.

_probe_lock = threading.Lock()
_bwrap_probe: bool | None = None
_fallback_warned = False


WAIVED = "none"
INSTALL_HINT = "apt-get install bubblewrap"


def requested_isolation(isolation: str | None = None) -> str:
    """The mode asked for: the argument, else $ACM_EXP_SANDBOX, else "auto" (checked, lower case)."""
    requested = isolation if isolation is not None else os.environ.get(ISOLATION_ENV_VAR) or "auto"
    requested = str(requested).strip().lower()
    if requested not in ISOLATION_MODES:
        raise ConfigError(
            f"sandbox isolation {requested!r} (eval.sandbox, argument or ${ISOLATION_ENV_VAR}): "
            f"expected one of {', '.join(ISOLATION_MODES)}"
        )
    return requested


def resolve_isolation(isolation: str | None = None) -> str:
    """The isolation actually used: "bwrap", or "none" only when explicitly waived.

    Fails closed: without a working bubblewrap, "auto" and "bwrap" raise ConfigError.
    """
    requested = requested_isolation(isolation)
    if requested == WAIVED:
        _warn_waiver_once()
        return WAIVED
    if bwrap_available():
        return "bwrap"
    raise ConfigError(
        f"code sandbox: bubblewrap is missing or cannot create namespaces here (isolation={requested!r}), "
        f"and model-written code runs only isolated; install it ({INSTALL_HINT}) or opt out explicitly "
        f"with eval.sandbox=none (or {ISOLATION_ENV_VAR}=none)"
    )


def isolation_record(isolation: str | None = None) -> dict[str, object]:
    """What results and manifests record about the sandbox: the mode used and whether it was waived."""
    used = resolve_isolation(isolation)
    return {"isolation": used, "waived": used == WAIVED}


def bwrap_available() -> bool:
    """Whether bwrap exists and runs a trivial Python program; probed once per process."""
    global _bwrap_probe
    with _probe_lock:
        if _bwrap_probe is None:
            _bwrap_probe = _probe_bwrap()
        return _bwrap_probe


def _bwrap_executable() -> str | None:
    """bwrap as the harness's PATH finds it: the one probed is the one run (the program's own
    environment has a PATH of its own, which subprocess would otherwise search)."""
    return shutil.which("bwrap")


def _probe_bwrap() -> bool:
    if _bwrap_executable() is None:
        return False
    result = _run_isolated("print('sandbox-ok')", "", 30.0, SandboxLimits(), "bwrap")
    if result.status == STATUS_OK and result.stdout.strip() == "sandbox-ok":
        return True
    logger.info("bwrap probe failed (status %s): %s", result.status, result.stderr.strip()[-500:])
    return False


def _warn_waiver_once() -> None:
    global _fallback_warned
    with _probe_lock:
        if _fallback_warned:
            return
        _fallback_warned = True
    logger.warning(
        "Code sandbox without bubblewrap (explicit opt-out, isolation=none): programs run with "
        "resource limits and a scrubbed environment only; they can read and write the harness "
        "user's files and reach the network. Results record the waiver."
    )


@dataclass(frozen=True)
class _BwrapFeatures:
    tmpfs_size: bool
    tmpfs_perms: bool
    disable_userns: bool


_features_cache: _BwrapFeatures | None = None


def _bwrap_features() -> _BwrapFeatures:
    """Options that older bwrap releases lack (--size 0.7, --disable-userns 0.8)."""
    global _features_cache
    if _features_cache is None:
        try:
            help_text = subprocess.run(
                [_bwrap_executable() or "bwrap", "--help"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            help_text = ""
        _features_cache = _BwrapFeatures(
            tmpfs_size="--size" in help_text,
            tmpfs_perms="--perms" in help_text,
            disable_userns="--disable-userns" in help_text,
        )
    return _features_cache


# ---------------------------------------------------------------------------------------------
# Command line, environment and limits.


def _python_argv(script: Path) -> list[str]:
    # Equivalent of `python -I` (-E -s -P) except -E: the environment is built from scratch
    # anyway, and -E would drop PYTHONHASHSEED, which keeps set/dict-order outputs reproducible.
    flags = ["-s", "-B"] + (["-P"] if sys.version_info >= (3, 11) else [])
    return [sys.executable, *flags, str(script)]


def _python_dirs() -> list[str]:
    """Directories the interpreter needs (venv and base installation), outermost first."""
    candidates = {
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        sys.base_exec_prefix,
        str(Path(os.path.realpath(sys.executable)).parent.parent),
    }
    resolved = sorted({os.path.realpath(c) for c in candidates} | candidates, key=len)
    kept: list[str] = []
    for path in resolved:
        if not os.path.isdir(path) or path == "/":
            continue
        if any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept + ["/usr"]):
            continue
        kept.append(path)
    return kept


def _ancestors(paths: list[str]) -> list[str]:
    """The parent directories of ``paths`` below the root, outermost first, outside the system dirs."""
    found: dict[str, None] = {}
    for path in paths:
        parts = Path(path).parts[1:-1]
        for depth in range(1, len(parts) + 1):
            ancestor = "/" + "/".join(parts[:depth])
            if not any(ancestor == d or ancestor.startswith(d + "/") for d in _SYSTEM_DIRS):
                found[ancestor] = None
    return list(found)


def _drop_root_argv() -> list[str]:
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    uid = str(_SANDBOX_UID)
    if setpriv is not None and setpriv.startswith("/usr/"):  # must be visible inside the sandbox
        return [setpriv, "--reuid", uid, "--regid", uid, "--clear-groups", "--"]
    return [sys.executable, "-I", "-S", "-c", _DROP_ROOT_LAUNCHER]


def _bwrap_argv(workdir: Path, limits: SandboxLimits, as_root: bool) -> list[str]:
    """bwrap's command line up to (and including) the step that becomes unprivileged."""
    features = _bwrap_features()
    argv = [_bwrap_executable() or "bwrap"]
    if as_root:
        # Privileged bwrap: no user namespace, so the program's real uid is nobody's and
        # RLIMIT_NPROC applies to it (see _SANDBOX_UID).
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all", "--unshare-user", "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID)]
        if features.disable_userns:
            argv.append("--disable-userns")
    argv += ["--die-with-parent", "--new-session"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for name in _ETC_ENTRIES:
        path = os.path.join("/etc", name)
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if features.tmpfs_perms:
        argv += ["--perms", "1777"]
    if features.tmpfs_size:
        argv += ["--size", str(limits.tmpfs_mb * _MIB)]
    argv += ["--tmpfs", "/tmp"]
    python_dirs = _python_dirs()
    if features.tmpfs_perms:
        # bwrap makes the missing parents of a bind target (/work of /work/main/.venv, /root of
        # /root/.pyenv) with mode 0700, which the unprivileged program cannot cross: the
        # interpreter would then miss its own venv and its standard library.
        for ancestor in _ancestors(python_dirs):
            argv += ["--perms", "0755", "--dir", ancestor]
    for path in python_dirs:
        argv += ["--ro-bind", path, path]
    if features.tmpfs_size:
        # The working directory is a tmpfs of its own, so what a program writes there is bounded
        # in total (RLIMIT_FSIZE bounds each file only) and never reaches the host's disk; the
        # script is the one host file shown in it, read-only.
        if features.tmpfs_perms:
            argv += ["--perms", "1777"]
        script = str(workdir / SCRIPT_NAME)
        argv += ["--size", str(limits.tmpfs_mb * _MIB), "--tmpfs", str(workdir), "--ro-bind", script, script]
    else:
        argv += ["--bind", str(workdir), str(workdir)]
    argv += ["--chdir", str(workdir), "--remount-ro", "/", "--"]
    if as_root:
        argv += _drop_root_argv()
    return argv


def _program_env(workdir: Path, run_id: str) -> dict[str, str]:
    """A fresh environment: nothing is inherited, so no token or key can leak in."""
    python_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Numeric libraries start one thread per core at import; under RLIMIT_NPROC that fails.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        RUN_MARKER_VAR: run_id,
    }


def _tasks_owned_by(uid: int) -> int:
    """Processes plus threads of `uid`: what RLIMIT_NPROC counts against."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("Threads:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return total


def _nproc_limit(limits: SandboxLimits, run_uid: int) -> int:
    # RLIMIT_NPROC counts every task of the user, so the program gets its headroom on top of
    # what that user already runs (other sandboxes included). Root is exempt from RLIMIT_NPROC:
    # the fallback as root relies on the timeout and the kill sweep against fork bombs.
    if run_uid == 0:
        return limits.max_processes
    return _tasks_owned_by(run_uid) + limits.max_processes


def _capped(resource_id: int, value: int) -> tuple[int, int]:
    """(soft, hard) no higher than the current hard limit, which an unprivileged user cannot raise."""
    _, hard = resource.getrlimit(resource_id)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    return value, value


def _rlimits(limits: SandboxLimits, timeout_s: float, run_uid: int) -> list[tuple[int, tuple[int, int]]]:
    cpu_s = int(timeout_s) + 2
    _, cpu_hard = _capped(resource.RLIMIT_CPU, cpu_s + 1)
    cpu_soft = min(cpu_s, cpu_hard)  # SIGXCPU at the soft limit, SIGKILL at the hard one
    return [
        (resource.RLIMIT_CPU, (cpu_soft, cpu_hard)),
        (resource.RLIMIT_AS, _capped(resource.RLIMIT_AS, limits.memory_mb * _MIB)),
        (resource.RLIMIT_NPROC, _capped(resource.RLIMIT_NPROC, _nproc_limit(limits, run_uid))),
        (resource.RLIMIT_FSIZE, _capped(resource.RLIMIT_FSIZE, limits.max_file_mb * _MIB)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


def _limit_setter(rlimits: list[tuple[int, tuple[int, int]]]) -> Callable[[], None]:
    # Runs in the forked child before exec: only setrlimit calls, nothing that takes a lock.
    def apply() -> None:
        for resource_id, pair in rlimits:
            resource.setrlimit(resource_id, pair)

    return apply


# ---------------------------------------------------------------------------------------------
# Running one program.


@dataclass
class _Streams:
    stdout: bytearray
    stderr: bytearray
    limit_status: str | None  # timeout / output_limit when the harness stopped the program


def _pump(proc: subprocess.Popen, stdin_data: bytes, deadline: float, cap: int) -> _Streams:
    """Feed stdin and drain stdout/stderr until both close, the deadline or the output cap."""
    streams = _Streams(bytearray(), bytearray(), None)
    buffers = {proc.stdout.fileno(): streams.stdout, proc.stderr.fileno(): streams.stderr}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        selector.register(fd, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno() if proc.stdin is not None else None
    written = 0
    if stdin_fd is not None:
        os.set_blocking(stdin_fd, False)
        selector.register(stdin_fd, selectors.EVENT_WRITE)
    open_outputs = len(buffers)
    try:
        while open_outputs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                streams.limit_status = STATUS_TIMEOUT
                return streams
            for key, _ in selector.select(remaining):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        written += os.write(fd, stdin_data[written : written + _WRITE_CHUNK])
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed stdin or exited: stop feeding
                        written = len(stdin_data)
                    if written >= len(stdin_data):
                        selector.unregister(fd)
                        proc.stdin.close()
                        stdin_fd = None
                    continue
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(fd)
                    open_outputs -= 1
                    continue
                buffer = buffers[fd]
                buffer += chunk
                if len(buffer) > cap:
                    del buffer[cap:]
                    streams.limit_status = STATUS_OUTPUT_LIMIT
                    return streams
    finally:
        selector.close()
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
    return streams


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_marked_processes(run_id: str, max_passes: int = 200) -> int:
    """SIGKILL every process whose environment carries this run's marker; returns the count.

    Catches children that left the process group (setsid, double fork). Repeats until a pass
    finds none, so a fork bomb racing the sweep is still emptied.
    """
    marker = f"{RUN_MARKER_VAR}={run_id}".encode()
    own_pid, uid, killed_total = os.getpid(), os.getuid(), 0
    for _ in range(max_passes):
        killed = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == own_pid:
                continue
            try:
                if uid != 0 and os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/environ", "rb") as handle:
                    environ = handle.read()
                if marker in environ.split(b"\0"):
                    os.kill(int(name), signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                continue
        if not killed:
            break
        killed_total += killed
        time.sleep(0.005)  # let the kernel tear the killed tasks down before the next pass
    return killed_total


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func: Callable, target: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


def _signal_number(returncode: int, isolation: str) -> int | None:
    if returncode < 0:
        return -returncode
    if isolation == "bwrap" and returncode > 128:  # bwrap reports a child's signal as 128+n
        return returncode - 128
    return None


def _classify(returncode: int, stderr: str, limit_status: str | None, isolation: str) -> str:
    if limit_status is not None:
        return limit_status
    if returncode == 0:
        return STATUS_OK
    if _signal_number(returncode, isolation) == signal.SIGXCPU:
        return STATUS_TIMEOUT
    last_line = stderr.rstrip().rsplit("\n", 1)[-1]
    if last_line.startswith("MemoryError"):
        return STATUS_OOM
    return STATUS_ERROR


def _run_isolated(code: str, stdin: str, timeout_s: float, limits: SandboxLimits, isolation: str) -> ProgramResult:
    run_id = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix=f"acm_sbx_{run_id}_")).resolve()
    started = time.monotonic()
    proc: subprocess.Popen | None = None
    as_root = isolation == "bwrap" and os.geteuid() == 0
    run_uid = _SANDBOX_UID if as_root else os.getuid()
    try:
        script = workdir / SCRIPT_NAME
        script.write_text(code, encoding="utf-8")
        argv = _python_argv(script)
        if as_root:
            script.chmod(0o644)
            os.chown(workdir, _SANDBOX_UID, _SANDBOX_UID)
        if isolation == "bwrap":
            argv = _bwrap_argv(workdir, limits, as_root) + argv
        stdin_data = stdin.encode("utf-8")
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=_program_env(workdir, run_id),
            stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,  # its own process group, so one killpg reaches its children
            preexec_fn=_limit_setter(_rlimits(limits, timeout_s, run_uid)),
        )
        deadline = started + timeout_s
        streams = _pump(proc, stdin_data, deadline, limits.max_output_bytes)
        if streams.limit_status is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # closed its outputs but kept running
                streams.limit_status = STATUS_TIMEOUT
        _kill_group(proc)
        returncode = proc.wait()
        stdout = streams.stdout.decode("utf-8", errors="replace")
        stderr = streams.stderr.decode("utf-8", errors="replace")
        status = _classify(returncode, stderr, streams.limit_status, isolation)
        return ProgramResult(status, stdout, stderr, returncode, time.monotonic() - started, isolation, run_id)
    except OSError as error:  # the harness could not start the program at all
        return ProgramResult(
            STATUS_ERROR,
            "",
            f"sandbox failed to start the program: {error}",
            None,
            time.monotonic() - started,
            isolation,
            run_id,
        )
    finally:
        if proc is not None:
            _kill_group(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr, proc.stdin):
                if pipe is not None and not pipe.closed:
                    pipe.close()
        kill_marked_processes(run_id)
        _remove_tree(workdir)


def _validate_timeout(timeout_s: float) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ConfigError(f"sandbox timeout_s={timeout_s!r}: expected a positive number of seconds")
    return float(timeout_s)


def run_program(
    code: str,
    stdin: str = "",
    timeout_s: float = 6.0,
    limits: SandboxLimits | None = None,
    isolation: str | None = None,
) -> ProgramResult:
    """Run Python source `code` as a script with `stdin` fed (closed when empty).

    Never raises for anything the program does; bad arguments raise ConfigError, and so does
    a missing isolation that was not explicitly waived (see resolve_isolation).
    """
    timeout_s = _validate_timeout(timeout_s)
    mode = resolve_isolation(isolation)
    return _run_isolated(code, stdin, timeout_s, limits or SandboxLimits(), mode)


def run_programs(
    codes_and_stdins: Sequence[tuple[str, str]],
    timeout_s: float = 6.0,
    max_workers: int | None = None,
    limits: SandboxLimits | None = None,
    isolation: str | None = None,
    progress: bool = False,
) -> list[ProgramResult]:
    """Run many (code, stdin) pairs, `max_workers` at a time (default: CPU count); input order."""
    timeout_s = _validate_timeout(timeout_s)
    workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"sandbox max_workers={max_workers!r}: expected a positive integer")
    mode = resolve_isolation(isolation)
    limits = limits or SandboxLimits()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        futures = [pool.submit(_run_isolated, code, stdin, timeout_s, limits, mode) for code, stdin in codes_and_stdins]
        return [future.result() for future in tqdm(futures, desc="sandbox", unit="prog", disable=not progress)]
