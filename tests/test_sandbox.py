"""The code sandbox against hostile programs, with bubblewrap and with the forced fallback.

Every test runs in both isolation modes (bwrap is skipped where it is not usable). Assertions
that only bwrap can honour (filesystem, network, other processes' environments) are skipped in the
fallback, which is documented as weaker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from acm_exp.errors import ConfigError
from acm_exp.eval import sandbox
from acm_exp.eval.sandbox import SandboxLimits, run_program, run_programs
from acm_exp.eval.tasks.humaneval_pro import grade_humaneval_pro
from acm_exp.eval.tasks.livecodebench import grade_livecodebench

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "WANDB_API_KEY": "wandb-secret-value-123",
    "HF_TOKEN": "hf_secret_value_456",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value-789",
    "MY_SERVICE_TOKEN": "service-secret-value-000",
}


@pytest.fixture(params=["bwrap", "none"])
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "bwrap" and not sandbox.bwrap_available():
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    # Graders take the mode from the environment, the run_* functions from the argument.
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, request.param)
    return request.param


def _survivors(run_id: str) -> list[int]:
    """Live processes started by the run (their command line holds the run's workdir name)."""
    psutil = pytest.importorskip("psutil")
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            if run_id in " ".join(proc.info["cmdline"] or []):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _assert_harness_carries_on(isolation: str) -> None:
    after = run_program("print(input()[::-1])", stdin="olleh\n", timeout_s=10, isolation=isolation)
    assert after.status == "ok" and after.stdout == "hello\n"


def test_plain_program_reads_stdin_and_exits_ok(isolation: str) -> None:
    result = run_program(
        "import sys\ndata = sys.stdin.read()\nprint(len(data), data.split()[0])",
        stdin="abc def\n",
        timeout_s=10,
        isolation=isolation,
    )
    assert result.status == "ok"
    assert result.returncode == 0
    assert result.stdout == "8 abc\n"
    assert result.isolation == isolation


def test_program_runs_on_the_harness_interpreter_and_its_packages(isolation: str) -> None:
    # Under bwrap the interpreter's directories are bound at their paths; their parents (/work of
    # /work/main/.venv, /root of ~/.pyenv) must be crossable by the unprivileged program, else
    # Python falls back to another prefix and misses the venv (numpy, pandas, ...).
    code = "import json, sys, numpy\nprint(json.dumps([sys.prefix, sys.base_prefix, numpy.__file__]))"
    result = run_program(code, timeout_s=30, isolation=isolation)
    assert result.status == "ok", result.stderr
    prefix, base_prefix, numpy_file = json.loads(result.stdout)
    assert (prefix, base_prefix) == (sys.prefix, sys.base_prefix)
    assert numpy_file.startswith(sys.prefix)


def test_parents_of_the_bound_interpreter_directories_are_made_crossable() -> None:
    assert sandbox._ancestors(["/work/main/.venv", "/root/.pyenv/versions/3.11.7", "/usr/local/python"]) == [
        "/work",
        "/work/main",
        "/root",
        "/root/.pyenv",
        "/root/.pyenv/versions",
    ]


def test_stdin_is_closed_when_empty(isolation: str) -> None:
    result = run_program("input()", timeout_s=10, isolation=isolation)
    assert result.status == "error"
    assert "EOFError" in result.stderr


def test_large_stdin_is_fed_and_unread_stdin_does_not_block(isolation: str) -> None:
    big = "x" * (4 * 1024 * 1024)
    read = run_program("import sys\nprint(len(sys.stdin.read()))", stdin=big, timeout_s=20, isolation=isolation)
    assert read.status == "ok" and read.stdout.strip() == str(len(big))
    ignored = run_program("print('done')", stdin=big, timeout_s=20, isolation=isolation)
    assert ignored.status == "ok" and ignored.stdout == "done\n"


def test_infinite_loop_times_out(isolation: str) -> None:
    result = run_program("while True:\n    pass", timeout_s=1.0, isolation=isolation)
    assert result.status == "timeout"
    assert not result.ok
    assert _survivors(result.run_id) == []
    _assert_harness_carries_on(isolation)


def test_program_that_closes_its_outputs_and_hangs_times_out(isolation: str) -> None:
    code = "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)"
    result = run_program(code, timeout_s=1.0, isolation=isolation)
    assert result.status == "timeout"
    assert _survivors(result.run_id) == []


FORK_BOMB = """
import os, time
forked = 0
for i in range(300):
    try:
        pid = os.fork()
    except OSError as error:
        print("fork refused after", forked, type(error).__name__, flush=True)
        break
    if pid == 0:
        if i % 2 == 0:
            os.setsid()  # leave the process group: only the marker sweep can find these
        time.sleep(120)
        os._exit(0)
    forked += 1
print("forked", forked, flush=True)
time.sleep(120)
"""


def test_fork_bomb_is_contained_and_nothing_survives(isolation: str) -> None:
    result = run_program(FORK_BOMB, timeout_s=3.0, limits=SandboxLimits(max_processes=32), isolation=isolation)
    assert not result.ok
    assert result.status == "timeout"
    assert _survivors(result.run_id) == []
    if isolation == "bwrap":
        # RLIMIT_NPROC holds under bwrap, for root too (the program runs as nobody).
        assert "fork refused" in result.stdout
    _assert_harness_carries_on(isolation)


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(8 * 1024 ** 3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 ** 2))",
    ],
)
def test_memory_bomb_hits_the_address_space_limit(isolation: str, code: str) -> None:
    result = run_program(code, timeout_s=20, limits=SandboxLimits(memory_mb=512), isolation=isolation)
    assert result.status == "oom"
    assert "MemoryError" in result.stderr
    _assert_harness_carries_on(isolation)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_huge_output_is_capped_and_the_program_killed(isolation: str, stream: str) -> None:
    cap = 64 * 1024
    code = f"import sys\nwhile True:\n    sys.{stream}.write('x' * 4096)"
    result = run_program(code, timeout_s=20, limits=SandboxLimits(max_output_bytes=cap), isolation=isolation)
    assert result.status == "output_limit"
    assert len(getattr(result, stream)) == cap
    assert _survivors(result.run_id) == []


