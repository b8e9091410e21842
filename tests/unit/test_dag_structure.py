"""Structure in DAG files: task groups, ``@dag``, ``chain``, and task outputs with ``["key"]``."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.dag import (
    DAG,
    BashTask,
    Context,
    DagDefinitionError,
    SerializedDag,
    TaskFailed,
    TaskGroup,
    TaskOutput,
    load_dag_file,
    serialize_dag,
    task,
)
from hareflow.common.dag.chain import chain, chain_linear, cross_downstream
from hareflow.common.dag.decorators import dag, task_group


def _ctx(task_id: str, results: dict[str, Any] | None = None, **kwargs: Any) -> Context:
    return Context(dag_id="d", task_id=task_id, run_id="manual__1", upstream_results=results or {}, **kwargs)


def _edges(d: DAG) -> set[tuple[str, str]]:
    return {(up, t.task_id) for t in d.tasks for up in t.upstream_task_ids}


@task
def noop() -> None:
    return None


def _bash(task_id: str) -> BashTask:
    return BashTask(task_id, "true")


# -- task groups ---------------------------------------------------------------------------------


def test_tasks_in_a_group_get_the_group_id_as_prefix_and_nested_groups_chain_prefixes() -> None:
    with DAG("d") as d:
        with TaskGroup("extract") as extract:
            fetch = _bash("fetch")
            with TaskGroup("inner") as inner:
                deep = noop()
        after = noop()
    assert fetch.task_id == "extract.fetch"
    assert deep.task_id == "extract.inner.noop"
    assert after.task_id == "noop"
    assert inner.group_id == "extract.inner" and inner.parent_group is extract
    assert fetch.task_group is extract and deep.task_group is inner and after.task_group is None
    assert list(d.task_groups) == ["extract", "extract.inner"]
    assert extract.all_task_ids() == ["extract.fetch", "extract.inner.noop"]


def test_prefix_group_id_false_keeps_the_task_ids_as_written() -> None:
    with DAG("d"):
        with TaskGroup("outer", prefix_group_id=False) as outer:
            plain = _bash("plain")
            with TaskGroup("inner") as inner:
                prefixed = _bash("t")
    assert plain.task_id == "plain" and plain.task_group is outer
    assert inner.group_id == "inner"
    assert prefixed.task_id == "inner.t"


def test_repeated_task_calls_in_a_group_are_numbered_within_the_group() -> None:
    with DAG("d") as d:
        noop()
        with TaskGroup("g"):
            noop()
            noop()
    assert d.task_ids == ["noop", "g.noop", "g.noop__1"]


def test_group_default_args_merge_over_the_dags_and_under_the_tasks_own() -> None:
    with DAG("d", default_args={"retries": 1, "queue": "dagq", "priority": 3}):
        with TaskGroup("outer", default_args={"retries": 2, "queue": "outerq"}):
            with TaskGroup("inner", default_args={"retries": 5}):
                inner_task = _bash("a")
                own = BashTask("b", "true", retries=9)
            outer_task = _bash("c")
        outside = _bash("d")
    assert (inner_task.retries, inner_task.queue, inner_task.priority) == (5, "outerq", 3)
    assert own.retries == 9
    assert (outer_task.retries, outer_task.queue) == (2, "outerq")
    assert (outside.retries, outside.queue) == (1, "dagq")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TaskGroup("a.b"), "invalid group_id 'a.b'"),
        (lambda: TaskGroup("g", default_args={"retries": -1}), "retries of default_args of task group 'g'"),
        (lambda: TaskGroup("g", tooltip=3), "tooltip of task group 'g' must be a string"),
        (lambda: TaskGroup("g", prefix_group_id="yes"), "prefix_group_id of task group 'g'"),
        (lambda: TaskGroup("g", ui_color="#fff"), "unknown TaskGroup argument 'ui_color' for group 'g'"),
    ],
)
def test_bad_group_arguments_are_definition_errors(make: Any, message: str) -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match=message):
        make()


def test_group_ids_must_be_unique_and_distinct_from_task_ids() -> None:
    with DAG("d"):
        TaskGroup("g")
        with pytest.raises(DagDefinitionError, match="duplicate task group id 'g'"):
            TaskGroup("g")
        _bash("t")
        with pytest.raises(DagDefinitionError, match="task group id 't' is already a task id"):
            TaskGroup("t")
        with pytest.raises(DagDefinitionError, match="task id 'g' is already a task group id"):
            _bash("g")


def test_a_group_given_dag_takes_its_tasks_into_that_dag_without_a_with_block() -> None:
    d = DAG("d")
    with TaskGroup("g", dag=d):
        t = _bash("t")
        n = noop()
    assert (t.dag, t.task_id, n.task_id) == (d, "g.t", "g.noop")


def test_a_group_outside_a_dag_is_an_error() -> None:
    with pytest.raises(DagDefinitionError, match="task group 'g' was created outside a DAG"):
        TaskGroup("g")


def test_a_group_upstream_means_its_leaves_and_downstream_its_roots() -> None:
    with DAG("d") as d:
        start = _bash("start")
        with TaskGroup("g") as g:
            a, b, c = _bash("a"), _bash("b"), _bash("c")
            a >> [b, c]
        end = _bash("end")
        start >> g >> end
    assert _edges(d) == {
        ("start", "g.a"),
        ("g.a", "g.b"),
        ("g.a", "g.c"),
        ("g.b", "end"),
        ("g.c", "end"),
    }


def test_groups_link_to_groups_in_lists_and_with_left_shift() -> None:
    with DAG("d") as d:
        with TaskGroup("one") as one:
            _bash("x")
        with TaskGroup("two") as two:
            _bash("y")
        last = _bash("last")
        first = _bash("first")
        last << [one, two]
        [one, two] << first
        one >> two
    assert _edges(d) == {
        ("one.x", "last"),
        ("two.y", "last"),
        ("first", "one.x"),
        ("first", "two.y"),
        ("one.x", "two.y"),
    }


def test_an_empty_group_in_a_dependency_is_an_error() -> None:
    with DAG("d"):
        empty = TaskGroup("empty")
        t = _bash("t")
        with pytest.raises(DagDefinitionError, match="task group 'empty' has no tasks"):
            t >> empty


def test_shift_refuses_things_that_are_not_tasks_groups_or_outputs() -> None:
    with DAG("d"):
        t = _bash("t")
        with pytest.raises(DagDefinitionError, match="not int"):
            t >> 3  # type: ignore[operator]


# -- @task_group -----------------------------------------------------------------------------------


def test_task_group_decorator_returns_the_functions_task_so_shift_links_against_it() -> None:
    @task_group
    def clean(value):
        """Drop bad rows."""

        @task
        def drop(v):
            return v

        @task
        def count(v):
            return len(v)

        return count(drop(value))

    with DAG("d") as d:
        source = noop()
        last = clean(source)
        report = _bash("report")
        last >> report
    assert last.task_id == "clean.count"
    assert d.task_groups["clean"].tooltip == "Drop bad rows."
    assert d.get_task("clean.drop").input_task_ids == {"noop"}
    assert _edges(d) == {("noop", "clean.drop"), ("clean.drop", "clean.count"), ("clean.count", "report")}


def test_task_group_decorator_returns_the_group_when_the_function_returns_no_task() -> None:
    @task_group(tooltip="two in parallel", default_args={"retries": 4})
    def pair():
        _bash("left")
        _bash("right")

    with DAG("d") as d:
        first = pair()
        second = pair()
        first >> second
    assert isinstance(first, TaskGroup) and first.group_id == "pair"
    assert isinstance(second, TaskGroup) and second.group_id == "pair__1"
    assert second.tooltip == "two in parallel"
    assert d.get_task("pair__1.left").retries == 4
    assert _edges(d) == {
        (a, b) for a in ("pair.left", "pair.right") for b in ("pair__1.left", "pair__1.right")
    }


def test_task_group_decorator_nests_and_takes_an_explicit_group_id() -> None:
    @task_group(group_id="inner")
    def inner():
        return _bash("t")

    @task_group
    def outer():
        return inner()

    with DAG("d") as d:
        result = outer()
        again = inner()
    assert result.task_id == "outer.inner.t"
    assert again.task_id == "inner.t"
    assert list(d.task_groups) == ["outer", "outer.inner", "inner"]
    with d:
        assert inner().task_id == "inner__1.t"


def test_task_group_options_apply_when_the_function_is_passed_directly() -> None:
    def plain():
        _bash("x")

    with DAG("d"):
        group = task_group(plain, tooltip="given")()
    assert group.tooltip == "given"


def test_mapping_a_task_group_and_unknown_group_options_are_definition_errors() -> None:
    @task_group
    def g(x):
        return x

    with (
        DAG("d"),
        pytest.raises(DagDefinitionError, match=r"mapping a task group \(.expand\) is not supported"),
    ):
        g.expand(x=[1, 2])
    with pytest.raises(DagDefinitionError, match="unknown @task_group argument 'colour'"):
        task_group(colour="red")


# -- @dag ------------------------------------------------------------------------------------------


def test_dag_decorator_builds_the_dag_with_parameters_as_params() -> None:
    @dag(schedule="@daily", start_date=datetime(2026, 1, 1), tags=["t"], params={"extra": True})
    def nightly(rows: int = 10, label: str = "x"):
        """Nightly load."""
        noop()

    built = nightly(label="y")
    assert isinstance(built, DAG)
    assert built.dag_id == "nightly" and built.schedule == "@daily" and built.tags == ["t"]
    assert built.params == {"extra": True, "rows": 10, "label": "y"}
    assert built.doc_md == "Nightly load."
    assert built.task_ids == ["noop"]


def test_dag_decorator_parameters_resolve_to_the_runs_params_on_the_worker() -> None:
    @task
    def double(n):
        return n * 2

    @dag(dag_id="with_params")
    def pipeline(n: int = 3):
        double(n)

    built = pipeline()
    t = built.get_task("double")
    assert t.input_task_ids == set()
    assert t.execute(_ctx("double", params={"n": 3})) == 6
    assert t.execute(_ctx("double", params={"n": 21})) == 42


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: dag(schedule="@daily", colour="red")(lambda: None), "unexpected keyword argument 'colour'"),
        (lambda: dag(lambda *args: None), r"cannot take \*args or \*\*kwargs"),
        (lambda: dag(3), "@dag takes a dag_id string first"),
    ],
)
def test_bad_dag_decorator_arguments_are_definition_errors(build: Any, message: str) -> None:
    with pytest.raises(DagDefinitionError, match=message):
        build()


def test_calling_a_dag_function_without_its_required_parameter_is_a_definition_error() -> None:
    @dag
    def needs(rows):
        pass

    with pytest.raises(DagDefinitionError, match="cannot call needs\\(\\) for DAG 'needs'"):
        needs()
    assert needs(5).params == {"rows": 5}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "dag_file.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_the_loader_collects_a_dag_made_by_a_module_level_call(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        from datetime import datetime
        from hareflow import dag, task

        @dag(schedule="@hourly", start_date=datetime(2026, 1, 1))
        def hourly_job(limit=5):
            @task
            def one(n):
                return n

            one(limit)

        hourly_job()
        """,
    )
    result = load_dag_file(path)
    assert result.errors == []
    [loaded] = result.dags
    assert loaded.dag_id == "hourly_job" and loaded.params == {"limit": 5}
    assert loaded.fileloc == str(path) and loaded.lineno == 13


