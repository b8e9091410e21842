"""Retries and trigger rules: a flaky task fails its first try and succeeds on the second.

A cleanup task runs whatever happened (all_done); an alert runs only if something failed
(one_failed) and is skipped otherwise.
"""

from datetime import datetime, timedelta

from hareflow import DAG, BashTask, TaskFailed, task

with DAG(
    "example_retries",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "retries"],
):

    @task(retries=2, retry_delay=timedelta(seconds=2), retry_exponential_backoff=True)
    def flaky(ctx):
        """Fail on the first try to show a retry, succeed afterwards."""
        if ctx.try_number == 1:
            raise TaskFailed("the upstream API timed out (first try always fails here)")
        return {"succeeded_on_try": ctx.try_number}

    @task
    def use_result(outcome):
        """Runs after the flaky task finally succeeded."""
        print(f"flaky succeeded on try {outcome['succeeded_on_try']}")
        return outcome["succeeded_on_try"]

    @task(trigger_rule="one_failed")
    def alert():
        """Only runs when something upstream failed for good."""
        print("something failed, paging the on-call person")

    cleanup = BashTask("cleanup", "echo cleaning up temporary files", trigger_rule="all_done")

    result = flaky()
    used = use_result(result)
    used >> [cleanup, alert()]
