"""Ctrl-C, SIGTERM, SIGUSR1 and SIGUSR2 (SLURM's signals) end a run with one line, its temporary files
removed and W&B closed (acm_exp.interrupts). The requeue under SLURM is tested on a real cluster in
test_slurm.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from model_factory import make_model

from acm_exp.interrupts import Interrupted, signals_interrupt

MERGE_STARTED = re.compile(r"merging \d+ tensors with")  # the engine's log line as the merge loop starts


def test_a_signal_raises_interrupted_in_the_block_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Interrupted) as caught, signals_interrupt():
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.sigtimedwait([], 0)  # let the handler run
    assert caught.value.signal_name == "SIGUSR1" and caught.value.exit_status == 128 + signal.SIGUSR1
    assert caught.value.requeue is None
    assert signal.getsignal(signal.SIGUSR1) == before


def test_submitits_requeue_handler_is_called_and_its_outcome_reported():
    calls = []

    def checkpoint_and_try_requeue(signum, frame):  # stands in for submitit's handler (same name)
        calls.append(signum)
        raise SystemExit(-1)  # submitit requeued the task and exits

    previous = signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
    try:
        with pytest.raises(Interrupted) as caught, signals_interrupt():
            os.kill(os.getpid(), signal.SIGUSR2)
            signal.sigtimedwait([], 0)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [] and caught.value.requeue is None  # not before the run has unwound
    caught.value.hand_over()
    assert calls == [signal.SIGUSR2] and caught.value.requeue == "requeued"
    caught.value.hand_over()
    assert calls == [signal.SIGUSR2]


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def worker():
        with signals_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    base = make_model(root / "base", hidden=256, layers=6, vocab_size=64)
    return base, make_model(root / "finetuned", seed=1, from_model=base, hidden=256, layers=6, vocab_size=64)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_a_signal_mid_merge_ends_the_run_with_one_line_and_leaves_nothing_behind(tmp_path, big_pair, name):
    """Ctrl-C (SIGINT, exit 130) and SLURM's signals (exit 128 + the signal's number)."""
    base, finetuned = big_pair
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACM_EXP_CACHE": str(tmp_path / "cache")}
    env.pop("WANDB_MODE", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acm_exp",
            f"model_pair.base={base}",
            f"model_pair.finetuned=[{finetuned}]",
            "merge=ties",
            f"merge.output_dir={tmp_path / 'merged'}",
            "eval=none",
            "logger.wandb.mode=offline",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    for line in process.stdout:
        if MERGE_STARTED.search(line):
            process.send_signal(getattr(signal, name))
            break
    _, stderr = process.communicate(timeout=300)
    if process.returncode == 0:
        pytest.skip("the merge finished before the signal arrived")
    assert process.returncode == (130 if name == "SIGINT" else 128 + getattr(signal, name)), stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("acm_exp: error:")]
    by = "" if name == "SIGINT" else f"by {name} "
    assert lines == [
        f"acm_exp: error: interrupted {by}during the merge; rerun the same command to resume "
        "(complete merges, statistics and sample files are reused)"
    ], stderr[-2000:]
    assert "Traceback" not in stderr
    # Nothing half-written: no merged model, no hidden temporary directory beside it.
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".merged")) == [".merged.lock"]
    assert not (tmp_path / "merged").exists()
    # The W&B run was finished, not abandoned.
    assert "finishing run" in (tmp_path / "run" / "wandb" / "debug.log").read_text()
