"""Operating mapped task instances from the command line: state, logs and clear of one map index,
against a running system on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_cli import CliSystem, assert_user_error, cli_system

DAGS = """
    from pathlib import Path

    from hareflow import DAG, task

    with DAG("mapped_ops"):
        @task
        def check(name, ctx):
            print(f"checking {name} at map index {ctx.map_index}")
            if name == "b" and not Path("@MARKERS@/fixed").exists():
                raise RuntimeError("b is broken")
            return name.upper()

        @task
        def joined(names):
            return "".join(names)

        joined(check.expand(name=["a", "b", "c"]))
"""


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSystem]:
    yield from cli_system(tmp_path_factory, {"mapped_ops.py": DAGS}, wait_for=["mapped_ops"])


def test_state_logs_and_clear_address_one_map_index_and_the_cleared_instance_runs_again(
    hf: CliSystem,
) -> None:
    run_id = hf.run_to_end("mapped_ops")
    assert hf.run_state("mapped_ops", run_id) == "failed"

    without_index = hf.invoke("tasks", "state", run_id, "check")
    failed = hf.json("tasks", "state", run_id, "check", "--map-index", "1")
    fine = hf.ok("tasks", "state", run_id, "check", "--map-index", "2").stdout.strip()
    missing = hf.invoke("tasks", "state", run_id, "check", "--map-index", "7")
    logs = hf.ok("tasks", "logs", run_id, "check", "--map-index", "1").stdout

    assert_user_error(without_index, "'check'", "mapped into 3 instances", "0..2")
    assert (failed["map_index"], failed["state"]) == (1, "failed")
    assert fine == "success"
    assert_user_error(missing, "no map index 7")
    assert "checking b at map index 1" in logs and "checking a" not in logs

    (hf.markers / "fixed").write_text("")
    cleared = hf.json(
        "tasks", "clear", "mapped_ops", "--run-id", run_id, "--task", "^check$", "--map-index", "1", "--yes"
    )
    assert [(c["task_id"], c["map_index"], c["state"]) for c in cleared["cleared"]] == [
        ("check", 1, "failed")
    ]
    hf.ok("tasks", "clear", "mapped_ops", "--run-id", run_id, "--task", "^joined$", "--yes")
    hf.cluster.wait_for_run("mapped_ops", run_id, timeout=60)

    assert hf.run_state("mapped_ops", run_id) == "success"
    tries = [
        hf.json("tasks", "state", run_id, "check", "--map-index", str(i))["try_number"] for i in range(3)
    ]
    assert tries == [1, 2, 1]
    assert hf.json("tasks", "state", run_id, "joined")["state"] == "success"
