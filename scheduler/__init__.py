"""The scheduler: DAG processing, run creation, dependency evaluation, dispatch, results."""