# -- chain and cross_downstream --------------------------------------------------------------------


def test_chain_links_singles_fans_out_and_in_and_pairs_equal_lists() -> None:
    with DAG("d") as d:
        a, b, c, d1, d2, e1, e2, f = (_bash(n) for n in ("a", "b", "c", "d1", "d2", "e1", "e2", "f"))
        chain(a, b, [c, d1], e1)
        chain([d2, e2], [f, a.dag.get_task("c")])
    assert _edges(d) == {
        ("a", "b"),
        ("b", "c"),
        ("b", "d1"),
        ("c", "e1"),
        ("d1", "e1"),
        ("d2", "f"),
        ("e2", "c"),
    }


def test_chain_accepts_groups_and_outputs() -> None:
    with DAG("d") as d:
        with TaskGroup("g") as g:
            _bash("x") >> _bash("y")
        start, end = _bash("start"), _bash("end")
        chain(start.output, g, end)
    assert _edges(d) == {("start", "g.x"), ("g.x", "g.y"), ("g.y", "end")}


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            lambda t: chain([t[0], t[1]], [t[2], t[3], t[4]]),
            "chain\\(\\) arguments 1 and 2 are lists of different lengths",
        ),
        (lambda t: chain(t[0], [], t[1]), "chain\\(\\) argument 2 is an empty list"),
        (lambda t: chain(t[0], "b"), "chain\\(\\) argument 2 is a str"),
        (lambda t: chain(t[0], [t[1], 7]), "chain\\(\\) argument 2\\[1\\] is a int"),
        (lambda t: cross_downstream(t[0], [t[1]]), "cross_downstream\\(\\) from_tasks must be a list"),
    ],
)
def test_bad_chain_shapes_are_definition_errors(shape: Any, message: str) -> None:
    with DAG("d") as d:
        tasks = [_bash(n) for n in "abcde"]
        with pytest.raises(DagDefinitionError, match=message):
            shape(tasks)
    assert _edges(d) == set()


