"""Task groups as the grid and graph show them, read from a serialized DAG.

A group's state in a run is the state of its most urgent member (``GROUP_STATE_ORDER``: a failure
shows before a retry, a retry before running, ... success only when every member succeeded), the
same rule ``web/static/js/hareflow.js`` applies when events arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GROUP_STATE_ORDER = (
    "failed",
    "upstream_failed",
    "up_for_retry",
    "running",
    "queued",
    "up_for_reschedule",
    "scheduled",
    "none",
    "removed",
    "skipped",
    "success",
)


def groups(serialized: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every group (parents first) with its label, parent, tooltip and all its tasks, nested ones too."""
    tasks_of: dict[str, list[str]] = {}
    parents = {g["group_id"]: g.get("parent") for g in serialized.get("task_groups") or []}
    for t in serialized.get("tasks") or []:
        group_id = t.get("task_group")
        seen: set[str] = set()
        while group_id is not None and group_id not in seen:
            seen.add(group_id)
            tasks_of.setdefault(group_id, []).append(t["task_id"])
            group_id = parents.get(group_id)
    return [
        {
            "id": g["group_id"],
            "label": g.get("label") or g["group_id"],
            "parent": g.get("parent"),
            "tooltip": g.get("tooltip") or "",
            "tasks": tasks_of.get(g["group_id"], []),
        }
        for g in serialized.get("task_groups") or []
    ]


def _path(group_id: str | None, parents: Mapping[str, str | None]) -> list[str]:
    path: list[str] = []
    while group_id is not None and group_id in parents and group_id not in path:
        path.append(group_id)
        group_id = parents[group_id]
    return path[::-1]


def rows(serialized: Mapping[str, Any], task_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The grid's rows: each group heads its members (kept together), in the order tasks first appear.

    Each row is ``{"kind": "group"|"task", "id", "depth", "group"}`` (``group``: the enclosing group)."""
    parents = {g["group_id"]: g.get("parent") for g in serialized.get("task_groups") or []}
    group_of = {t["task_id"]: t.get("task_group") for t in serialized.get("tasks") or []}
    children: dict[str | None, list[tuple[str, str]]] = {}
    opened: set[str] = set()
    for task_id in task_ids:
        container: str | None = None
        for group_id in _path(group_of.get(task_id), parents):
            if group_id not in opened:
                opened.add(group_id)
                children.setdefault(container, []).append(("group", group_id))
            container = group_id
        children.setdefault(container, []).append(("task", task_id))
    out: list[dict[str, Any]] = []

    def walk(container: str | None, depth: int) -> None:
        for kind, node_id in children.get(container, []):
            out.append({"kind": kind, "id": node_id, "depth": depth, "group": container})
            if kind == "group":
                walk(node_id, depth + 1)

    walk(None, 0)
    return out


def group_state(states: Iterable[str | None]) -> str:
    """The state shown for a group whose members are in ``states`` (missing ones count as none)."""
    present = {s or "none" for s in states}
    for state in GROUP_STATE_ORDER:
        if state in present:
            return state
    return sorted(present)[0] if present else "none"


def group_states(
    group_list: list[dict[str, Any]], states: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Run id -> group id -> the group's state in that run."""
    return {
        run_id: {g["id"]: group_state(by_task.get(t) for t in g["tasks"]) for g in group_list if g["tasks"]}
        for run_id, by_task in states.items()
    }
