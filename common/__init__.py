"""Shared core of hareflow: configuration, metastore, DAG model, messages, broker adapters, states.

Nothing here imports the scheduler, worker or web packages.
"""