def test_environment_carries_no_secrets(isolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    code = f"""
import json, os
seen = dict(os.environ)
try:
    parent = open('/proc/{os.getpid()}/environ', 'rb').read().decode(errors='replace')
except OSError as error:
    parent = 'unreadable: ' + type(error).__name__
print(json.dumps({{'env': seen, 'parent': parent}}))
"""
    result = run_program(code, timeout_s=10, isolation=isolation)
    assert result.status == "ok"
    report = json.loads(result.stdout)
    for name, value in SECRETS.items():
        assert name not in report["env"]
        assert value not in json.dumps(report["env"])
    assert result.run_id in report["env"]["HOME"]  # HOME is the program's own workdir
    if isolation == "bwrap":  # own PID namespace: the harness process is not even visible
        assert report["parent"].startswith("unreadable")
        assert not any(value in report["parent"] for value in SECRETS.values())


def test_files_outside_the_workdir_are_untouchable(isolation: str, tmp_path: Path) -> None:
    if isolation == "none":
        pytest.skip("the fallback has no filesystem isolation (documented)")
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("precious")
    repo_target = REPO_ROOT / f"pwned_{uuid.uuid4().hex}.txt"
    code = f"""
import json, os, shutil
attempts = {{}}
for name, action in [
    ("overwrite", lambda: open({str(sentinel)!r}, "w").write("gone")),
    ("delete", lambda: os.remove({str(sentinel)!r})),
    ("rmtree", lambda: shutil.rmtree({str(tmp_path)!r})),
    ("chmod", lambda: os.chmod({str(sentinel)!r}, 0)),
    ("repo", lambda: open({str(repo_target)!r}, "w").write("pwned")),
    ("usr", lambda: open("/usr/pwned.txt", "w").write("pwned")),
]:
    try:
        action()
        attempts[name] = "done"
    except OSError as error:
        attempts[name] = type(error).__name__
open("inside.txt", "w").write("allowed")
print(json.dumps({{"attempts": attempts, "cwd": os.getcwd()}}))
"""
    result = run_program(code, timeout_s=10, isolation=isolation)
    assert result.status == "ok", result.stderr
    assert sentinel.read_text() == "precious"
    assert oct(sentinel.stat().st_mode & 0o777) != oct(0)
    assert not repo_target.exists()
    assert not Path("/usr/pwned.txt").exists()
    report = json.loads(result.stdout)
    assert "done" not in report["attempts"].values(), report["attempts"]
    assert result.run_id in report["cwd"]
    assert not Path(report["cwd"]).exists()  # the working directory is removed afterwards


def test_workdir_is_private_and_removed(isolation: str) -> None:
    result = run_program(
        "import os\nopen('out.txt', 'w').write('x')\nprint(os.getcwd())", timeout_s=10, isolation=isolation
    )
    assert result.status == "ok"
    workdir = Path(result.stdout.strip())
    assert result.run_id in workdir.name
    assert not workdir.exists()


def test_network_is_unreachable_under_bwrap(isolation: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = f"""
import socket
import sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    print("connected")
except OSError as error:
    print("blocked", type(error).__name__)
"""
        result = run_program(code, timeout_s=10, isolation=isolation)
    finally:
        server.close()
    assert result.status == "ok"
    if isolation == "none":
        pytest.skip("the fallback has no network isolation (documented)")
    assert result.stdout.startswith("blocked")


def test_early_exit_without_the_expected_output_is_a_failure(isolation: str) -> None:
    humaneval_like = {
        "id": 0,
        "raw_problem": 'def add(a, b):\n    """Add."""\n',
        "new_problem": "def add3(a, b, c):\n",
        "test_code": "assert add3(1, 2, 3) == 6\n",
    }
    for exit_call in ("os._exit(0)", "sys.exit(0)"):
        response = f"```python\nimport os, sys\n{exit_call}\ndef add(a, b):\n    return a + b\n```"
        grade = grade_humaneval_pro(humaneval_like, response, timeout_s=10)
        assert not grade.passed, exit_call
    stdin_problem = {
        "question_id": "q1",
        "metadata": "{}",
        "starter_code": "",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": "[]",
    }
    early_exit = "```python\nimport os\nos._exit(0)\n```"
    official = grade_livecodebench(stdin_problem, early_exit, timeout_s=10)
    assert not official.passed and "no result" in official.detail
    lenient = grade_livecodebench(stdin_problem, early_exit, timeout_s=10, mode="lenient")
    assert not lenient.passed and lenient.status == "wrong_answer"


def test_run_programs_keeps_input_order_and_isolates_failures(isolation: str) -> None:
    jobs = [("print(input())", "first\n"), ("while True: pass", ""), ("raise SystemExit(3)", ""), ("print('last')", "")]
    results = run_programs(jobs, timeout_s=1.5, max_workers=2, isolation=isolation)
    assert [r.status for r in results] == ["ok", "timeout", "error", "ok"]
    assert results[0].stdout == "first\n" and results[3].stdout == "last\n"
    assert results[2].returncode == 3
    assert len({r.run_id for r in results}) == len(results)


def test_environment_variable_forces_the_fallback_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "none")
    monkeypatch.setattr(sandbox, "_fallback_warned", False)
    with caplog.at_level(logging.WARNING, logger="acm_exp.eval.sandbox"):
        first = run_program("print(1)", timeout_s=10)
        second = run_program("print(2)", timeout_s=10)
    assert first.isolation == second.isolation == "none"
    warnings = [r for r in caplog.records if "without bubblewrap" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"isolation": "docker"}, "isolation"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        run_program("print(1)", **kwargs)


def test_bad_limits_and_workers_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="memory_mb"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ConfigError, match="max_workers"):
        run_programs([("print(1)", "")], max_workers=0, isolation="none")