def test_cross_downstream_and_chain_linear_link_every_pair() -> None:
    with DAG("d") as d:
        a, b, c, e, f = (_bash(n) for n in "abcef")
        cross_downstream([a, b], [c, e])
        chain_linear([c, e], f)
    assert _edges(d) == {("a", "c"), ("a", "e"), ("b", "c"), ("b", "e"), ("c", "f"), ("e", "f")}


# -- task outputs and multiple_outputs ------------------------------------------------------------


def test_key_references_make_the_task_an_input_and_resolve_on_the_worker() -> None:
    @task(multiple_outputs=True)
    def extract():
        return {"rows": [1, 2, 3], "meta": {"source": "db", "pages": [7, 8]}}

    @task
    def load(rows, source, page):
        return {"n": len(rows), "source": source, "page": page}

    with DAG("d") as d:
        e = extract()
        out = load(e["rows"], source=e["meta"]["source"], page=e["meta"]["pages"][1])
    assert isinstance(e["rows"], TaskOutput)
    assert out.upstream_task_ids == {"extract"} and out.input_task_ids == {"extract"}
    stored = e.execute(_ctx("extract"))
    assert out.execute(_ctx("load", {"extract": stored})) == {"n": 3, "source": "db", "page": 8}
    assert d.get_task("load").input_task_ids == {"extract"}


