"""Runtime context and templates: a function asks for ``ds`` and ``params`` by name, and a shell
task's command and environment are Jinja2 templates rendered on the worker for each run.

Try it without a scheduler or broker: ``hareflow dags test example_templates --conf '{"region": "eu"}'``.
"""

from datetime import datetime

from hareflow import DAG, BashTask, task

with DAG(
    "example_templates",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"region": "north", "days": 7},
    tags=["example", "templates"],
    description="Context by parameter name and templated shell commands",
):

    @task
    def window(ds, params):
        """The reporting window ending on the run's date, for the region asked for."""
        return {"region": params["region"], "end": ds, "days": params["days"]}

    report = BashTask(
        "report",
        'echo "report for $REGION from {{ macros.ds_add(ds, -params.days) }} to {{ ds }}'
        ' (run {{ run_id }}, try {{ ti.try_number }})"',
        env={"REGION": "{{ params.region }}", "OUT_DIR": "/tmp/reports/{{ ds_nodash }}"},
    )

    window() >> report
