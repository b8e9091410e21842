"""Dynamic task mapping, authoring side: partial/expand/expand_kwargs, their serialized form, the
pure expansion functions, and every unsupported Airflow idiom failing at parse time."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hareflow.common.dag import Context, SerializedDag, load_dag_file, serialize_dag
from hareflow.common.dag.mapping import (
    ExpandSpec,
    ExpansionError,
    all_elements,
    element,
    expansion_length,
    source_lists,
)

MARK = "# <- here"
HEADER = "from hareflow import DAG, BashTask, task\n"


def _load(tmp_path: Path, body: str):
    text = HEADER + textwrap.dedent(body).lstrip("\n")
    path = tmp_path / "mapped.py"
    path.write_text(text)
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if MARK in line]
    return load_dag_file(path), path, (lines[0] if lines else -1)


def _dag(tmp_path: Path, body: str):
    result, _, _ = _load(tmp_path, body)
    assert not result.errors, result.errors
    return result.dags[0]


def _error(tmp_path: Path, body: str) -> tuple[str, int, int, Path]:
    result, path, line = _load(tmp_path, body)
    assert result.dags == [] and len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.file == str(path.resolve())
    return error.message.splitlines()[0], error.line, line, path


def _task(dag, task_id: str):
    return SerializedDag.from_dict(serialize_dag(dag)).get_task(task_id)


# -- the authoring API and its serialized form -------------------------------------------------------


def test_partial_expand_over_a_literal_list_serializes_the_fixed_and_mapped_arguments(tmp_path: Path) -> None:
    dag = _dag(
        tmp_path,
        """
        with DAG("m"):
            @task
            def add(x, y):
                return x + y

            add.partial(y=10).expand(x=[1, 2, 3])
        """,
    )
    t = _task(dag, "add")
    assert t.is_mapped and t.task_type == "PythonTask"
    assert t.expand == {"kind": "product", "args": [{"name": "x", "literal": [1, 2, 3]}]}
    assert dag.get_task("add").op_kwargs == {"y": 10}
    again = SerializedDag.from_dict(serialize_dag(dag))
    assert again.to_dict() == serialize_dag(dag)


def test_expand_without_partial_and_over_an_upstream_output_depends_on_that_task(tmp_path: Path) -> None:
    dag = _dag(
        tmp_path,
        """
        with DAG("m"):
            @task
            def numbers():
                return [1, 2]

            @task
            def double(x):
                return 2 * x

            @task
            def total(values):
                return sum(values)

            total(double.expand(x=numbers()))
        """,
    )
    double = _task(dag, "double")
    assert double.expand == {"kind": "product", "args": [{"name": "x", "task": "numbers"}]}
    assert double.upstream == ("numbers",)
    assert double.input_tasks == ()  # the mapped list is not sent whole to every instance
    assert _task(dag, "total").input_tasks == ("double",)
    assert not _task(dag, "numbers").is_mapped


def test_expanding_over_a_dict_yields_key_value_pairs(tmp_path: Path) -> None:
    dag = _dag(
        tmp_path,
        """
        with DAG("m"):
            @task
            def show(pair):
                return pair

            show.expand(pair={"a": 1, "b": 2})
        """,
    )
    spec = _task(dag, "show").expand_spec
    assert all_elements(spec, source_lists(spec, {})) == [{"pair": ["a", 1]}, {"pair": ["b", 2]}]


def test_expand_kwargs_over_literal_dicts(tmp_path: Path) -> None:
    dag = _dag(
        tmp_path,
        """
        with DAG("m"):
            @task
            def add(x, y):
                return x + y

            add.expand_kwargs([{"x": 1, "y": 2}, {"x": 3, "y": 4}])
        """,
    )
    spec = _task(dag, "add").expand_spec
    assert spec.kind == "kwargs"
    assert all_elements(spec, source_lists(spec, {})) == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


def test_a_mapped_task_runs_its_function_with_the_element_from_the_context(tmp_path: Path) -> None:
    dag = _dag(
        tmp_path,
        """
        with DAG("m"):
            @task
            def add(x, y, ctx):
                return [x + y, ctx.map_index]

            add.partial(y=10).expand(x=[1, 2, 3])
        """,
    )
    ctx = Context(dag_id="m", task_id="add", run_id="r", map_index=2, expand_args={"x": 3})
    assert dag.get_task("add").execute(ctx) == [13, 2]


def test_several_mapped_arguments_make_the_cross_product_with_the_last_varying_fastest() -> None:
    spec = ExpandSpec.from_dict(
        {"kind": "product", "args": [{"name": "a", "literal": [1, 2]}, {"name": "b", "task": "t"}]}
    )
    lists = source_lists(spec, {"t": ["x", "y", "z"]})
    assert expansion_length(spec, lists) == 6
    expected = [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    assert [element(spec, lists, i) for i in range(6)] == expected == all_elements(spec, lists)
    assert element(spec, lists, 6) is None


def test_mapping_over_a_result_that_is_not_a_list_or_dict_is_an_expansion_error() -> None:
    spec = ExpandSpec.from_dict({"kind": "product", "args": [{"name": "a", "task": "t"}]})
    with pytest.raises(ExpansionError, match="task 't', which is str, not a list or dict"):
        source_lists(spec, {"t": "abc"})
    kwargs = ExpandSpec.from_dict({"kind": "kwargs", "args": [{"name": "*", "task": "t"}]})
    with pytest.raises(ExpansionError, match="item 1 is not a dict"):
        expansion_length(kwargs, source_lists(kwargs, {"t": [{"a": 1}, 5]}))


# -- parse-time errors, each naming file and line ------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("add.partial(y=1).expand(z=[1])  # <- here", "add() has no parameter 'z'"),
        ("add.partial(q=1).expand(x=[1])  # <- here", "add() has no parameter 'q'"),
        ("add.partial(y=1).expand(y=[1])  # <- here", "is also given to partial()"),
        ("add.partial(y=1).expand()  # <- here", "needs at least one argument"),
        ("add.partial(y=1).expand(x=5)  # <- here", "expand() maps over a list, a dict or the output"),
        ("add.partial(y=1).expand(x='abc')  # <- here", "is a str; expand() maps over a list"),
        ("add.partial(y=1).expand(x=[src()])  # <- here", "to map over a task's output pass the task itself"),
        ("add.expand_kwargs([{'x': 1}, 3])  # <- here", "item 1 is a int; each item is a dict"),
        ("add.expand_kwargs('x')  # <- here", "needs a list of dicts or the output of another task"),
        ("add.partial(retries=2).expand(x=[1])  # <- here", "use add.override(retries=...)"),
        ("add.partial(1).expand(x=[1])  # <- here", "partial() takes keyword arguments only"),
        ("add.expand(x=[1])  # <- here", "parameter 'y' of add() gets no argument"),
        ("add.expand(x=src().map(str))  # <- here", ".map() on a task's output is not supported"),
        ("add.expand(x=src().zip(src()))  # <- here", ".zip() on a task's output is not supported"),
        ("BashTask.partial(task_id='b').expand(bash_command=['ls'])  # <- here", "BashTask.partial()"),
        ("src().expand(x=[1])  # <- here", "expand() belongs on the @task function"),
        ("add.partial(y=1)  # <- here", "add.partial(...) is never expanded"),
    ],
)
def test_a_mapping_mistake_fails_at_parse_time_naming_file_and_line(
    tmp_path: Path, statement: str, message: str
) -> None:
    body = f"""
    with DAG("m"):
        @task
        def src():
            return [1]

        @task
        def add(x, y):
            return x + y

        {statement}
    """
    first, line, expected_line, path = _error(tmp_path, body)
    assert line == expected_line
    assert message in first
    assert f"{path.resolve()}:{expected_line}: " in first


def test_a_mapped_task_in_a_group_maps_over_a_value_inside_an_upstream_output(tmp_path: Path) -> None:
    dag = _dag(
        tmp_path,
        """
        from hareflow import TaskGroup

        with DAG("m"):
            @task
            def listing():
                return {"files": ["a", "b"]}

            @task
            def size(name):
                return len(name)

            with TaskGroup("load"):
                size.expand(name=listing()["files"])
        """,
    )
    assert dag.task_ids == ["load.listing", "load.size"]
    mapped = _task(dag, "load.size")
    assert mapped.expand == {
        "kind": "product",
        "args": [{"name": "name", "task": "load.listing", "keys": ["files"]}],
    }
    assert mapped.upstream == ("load.listing",)


def test_xcomarg_methods_on_a_task_output_fail_at_parse_time(tmp_path: Path) -> None:
    body = """
    with DAG("m"):
        @task
        def src():
            return [1]

        src().output.map(lambda x: x)  # <- here
    """
    first, line, expected_line, _ = _error(tmp_path, body)
    assert line == expected_line
    assert ".map() on a task's output is not supported" in first


# -- hareflow tasks test ---------------------------------------------------------------------------


def test_tasks_test_runs_one_instance_of_a_task_mapped_over_literals(tmp_path: Path) -> None:
    from tests.unit.test_cli import hareflow

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "m.py").write_text(
        textwrap.dedent(
            """
            from hareflow import DAG, task

            with DAG("m"):
                @task
                def src():
                    return [1]

                @task
                def add(x, y, ctx):
                    return [x + y, ctx.map_index]

                add.partial(y=10).expand(x=[1, 2, 3])
                add.override(task_id="later").partial(y=1).expand(x=src())
            """
        )
    )
    env = {"HAREFLOW_DAGS_FOLDER": str(folder)}

    first = hareflow("tasks", "test", "m", "add", env=env)
    third = hareflow("tasks", "test", "m", "add", "--map-index", "2", env=env)
    past = hareflow("tasks", "test", "m", "add", "--map-index", "3", env=env)
    runtime = hareflow("tasks", "test", "m", "later", env=env)
    plain = hareflow("tasks", "test", "m", "src", "--map-index", "0", env=env)

    assert first.exit_code == 0 and json.loads(first.stdout) == [11, 0]
    assert third.exit_code == 0 and json.loads(third.stdout) == [13, 2]
    assert past.exit_code == 2 and "has no map index 3" in past.stderr
    assert runtime.exit_code == 2 and "maps over the output of task(s) src" in runtime.stderr
    assert plain.exit_code == 2 and "is not mapped" in plain.stderr


def test_a_source_may_map_over_a_value_inside_an_upstream_result() -> None:
    spec = ExpandSpec.from_dict({"kind": "product", "args": [{"name": "f", "task": "ls", "keys": ["files"]}]})
    assert spec.to_dict()["args"][0]["keys"] == ["files"]
    assert source_lists(spec, {"ls": {"files": ["a", "b"], "n": 2}}) == [["a", "b"]]
    with pytest.raises(ExpansionError, match=r"\['files'\] of the result of task 'ls', which has no 'files'"):
        source_lists(spec, {"ls": {"n": 2}})