def test_a_missing_key_fails_the_consuming_try_naming_the_upstream_and_the_key() -> None:
    @task
    def extract():
        return {"rows": []}

    @task
    def load(v):
        return v

    with DAG("d"):
        out = load(extract()["meta"]["source"])
    with pytest.raises(
        TaskFailed, match=r"upstream task 'extract' is a dict with keys 'rows', which has no key 'meta'"
    ):
        out.execute(_ctx("load", {"extract": {"rows": []}}))
    with pytest.raises(TaskFailed, match=r"task 'load' reads extract\['meta'\]\['source'\].*is None"):
        out.execute(_ctx("load", {}))


def test_output_of_a_classic_task_is_an_argument_and_a_dependency() -> None:
    @task
    def shout(text):
        return text.upper()

    with DAG("d") as d:
        say = BashTask("say", "echo hi")
        loud = shout(say.output)
        say.output >> _bash("after")
    assert loud.input_task_ids == {"say"}
    assert loud.execute(_ctx("shout", {"say": "hi"})) == "HI"
    assert ("say", "after") in _edges(d)


def test_a_task_as_an_argument_still_passes_its_whole_result() -> None:
    @task
    def total(rows):
        return sum(rows)

    with DAG("d"):
        t = total(BashTask("rows", "echo 1"))
    assert t.execute(_ctx("total", {"rows": [1, 2]})) == 3


def test_tasks_and_outputs_are_not_iterable_while_the_dag_is_defined() -> None:
    with DAG("d"):
        t = _bash("t")
        with pytest.raises(TypeError):
            iter(t)
        with pytest.raises(TypeError):
            list(t.output)
        with pytest.raises(DagDefinitionError, match="indexed by a string key or an integer, not float"):
            t[1.5]  # type: ignore[index]


def test_multiple_outputs_is_inferred_from_a_dict_return_annotation() -> None:
    @task
    def typed() -> dict[str, int]:
        return {"a": 1}

    @task
    def bare() -> dict:
        return {}

    @task
    def listed() -> list[int]:
        return []

    @task(multiple_outputs=False)
    def refused() -> dict[str, int]:
        return {}

    with DAG("d"):
        flags = [f().multiple_outputs for f in (typed, bare, listed, refused, noop)]
    assert flags == [True, True, False, False, False]