def test_without_usable_bwrap_auto_and_bwrap_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counterexample to the old behaviour: "auto" fell back to running unisolated.
    monkeypatch.setattr(sandbox, "bwrap_available", lambda: False)
    for requested in ("auto", "bwrap", None):
        with pytest.raises(ConfigError, match="apt-get install bubblewrap") as raised:
            sandbox.resolve_isolation(requested)
        assert "\n" not in str(raised.value)
        assert "eval.sandbox=none" in str(raised.value) and "ACM_EXP_SANDBOX=none" in str(raised.value)
    assert sandbox.resolve_isolation("none") == "none"


# ---------------------------------------------------------------------------------------------
# Fail closed: no working bubblewrap and no explicit opt-out -> nothing runs


@pytest.fixture(params=["broken", "missing"])
def unusable_bwrap(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """PATH holds a `bwrap` that exits 1 (broken) or none at all (missing); the probe is redone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if request.param == "broken":
        fake = bin_dir / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.path.dirname(sys.executable)}")
    monkeypatch.delenv(sandbox.ISOLATION_ENV_VAR, raising=False)
    monkeypatch.setattr(sandbox, "_bwrap_probe", None)
    monkeypatch.setattr(sandbox, "_features_cache", None)
    return request.param


def _assert_install_line(error: ConfigError) -> None:
    message = str(error)
    assert "\n" not in message
    assert "apt-get install bubblewrap" in message
    assert "eval.sandbox=none" in message and f"{sandbox.ISOLATION_ENV_VAR}=none" in message


def test_auto_refuses_without_usable_bwrap(unusable_bwrap: str) -> None:
    assert not sandbox.bwrap_available()
    for requested in (None, "auto", "bwrap"):
        with pytest.raises(ConfigError) as raised:
            sandbox.resolve_isolation(requested)
        _assert_install_line(raised.value)


def test_run_functions_refuse_unless_waived(unusable_bwrap: str, tmp_path: Path) -> None:
    target = tmp_path / "written_by_program.txt"
    code = f"open({str(target)!r}, 'w').write('ran')"
    with pytest.raises(ConfigError) as raised:
        run_program(code, timeout_s=10)
    _assert_install_line(raised.value)
    with pytest.raises(ConfigError):
        run_programs([(code, "")], timeout_s=10, max_workers=1)
    with pytest.raises(ConfigError):
        grade_humaneval_pro(
            {"id": 0, "raw_problem": "def f():\n", "new_problem": "", "test_code": ""},
            "    return 1\n",
            response_prefix="```python\ndef f():\n",
        )
    assert not target.exists()  # refused before anything ran


def test_explicit_opt_out_runs_and_is_recorded(unusable_bwrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    by_argument = run_program("print('ran')", timeout_s=10, isolation="none")
    assert by_argument.ok and by_argument.stdout == "ran\n" and by_argument.isolation == "none"
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "none")
    by_environment = run_program("print('ran')", timeout_s=10)
    assert by_environment.ok and by_environment.isolation == "none"
    assert sandbox.isolation_record() == {"isolation": "none", "waived": True}


def test_code_benchmark_without_isolation_fails_at_validation(
    unusable_bwrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app_config import compose_config

    from acm_exp import stages

    code_eval = (
        "model_pair=toy",
        "eval=code",
        "model_pair.base_prompt=cot",
        "model_pair.finetuned_prompt=cot",
        "model_pair.merged_prompt=cot",
    )
    loaded = []
    monkeypatch.setattr(stages, "resolve_model", lambda *args, **kwargs: loaded.append(args))
    with pytest.raises(ConfigError) as raised:
        stages.validate(compose_config(*code_eval))
    _assert_install_line(raised.value)
    stages.validate(compose_config(*code_eval, "eval.sandbox=none"))
    # Math-only evaluation never runs code: no isolation needed.
    stages.validate(compose_config("model_pair=toy", "eval=toy"))
    assert loaded == []


def test_cli_stops_before_any_model_loads(unusable_bwrap: str, tmp_path: Path) -> None:
    import subprocess

    cache = tmp_path / "cache"
    env = {key: value for key, value in os.environ.items() if key != sandbox.ISOLATION_ENV_VAR}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "model_pair=toy",
            "eval=code",
            "model_pair.base_prompt=cot",
            "model_pair.finetuned_prompt=cot",
            "model_pair.merged_prompt=cot",
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger.wandb.mode=disabled",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("acm_exp: error:") and "apt-get install bubblewrap" in lines[0]
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))  # no toy model was built


def test_every_sweep_point_is_checked_before_any_job(unusable_bwrap: str, tmp_path: Path) -> None:
    import subprocess

    env = {key: value for key, value in os.environ.items() if key != sandbox.ISOLATION_ENV_VAR}
    prompts = ["model_pair.base_prompt=cot", "model_pair.finetuned_prompt=cot", "model_pair.merged_prompt=cot"]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "-m",
            "model_pair=toy",
            "eval=toy,code",
            *prompts,
            "logger=disabled",
            f"cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert len(errors) == 1 and "sweep point [" in errors[0] and "eval=code" in errors[0]
    assert "apt-get install bubblewrap" in errors[0]
    assert not (tmp_path / "sweep").exists()  # not even the first (math-only) point ran


# ---------------------------------------------------------------------------------------------
# Hardening: more hostile programs, each contained, nothing left running


def _marked_survivors(run_id: str, tag: str | None = None) -> list[int]:
    """Live processes carrying the run's environment marker, or `tag` in their command line."""
    psutil = pytest.importorskip("psutil")
    marker = f"{sandbox.RUN_MARKER_VAR}={run_id}".encode()
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            with open(f"/proc/{proc.pid}/environ", "rb") as handle:
                marked = marker in handle.read().split(b"\0")
            tagged = tag is not None and tag in " ".join(proc.info["cmdline"] or [])
            if marked or tagged:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
    return found


def test_large_file_in_the_workdir_is_bounded_and_removed(isolation: str) -> None:
    limits = SandboxLimits(max_file_mb=16, tmpfs_mb=24)
    code = """
import json, os
written = {}
for name in ("big1.bin", "big2.bin"):
    done = 0
    try:
        with open(name, "wb") as handle:
            for _ in range(20):
                handle.write(b"x" * 1024 * 1024)
                handle.flush()
                done += 1
    except OSError as error:
        written[name + "_error"] = error.strerror
    written[name] = done
print(json.dumps({"written": written, "cwd": os.getcwd()}))
"""
    result = run_program(code, timeout_s=30, limits=limits, isolation=isolation)
    assert result.status == "ok", result.stderr
    report = json.loads(result.stdout)
    written = report["written"]
    assert written["big1.bin"] <= 16 and "big1.bin_error" in written  # RLIMIT_FSIZE: 16 MiB per file
    if isolation == "bwrap":  # the workdir is a 24 MiB tmpfs: the second file runs out of room
        assert written["big1.bin"] + written["big2.bin"] <= 24
    assert not Path(report["cwd"]).exists()
    assert _marked_survivors(result.run_id) == []


def test_proc_environ_holds_no_harness_secret(isolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    code = """
import json
seen = {}
for path in ("/proc/self/environ", "/proc/1/environ"):
    try:
        seen[path] = open(path, "rb").read().decode(errors="replace")
    except OSError as error:
        seen[path] = "unreadable: " + type(error).__name__
print(json.dumps(seen))
"""
    result = run_program(code, timeout_s=10, isolation=isolation)
    assert result.status == "ok", result.stderr
    seen = json.loads(result.stdout)
    own = seen["/proc/self/environ"]
    assert f"{sandbox.RUN_MARKER_VAR}={result.run_id}" in own  # it really read its own environment
    for text in seen.values():
        assert not any(value in text for value in SECRETS.values())
        assert not any(f"{name}=" in text for name in SECRETS)
    if isolation == "bwrap":  # pid 1 is the sandbox's own init, started with the scrubbed environment
        assert "/proc/1/environ" in seen


@pytest.mark.parametrize("escape", [False, True], ids=["child", "setsid-child-without-env"])
def test_sleeping_parent_holding_a_child_leaves_nothing_running(isolation: str, escape: bool) -> None:
    if escape and isolation == "none":
        pytest.skip("the fallback finds children by process group and environment marker only (documented)")
    tag = f"acm_exp_held_child_{uuid.uuid4().hex}"
    # sh waits on its sleep, so the tag (sh's $0) stays visible while the child lives.
    spawn = (
        "subprocess.Popen(['/bin/sh', '-c', 'sleep 120; true', TAG], "
        + ("env={}, start_new_session=True, " if escape else "")
        + "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
    )
    code = f"import subprocess, time\nTAG = {tag!r}\nchild = {spawn}\nprint(child.pid, flush=True)\ntime.sleep(120)\n"
    result = run_program(code, timeout_s=2.0, isolation=isolation)
    assert result.status == "timeout"
    assert result.stdout.strip().isdigit()  # the child was started
    assert _marked_survivors(result.run_id, tag) == []


def test_program_that_closes_stdout_and_runs_on_times_out(isolation: str) -> None:
    code = (
        "import os, sys, time\nos.close(1)\nsys.stderr.write('still running\\n')\nsys.stderr.flush()\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    result = run_program(code, timeout_s=1.5, isolation=isolation)
    assert result.status == "timeout"
    assert "still running" in result.stderr
    assert _marked_survivors(result.run_id) == []


@pytest.mark.parametrize("sandbox_setting", ["none", "auto"])
def test_results_rows_record_isolation_grading_mode_and_window(
    sandbox_setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app_config import compose_config

    from acm_exp.results import build_rows

    if sandbox_setting == "auto" and not sandbox.bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    monkeypatch.delenv(sandbox.ISOLATION_ENV_VAR, raising=False)
    cfg = compose_config("model_pair=toy", "eval=paper", f"eval.sandbox={sandbox_setting}")
    rows = [
        {
            "model": "merged",
            "role": "merged",
            "benchmark": name,
            "seed": 0,
            "accuracy": 50.0,
            "mean_tokens": 10.0,
            "n": 2,
        }
        for name in ("humaneval_pro", "livecodebench", "gsm8k")
    ]
    records = {r["benchmark"]: r for r in build_rows(cfg, tmp_path, rows, commit="test")}
    expected_isolation = "none" if sandbox_setting == "none" else "bwrap"
    for name in ("humaneval_pro", "livecodebench"):
        assert records[name]["sandbox"] == expected_isolation
        assert records[name]["code_grading"] == "official"
    assert (
        records["livecodebench"]["lcb_release"],
        records["livecodebench"]["lcb_start_date"],
        records["livecodebench"]["lcb_end_date"],
    ) == ("release_v5", "2024-08-01", "2025-01-31")
    assert records["humaneval_pro"]["lcb_release"] is None
    assert records["gsm8k"]["sandbox"] is None and records["gsm8k"]["code_grading"] is None
