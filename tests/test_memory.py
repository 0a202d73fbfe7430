"""``python -m acm_exp.memory``: the computed memory tables the README shows; ``python -m acm_exp.costs``
(the command's earlier name) prints the same, and the names stay importable from acm_exp.costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from acm_exp import costs, memory


def run(module: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *arguments], capture_output=True, text=True)


def test_the_command_prints_both_tables_and_its_old_name_prints_the_same():
    both = memory.memory_table() + "\n\n" + memory.placement_table() + "\n"
    new, old = run("acm_exp.memory"), run("acm_exp.costs")
    assert new.returncode == old.returncode == 0, new.stderr + old.stderr
    assert new.stdout == old.stdout == both


@pytest.mark.parametrize(("table", "expected"), [("needs", "memory_table"), ("placement", "placement_table")])
def test_one_table_on_request(table, expected):
    done = run("acm_exp.memory", "--table", table)
    assert done.returncode == 0 and done.stdout == getattr(memory, expected)() + "\n"


def test_an_unknown_table_is_refused_in_one_line():
    done = run("acm_exp.memory", "--table", "gpus")
    assert done.returncode == 2 and done.stdout == ""
    assert "invalid choice: 'gpus'" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "name",
    [
        "ModelShape",
        "PAPER_SHAPES",
        "capture_memory",
        "memory_needs",
        "merge_memory",
        "stage_prediction",
        "placement_needs",
        "gpus_needed",
        "memory_table",
        "placement_table",
        "GPU_COUNTS",
        "GIB",
    ],
)
def test_the_moved_names_stay_importable_from_costs(name):
    assert getattr(costs, name) is getattr(memory, name)
