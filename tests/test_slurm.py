"""Sweeps on a real Slurm cluster: the submitit launcher (conf/hydra/launcher/slurm.yaml) and the
plain job array (slurm/array.sbatch), with the toy pair on CPU.

The cluster tests start a single-node cluster with accounting (tests/slurm_cluster.py) once per
session and skip when it cannot start (not root, no apt-get, install failure, daemons not ready).
ACM_EXP_REQUIRE_SLURM=1 turns that skip into a failure (CI that must run them).

Besides the sweeps themselves: the summary printed at the end of a sweep (acm_exp.sweep), the
preemption of a task (SIGUSR2: submitit requeues it, the requeued task resumes from the complete
merge) and a `scontrol requeue` of an sbatch array task (SIGTERM: one `acm_exp:` line, nothing
half-written left, the requeued task completes), and the one-line errors of a SLURM sweep that
cannot be submitted (no extra, no Slurm commands, a request the partition cannot satisfy).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import ClusterUnavailable, SlurmCluster, ensure_packages, start_cluster

from acm_exp.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SUBMIT_SCRIPT = REPO / "slurm" / "submit_array.sh"
EXAMPLE_SWEEP = REPO / "slurm" / "sweep.txt"

SCALES = (0.5, 0.7, 0.9)
# One sweep point = one toy run: Task Arithmetic at one scale, 5 toy problems, three models evaluated.
TOY_RUN = ("merge=task_arithmetic", "eval=toy", "eval.limit=5", "logger.wandb.mode=disabled")
TOY_MODELS = ("base", "finetuned", "merged")
# Small tasks with no GPU, so that the three tasks of a sweep run together on the test node.
LAUNCHER = (
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=15",
)
SBATCH_OPTIONS = ("--gpus-per-node=0", "--cpus-per-task=1", "--mem=1G", "--time=15")
SWEEP_TIMEOUT_S = 360
KILL_WINDOW_TIMEOUT_S = 180
# A requeued job waits (BeginTime) before it starts again: about two minutes.
REQUEUE_DELAY_S = 240


# ---------------------------------------------------------------------------------------------
# Configuration (no cluster needed)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def sweep_lines(path: Path) -> list[str]:
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def require_submitit_launcher() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install -e .[slurm]")


def test_slurm_launcher_composes_on_the_submitit_schema():
    require_submitit_launcher()
    from hydra.errors import ConfigCompositionException

    cfg = compose(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.timeout_min=600",
            "merge.t=0.5",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 2, 600)
    assert launcher.max_num_timeout > 0 and launcher.array_parallelism > 0
    assert launcher.additional_parameters.requeue is True
    assert all(isinstance(line, str) for line in launcher.setup)
    # The submitit_slurm schema is typed: an unknown key or a wrong type fails at compose time.
    with pytest.raises(ConfigCompositionException):
        compose(["hydra/launcher=slurm", "hydra.launcher.gpus=2"])
    with pytest.raises(ConfigCompositionException):
        compose(["hydra/launcher=slurm", "hydra.launcher.timeout_min=soon"])


def test_presets_are_sized_per_experiment_and_for_cpu_partitions():
    require_submitit_launcher()
    gpu = compose(["hydra/launcher=slurm"]).hydra.launcher  # the toy pair
    assert (gpu.gpus_per_node, gpu.cpus_per_task, gpu.mem_gb, gpu.timeout_min) == (1, 2, 8, 60)
    at_14b = compose(["hydra/launcher=slurm", "+experiment=l2s_14b"]).hydra.launcher
    assert (at_14b.gpus_per_node, at_14b.cpus_per_task, at_14b.mem_gb, at_14b.timeout_min) == (2, 16, 128, 480)
    at_32b = compose(["hydra/launcher=slurm", "+experiment=l2s_32b"]).hydra.launcher
    assert at_32b.gpus_per_node == 4 and at_32b.timeout_min == 720
    assert compose(["hydra/launcher=slurm", "model_pair=qwen2.5-7b"]).hydra.launcher.timeout_min == 360
    cpu = compose(["hydra/launcher=slurm_cpu", "model_pair=qwen2.5-7b"]).hydra.launcher
    assert (cpu.gpus_per_node, cpu.cpus_per_task, cpu.mem_gb) == (0, 2, 8)
    assert cpu._target_ == gpu._target_ and cpu.additional_parameters.requeue is True


def run_cli(*arguments: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "acm_exp", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**(env or os.environ), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
        timeout=300,
    )


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_without_the_extra_one_line_names_the_pip_command(tmp_path):
    # The launcher plugin made unimportable, as in an environment installed without [slurm].
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('hydra_plugins.hydra_submitit_launcher', 'submitit')):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(inject)}
    done = run_cli("-m", "hydra/launcher=slurm", "merge.t=0.5,0.7", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert error_lines(done) == [
        "acm_exp: error: hydra/launcher=slurm needs the SLURM extra (hydra-submitit-launcher), which is not "
        'installed; install it with pip install -e ".[slurm]" (or run the sweep with slurm/array.sbatch, which '
        "needs only sbatch)"
    ], done.stderr


def test_without_slurms_commands_one_line_names_the_missing_ones(tmp_path):
    require_submitit_launcher()
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_cli(
        "-m",
        "hydra/launcher=slurm_cpu",
        "merge.t=0.5,0.7",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env={**os.environ, "PATH": str(empty)},
    )
    assert done.returncode == 2
    lines = [line for line in error_lines(done) if line.startswith("acm_exp: error:")]
    assert len(lines) == 1 and "sbatch, srun, sacct are not on PATH" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was submitted


def test_example_sweep_file_points_compose():
    lines = sweep_lines(EXAMPLE_SWEEP)
    assert len(lines) >= 3
    for line in lines:
        cfg = compose(shlex.split(line))
        assert cfg.merge.method and cfg.model_pair.name


def test_cluster_start_is_refused_without_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ClusterUnavailable, match="root"):
        start_cluster(tmp_path / "cluster")
    assert not (tmp_path / "cluster").exists()


# ---------------------------------------------------------------------------------------------
# Cluster fixtures


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    required = os.environ.get("ACM_EXP_REQUIRE_SLURM") == "1"
    started = time.monotonic()
    try:
        install_s = ensure_packages() if os.geteuid() == 0 else 0.0
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"), cpus=4, install=False)
    except ClusterUnavailable as error:
        if required:
            pytest.fail(f"no Slurm cluster (ACM_EXP_REQUIRE_SLURM=1): {error}")
        pytest.skip(f"no Slurm cluster could be started here: {error}")
    print(
        f"\nslurm cluster: packages {install_s:.0f} s, daemons {time.monotonic() - started - install_s:.0f} s "
        f"({cluster.root})"
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def toy_cache(toy_pair, tmp_path_factory) -> Path:
    """The cache_dir holding the toy pair (built once by conftest's toy_pair), shared by every task."""
    cache = tmp_path_factory.getbasetemp() / "toy_cache"
    assert all(Path(path).is_relative_to(cache) for path in toy_pair.values())
    return cache


# ---------------------------------------------------------------------------------------------
# Helpers


def toy_overrides(results_dir: Path, cache: Path) -> list[str]:
    return [*TOY_RUN, f"logger.results_dir={results_dir}", f"cache_dir={cache}"]


def launcher_command(sweep_dir: Path, results_dir: Path, cache: Path) -> list[str]:
    scales = ",".join(str(scale) for scale in SCALES)
    return [
        sys.executable,
        "-m",
        "acm_exp",
        "-m",
        *LAUNCHER,
        f"merge.scale={scales}",
        *toy_overrides(results_dir, cache),
        f"hydra.sweep.dir={sweep_dir}",
    ]


def start_launcher(cluster: SlurmCluster, command: list[str], cwd: Path) -> subprocess.Popen:
    """The launcher running in the background (it waits for its array), stdout and stderr together."""
    return subprocess.Popen(
        command, env=cluster.env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def write_sweep_file(path: Path) -> Path:
    path.write_text("# toy sweep\n" + "".join(f"merge.scale={scale}\n" for scale in SCALES))
    return path


def submit_array(
    cluster: SlurmCluster,
    sweep_file: Path,
    sweep_dir: Path,
    results_dir: Path,
    cache: Path,
    log_dir: Path,
    *,
    defaults: bool = False,
) -> str:
    """Submit with slurm/submit_array.sh from ``log_dir``. ``defaults``: no ACM_EXP_PYTHON, a PATH whose
    python3 is not the virtualenv's, and the script's own log location (outputs/slurm/)."""
    env = {**cluster.env, "ACM_EXP_SWEEP_DIR": str(sweep_dir)}
    if defaults:
        env.pop("ACM_EXP_PYTHON", None)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not Path(p, "activate").exists())
    else:
        env["ACM_EXP_PYTHON"] = sys.executable
    done = subprocess.run(
        [
            str(SUBMIT_SCRIPT),
            str(sweep_file),
            *SBATCH_OPTIONS,
            *([] if defaults else [f"--output={log_dir}/%A_%a.out"]),
            "--",
            *toy_overrides(results_dir, cache),
        ],
        env=env,
        cwd=log_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"Submitted batch job (\d+)", done.stdout)
    assert match, done.stdout
    return match.group(1)


def array_states(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    """Array task id -> accounting state (sacct), e.g. {'0': 'COMPLETED', '1': 'CANCELLED'}."""
    done = cluster.command("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id, check=False)
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.partition("|")
        if "_" in job and not job.endswith("]"):
            states[job.split("_", 1)[1]] = state.split()[0] if state else ""
    return states


def wait_for_array(
    cluster: SlurmCluster, job_id: str, tasks: int, timeout_s: float = SWEEP_TIMEOUT_S
) -> dict[str, str]:
    """Wait until the array's tasks all left the queue; returns their final states."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = cluster.command("squeue", "-h", "-j", job_id, "-o", "%i", check=False).stdout.split()
        states = array_states(cluster, job_id)
        if (
            not queued
            and len(states) == tasks
            and all(s not in ("PENDING", "RUNNING", "REQUEUED") for s in states.values())
        ):
            return states
        time.sleep(2)
    raise AssertionError(f"array job {job_id} not finished within {timeout_s:.0f} s: {array_states(cluster, job_id)}")


def wait_for_empty_queue(cluster: SlurmCluster, timeout_s: float = SWEEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while cluster.job_ids():
        assert time.monotonic() < deadline, f"jobs still queued after {timeout_s:.0f} s: {cluster.job_ids()}"
        time.sleep(2)


def submitit_array_tasks(sweep_dir: Path) -> list[tuple[str, str]]:
    """(array job id, task id) of every task the submitit launcher started in this sweep directory."""
    folder = sweep_dir / ".submitit"
    tasks = [re.fullmatch(r"(\d+)_(\d+)", path.name) for path in folder.iterdir()] if folder.is_dir() else []
    return sorted((match.group(1), match.group(2)) for match in tasks if match)


def wait_for_run_start(sweep_dir: Path, scale: float, timeout_s: float = KILL_WINDOW_TIMEOUT_S) -> Path:
    """The run directory of the sweep point merge.scale=<scale> once its run began (Hydra writes
    .hydra/overrides.yaml, then the pipeline resolved_config.yaml first thing)."""
    wanted = f"merge.scale={scale}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for config in sweep_dir.rglob("resolved_config.yaml"):
            overrides = config.parent / ".hydra" / "overrides.yaml"
            if overrides.is_file() and wanted in overrides.read_text().split():
                return config.parent
        time.sleep(0.2)
    raise AssertionError(f"no run of {wanted} started under {sweep_dir} within {timeout_s:.0f} s")


def wait_for_file(path: Path, timeout_s: float = KILL_WINDOW_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s:.0f} s"
        time.sleep(0.2)


def wait_for_text(path: Path, text: str, timeout_s: float = KILL_WINDOW_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.is_file() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {path} within {timeout_s:.0f} s"
        time.sleep(0.5)


def assert_each_point_once(results_dir: Path, scales=SCALES) -> None:
    from acm_exp.results import load_results

    table = load_results(results_dir)
    assert sorted(table["scale"].round(6).unique().tolist()) == sorted(scales), table[["run_id", "scale"]]
    for scale, rows in table.groupby("scale"):
        assert rows["run_id"].nunique() == 1, f"scale {scale}: runs {sorted(rows['run_id'].unique())}"
        assert rows["config_hash"].nunique() == 1
        assert sorted(rows["model"]) == sorted(TOY_MODELS), f"scale {scale}: rows {rows[['model', 'benchmark']]}"
        assert set(rows["benchmark"]) == {"toy"} and set(rows["n"]) == {5}
    assert not table.duplicated(["run_id", "model", "benchmark", "seed"]).any()


def recorded_scales(results_dir: Path) -> list[float]:
    from acm_exp.results import load_results

    table = load_results(results_dir)
    return sorted(table["scale"].round(6).unique().tolist()) if not table.empty else []


def task_pids(cluster: SlurmCluster, array_job: str, task: str, argument: str) -> list[int]:
    """PIDs of the array task's Python processes whose command line holds ``argument`` (scontrol
    listpids: processes of this cluster's own job only)."""
    job_ids = cluster.command("squeue", "-h", "-j", f"{array_job}_{task}", "-o", "%A", check=False).stdout.split()
    if not job_ids:
        return []
    listed = cluster.command("scontrol", "listpids", job_ids[0], check=False).stdout.splitlines()[1:]
    pids = []
    for pid in (line.split()[0] for line in listed if line.split() and line.split()[0].isdigit()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(command[0]).name.startswith("python") and argument in command:
            pids.append(int(pid))
    return pids


# ---------------------------------------------------------------------------------------------
# (a) a 3-point sweep lands every point exactly once


@pytest.mark.slow
@pytest.mark.slurm
def test_launcher_sweep_is_one_array_and_records_each_point_once(slurm_cluster, toy_cache, tmp_path):
    require_submitit_launcher()
    sweep_dir, results_dir = tmp_path / "sweep", tmp_path / "results"
    done = subprocess.run(
        launcher_command(sweep_dir, results_dir, toy_cache),
        env=slurm_cluster.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tasks = submitit_array_tasks(sweep_dir)
    assert len({job for job, _ in tasks}) == 1, f"expected one job array, got {tasks}"
    assert sorted(task for _, task in tasks) == ["0", "1", "2"]
    assert set(wait_for_array(slurm_cluster, tasks[0][0], 3).values()) == {"COMPLETED"}
    assert_each_point_once(results_dir)
    # The summary, collected from the tasks' records.
    summary = done.stdout[done.stdout.index("3 points:") :].splitlines()
    assert summary[0] == "3 points: 3 ran, 0 skipped, 0 failed", done.stdout[-3000:]
    assert [row.split()[:2] for row in summary[2:5]] == [[str(scale), "ran"] for scale in SCALES]
    assert all("% /" in row and "(n=5)" in row for row in summary[2:5])


@pytest.mark.slow
@pytest.mark.slurm
def test_sbatch_array_records_each_point_once(slurm_cluster, toy_cache, tmp_path):
    sweep_file = write_sweep_file(tmp_path / "sweep.txt")
    sweep_dir, results_dir = tmp_path / "sweep", tmp_path / "results"
    job = submit_array(slurm_cluster, sweep_file, sweep_dir, results_dir, toy_cache, tmp_path)
    states = wait_for_array(slurm_cluster, job, 3)
    assert set(states.values()) == {"COMPLETED"}, states
    assert sorted(path.name for path in sweep_dir.iterdir() if path.is_dir()) == ["0_0", "1_0", "2_0"]
    assert_each_point_once(results_dir)
    # The summary job ran after the array and collected the tasks' records.
    wait_for_empty_queue(slurm_cluster)
    summary = (tmp_path / "outputs" / "slurm" / f"acm_exp-{job}-summary.out").read_text()
    assert summary.startswith("3 points: 3 ran, 0 skipped, 0 failed"), summary


@pytest.mark.slow
@pytest.mark.slurm
def test_a_gpu_request_on_a_partition_without_gpus_is_one_line_with_sbatchs_reason(slurm_cluster, toy_cache, tmp_path):
    require_submitit_launcher()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "-m",
            "hydra/launcher=slurm",  # one GPU per task; the test node has none
            f"merge.scale={','.join(map(str, SCALES))}",
            *toy_overrides(tmp_path / "results", toy_cache),
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        env=slurm_cluster.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "acm_exp: error: sbatch refused the job array: Invalid generic resource (gres) specification (asked: "
        "gpus_per_node=1, cpus_per_task=2, mem_gb=8, timeout_min=60); request what the partition has "
        "(hydra.launcher.partition=..., hydra.launcher.gpus_per_node=...), or use hydra/launcher=slurm_cpu on a "
        "partition without GPUs"
    ], done.stderr


# ---------------------------------------------------------------------------------------------
# Preemption and requeue: the run stops cleanly, the requeued task resumes from its caches


def leftovers(directory: Path) -> list[str]:
    """Half-written things under a sweep directory: temporary merges (``.<name>.tmp-*``) and files
    written under a temporary name (``.<name>.<random>.tmp``)."""
    return sorted(
        str(path.relative_to(directory))
        for path in directory.rglob(".*")
        if ".tmp" in path.name and "wandb" not in path.parts
    )


@pytest.mark.slow
@pytest.mark.slurm
def test_launcher_task_preempted_is_requeued_by_submitit_and_resumes(slurm_cluster, toy_cache, tmp_path):
    require_submitit_launcher()
    sweep_dir, results_dir = tmp_path / "sweep", tmp_path / "results"
    launcher = start_launcher(slurm_cluster, launcher_command(sweep_dir, results_dir, toy_cache), tmp_path)
    try:
        run_dir = wait_for_run_start(sweep_dir, SCALES[1])
        wait_for_file(run_dir / "merged" / "merge_manifest.json")  # evaluating now
        ((array_job, _),) = {(job, task) for job, task in submitit_array_tasks(sweep_dir) if task == "1"}
        # What SLURM sends signal_delay_s before a time limit, or on preemption: USR2 to the task.
        slurm_cluster.command("scancel", "--signal=USR2", f"{array_job}_1")
        output, _ = launcher.communicate(timeout=SWEEP_TIMEOUT_S + REQUEUE_DELAY_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, output[-3000:]
    assert "3 points: 3 ran, 0 skipped, 0 failed" in output, output[-3000:]
    log = "".join(path.read_text() for path in (sweep_dir / ".submitit").glob(f"{array_job}_1/*.out"))
    lines = [line for line in log.splitlines() if "interrupted by SIGUSR2" in line]
    assert lines and "submitit requeued the task" in lines[0], log[-3000:]
    main_log = (run_dir / "__main__.log").read_text()
    assert "reusing the complete merge" in main_log.split("interrupted by SIGUSR2", 1)[1]
    assert leftovers(sweep_dir) == []
    assert_each_point_once(results_dir)


@pytest.mark.slow
@pytest.mark.slurm
def test_sbatch_task_requeued_ends_with_one_line_and_completes_with_the_submitting_python(
    slurm_cluster, toy_cache, tmp_path
):
    sweep_file = write_sweep_file(tmp_path / "sweep.txt")
    sweep_dir, results_dir = tmp_path / "sweep", tmp_path / "results"
    job = submit_array(slurm_cluster, sweep_file, sweep_dir, results_dir, toy_cache, tmp_path, defaults=True)
    run_dir = wait_for_run_start(sweep_dir, SCALES[1])
    wait_for_file(run_dir / "merged" / "merge_manifest.json")
    # scontrol requeue: SLURM ends the running task with SIGTERM and queues it again.
    slurm_cluster.command("scontrol", "requeue", f"{job}_1")
    log_file = tmp_path / "outputs" / "slurm" / f"acm_exp-{job}_1.out"
    wait_for_text(log_file, "acm_exp: error: interrupted by SIGTERM")
    time.sleep(2)
    assert leftovers(sweep_dir) == [], "the interrupted run left half-written files"
    states = wait_for_array(slurm_cluster, job, 3, timeout_s=SWEEP_TIMEOUT_S + REQUEUE_DELAY_S)
    assert set(states.values()) == {"COMPLETED"}, states
    log = log_file.read_text()
    errors = [line for line in log.splitlines() if line.startswith("acm_exp: error:")]
    assert len(errors) == 1, log[-3000:]
    assert re.fullmatch(
        r"acm_exp: error: interrupted by SIGTERM during (evaluation|recording the results); rerun the same command "
        r"to resume \(complete merges, statistics and sample files are reused\)",
        errors[0],
    ), errors
    # Both attempts ran the virtualenv's Python (python3 on PATH cannot import acm_exp here).
    started = [line for line in log.splitlines() if line.startswith("acm_exp array: job")]
    assert len(started) == 2 and all(f"with {Path(sys.executable).parent}" in line for line in started), started
    assert "reusing the complete merge" in (run_dir / "__main__.log").read_text()
    assert_each_point_once(results_dir)


# ---------------------------------------------------------------------------------------------
# (b) a task killed mid-run is completed by a resubmission; every point is still recorded once


@pytest.mark.slow
@pytest.mark.slurm
def test_launcher_task_killed_mid_run_is_completed_by_resubmission(slurm_cluster, toy_cache, tmp_path):
    require_submitit_launcher()
    sweep_dir, results_dir = tmp_path / "sweep", tmp_path / "results"
    command = launcher_command(sweep_dir, results_dir, toy_cache)
    launcher = start_launcher(slurm_cluster, command, tmp_path)
    try:
        wait_for_run_start(sweep_dir, SCALES[1])
        ((array_job, _),) = {(job, task) for job, task in submitit_array_tasks(sweep_dir) if task == "1"}
        # Kill the task's python process at once (as the OOM killer would). A plain scancel would not
        # do: submitit ignores its SIGTERM, so a task this small may finish within KillWait.
        pids = task_pids(slurm_cluster, array_job, "1", "submitit.core._submit")
        assert len(pids) == 1, f"expected the task's one python process, got {pids}"
        os.kill(pids[0], signal.SIGKILL)
        output, _ = launcher.communicate(timeout=SWEEP_TIMEOUT_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    # The launcher reports the killed task as a failure once accounting shows it.
    assert launcher.returncode != 0, output[-3000:]
    states = wait_for_array(slurm_cluster, array_job, 3)
    assert states["1"] in ("FAILED", "CANCELLED"), states
    assert recorded_scales(results_dir) == [SCALES[0], SCALES[2]], "task 1 finished before it was killed"

    # The same command again (same sweep dir): points 0 and 2 are skipped, point 1 is redone.
    done = subprocess.run(
        command, env=slurm_cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resubmitted = {job for job, _ in submitit_array_tasks(sweep_dir)} - {array_job}
    assert len(resubmitted) == 1
    logs = {
        task: "".join(path.read_text() for path in (sweep_dir / ".submitit" / f"{job}_{task}").glob("*.out"))
        for job, task in submitit_array_tasks(sweep_dir)
        if job in resubmitted
    }
    assert "skipped: complete results" in logs["0"] and "skipped: complete results" in logs["2"]
    assert "skipped: complete results" not in logs["1"]
    assert_each_point_once(results_dir)


@pytest.mark.slow
@pytest.mark.slurm
def test_sbatch_task_cancelled_mid_run_is_completed_by_resubmission(slurm_cluster, toy_cache, tmp_path):
    sweep_file = write_sweep_file(tmp_path / "sweep.txt")
    sweep_dir, results_dir = tmp_path / "sweep", tmp_path / "results"
    job = submit_array(slurm_cluster, sweep_file, sweep_dir, results_dir, toy_cache, tmp_path)
    wait_for_run_start(sweep_dir, SCALES[1])
    # A plain scancel: SIGTERM ends the batch script and its python process at once.
    slurm_cluster.command("scancel", f"{job}_1", check=False)
    states = wait_for_array(slurm_cluster, job, 3)
    assert states["1"] == "CANCELLED" and states["0"] == states["2"] == "COMPLETED", states
    assert recorded_scales(results_dir) == [SCALES[0], SCALES[2]], "task 1 finished before it was cancelled"

    # Resubmit the whole file into the same sweep directory: 0 and 2 are skipped, 1 is redone.
    wait_for_empty_queue(slurm_cluster)
    again = submit_array(slurm_cluster, sweep_file, sweep_dir, results_dir, toy_cache, tmp_path)
    states = wait_for_array(slurm_cluster, again, 3)
    assert set(states.values()) == {"COMPLETED"}, states
    logs = {task: (tmp_path / f"{again}_{task}.out").read_text() for task in ("0", "1", "2")}
    assert "skipped: complete results" in logs["0"] and "skipped: complete results" in logs["2"]
    assert "skipped: complete results" not in logs["1"]
    assert_each_point_once(results_dir)