def test_a_multiple_outputs_task_must_return_a_dict_with_string_keys() -> None:
    @task(multiple_outputs=True)
    def bad(value):
        return {int(k): v for k, v in value.items()} if isinstance(value, dict) and "1" in value else value

    with DAG("d"):
        as_list, int_keys, good = bad([1]), bad({"1": "x"}), bad({"a": 1})
    with pytest.raises(
        TaskFailed, match="task 'bad' has multiple_outputs=True but returned a list of 1 items"
    ):
        as_list.execute(_ctx("bad"))
    with pytest.raises(TaskFailed, match="non-string key 1"):
        int_keys.execute(_ctx("bad__1"))
    assert good.execute(_ctx("bad__2")) == {"a": 1}
    with pytest.raises(DagDefinitionError, match="multiple_outputs of @task\\(\\) must be True or False"):
        task(multiple_outputs="yes")  # type: ignore[call-overload]


# -- parse-time errors and serialization ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chain([a, b], [c])", "chain() arguments 1 and 2 are lists of different lengths (2 and 1)"),
        ("TaskGroup('bad.id')", "invalid group_id 'bad.id'"),
        ("a >> TaskGroup('empty')", "task group 'empty' has no tasks"),
        ("a['k']['j'][None]", "indexed by a string key or an integer, not NoneType"),
    ],
)
def test_structure_errors_in_a_dag_file_name_the_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = _write(
        tmp_path,
        f"""
        from hareflow import DAG, BashTask, TaskGroup, chain

        with DAG("broken"):
            a, b, c = BashTask("a", "true"), BashTask("b", "true"), BashTask("c", "true")
            {line}
        """,
    )
    [error] = load_dag_file(path).errors
    assert error.file == str(path) and error.line == 6
    assert message in error.message


def _grouped_dag() -> DAG:
    with DAG("grouped", start_date=datetime(2026, 1, 1), schedule="@daily") as d:
        with TaskGroup("extract", tooltip="read the sources"):
            with TaskGroup("db"):
                rows = _bash("rows")
        rows >> BashTask("load", "true", retry_delay=timedelta(seconds=1))
    return d


def test_serialized_dags_carry_each_tasks_group_and_the_groups_with_their_tooltips() -> None:
    data = serialize_dag(_grouped_dag())
    assert [(t["task_id"], t["task_group"]) for t in data["tasks"]] == [
        ("extract.db.rows", "extract.db"),
        ("load", None),
    ]
    assert data["task_groups"] == [
        {"group_id": "extract", "label": "extract", "parent": None, "tooltip": "read the sources"},
        {"group_id": "extract.db", "label": "db", "parent": "extract", "tooltip": ""},
    ]
    restored = SerializedDag.from_dict(json.loads(json.dumps(data)))
    assert restored.to_dict() == data
    assert restored.group_path("extract.db.rows") == ["extract", "extract.db"]
    assert restored.group_path("load") == []


def test_a_stored_dag_of_the_older_shape_without_groups_still_loads() -> None:
    data = serialize_dag(_grouped_dag())
    del data["task_groups"]
    for t in data["tasks"]:
        del t["task_group"]
    restored = SerializedDag.from_dict(data)
    assert restored.task_groups == ()
    assert restored.group_path("extract.db.rows") == []
    assert restored.to_dict()["tasks"][0]["task_group"] is None


def test_the_cli_runs_a_grouped_task_by_its_dotted_id(tmp_path: Path) -> None:
    from tests.unit.test_cli import hareflow

    folder = tmp_path / "dags"
    folder.mkdir()
    _write(
        folder,
        """
        from hareflow import TaskGroup, dag, task

        @dag
        def cli_grouped():
            with TaskGroup("extract"):
                @task
                def fetch():
                    return {"rows": [1, 2]}

                fetch()

        cli_grouped()
        """,
    )
    env = {"HAREFLOW_DAGS_FOLDER": str(folder)}

    tested = hareflow("tasks", "test", "cli_grouped", "extract.fetch", env=env)

    assert tested.exit_code == 0, tested.output
    assert json.loads(tested.stdout) == {"rows": [1, 2]}


def test_dag_decorator_errors_in_a_dag_file_name_the_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        from hareflow import dag

        @dag(schedule="@daily", start_date=None)
        def needs_a_start():
            pass

        needs_a_start()
        """,
    )
    [error] = load_dag_file(path).errors
    assert error.file == str(path) and error.line == 8
    assert "has schedule '@daily' but no start_date" in error.message
