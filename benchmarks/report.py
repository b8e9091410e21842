"""Turn the JSON lines of ``benchmarks.run`` into the Markdown tables of ``docs/benchmarks.md``.

    python -m benchmarks.run ... > results.jsonl
    python -m benchmarks.report results.jsonl [more.jsonl ...]

Medians are taken over every successful measurement of the same configuration found in all the
files (so several invocations of the same configuration pool their repeats).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _get(rec: dict[str, Any], dotted: str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def _med(recs: list[dict[str, Any]], key: str) -> float | None:
    vals = [v for r in recs if isinstance(v := _get(r, key), int | float)]
    return statistics.median(vals) if vals else None


def _rng(recs: list[dict[str, Any]], key: str, fmt: str) -> str:
    vals = [v for r in recs if isinstance(v := _get(r, key), int | float)]
    if not vals:
        return "–"
    m = statistics.median(vals)
    if len(vals) == 1:
        return format(m, fmt)
    return f"{format(m, fmt)} ({format(min(vals), fmt)}–{format(max(vals), fmt)})"


def load(paths: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    measurements, machines = [], []
    for p in paths:
        for line in p.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type") == "measurement":
                measurements.append(rec)
            elif rec.get("type") == "machine":
                machines.append(rec)
    return measurements, machines


def config_key(r: dict[str, Any]) -> tuple[str, ...]:
    return (
        r["bench"],
        r.get("executor") or "",
        r.get("queue_type") or "-",
        r.get("worker_mode") or "-",
        r.get("database") or "-",
        str(r.get("concurrency") or "-"),
    )


def render(measurements: list[dict[str, Any]], machines: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in measurements:
        if r.get("ok", True):
            groups[config_key(r)].append(r)
    out = []
    chains = {k: v for k, v in groups.items() if k[0] == "chain40"}
    if chains:
        out.append(
            "| executor | queues | workers | db | n | wall s | hop p50 ms | hop p99 ms | hop max ms "
            "| react p50 ms | deliver p50 ms | hops ≥ 0.5 s | bench proc cores | load before |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k, recs in sorted(chains.items()):
            out.append(
                f"| {k[1]} | {k[2]} | {k[3]} | {k[4]} | {len(recs)} | {_rng(recs, 'wall_s', '.3f')} "
                f"| {_rng(recs, 'hop_ms.p50', '.1f')} | {_rng(recs, 'hop_ms.p99', '.1f')} "
                f"| {_rng(recs, 'hop_ms.max', '.1f')} | {_rng(recs, 'hop_react_ms.p50', '.1f')} "
                f"| {_rng(recs, 'hop_deliver_ms.p50', '.1f')} "
                f"| {int(_med(recs, 'hops_near_idle_wait') or 0)} "
                f"| {_rng(recs, 'cpu.bench_process.cores', '.2f')} "
                f"| {_rng(recs, 'load_avg_before.0', '.1f')} |"
            )
        out.append("")
    fans = {k: v for k, v in groups.items() if k[0].startswith("fanout")}
    if fans:
        out.append(
            "| scenario | executor | queues | workers | slots | db | n | tasks/s | run s | middle exec/s "
            "| cores: bench proc / children / pg / rabbit / other | load before |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k, recs in sorted(fans.items(), key=lambda kv: (int(kv[0][0][6:]), kv[0][1:])):
            cores = " / ".join(
                format(_med(recs, f"cpu.{g}.cores") or 0.0, ".2f")
                for g in ("bench_process", "bench_children", "postgres_ours", "rabbitmq", "other")
            )
            out.append(
                f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[5]} | {k[4]} | {len(recs)} "
                f"| {_rng(recs, 'tasks_per_s', '.0f')} "
                f"| {_rng(recs, 'run_s', '.2f')} | {_rng(recs, 'middle_exec_rate_per_s', '.0f')} | {cores} "
                f"| {_rng(recs, 'load_avg_before.0', '.1f')} |"
            )
        out.append("")
    brokers = {k: v for k, v in groups.items() if k[0] == "broker"}
    if brokers:
        out.append(
            "| queues | n | publish_tasks ×2000 msg/s | consume prefetch 8 msg/s "
            "| consume prefetch 2000 msg/s | confirmed result, 1 thread msg/s "
            "| confirmed result, 8 threads msg/s |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for k, recs in sorted(brokers.items()):
            out.append(
                f"| {k[2]} | {len(recs)} | {_rng(recs, 'publish_tasks_batch.msgs_per_s', '.0f')} "
                f"| {_rng(recs, 'consume_prefetch_8.msgs_per_s', '.0f')} "
                f"| {_rng(recs, 'consume_prefetch_2000.msgs_per_s', '.0f')} "
                f"| {_rng(recs, 'publish_result_confirmed_1_thread.msgs_per_s', '.0f')} "
                f"| {_rng(recs, 'publish_result_confirmed_8_threads.msgs_per_s', '.0f')} |"
            )
        out.append("")
    if machines:
        m = machines[0]
        loads = [x["load_avg"][0] for x in machines if x.get("load_avg")]
        out.append(
            f"Machine: {m.get('nproc')} cores ({m.get('cpu')}), {m.get('ram_gib')} GiB RAM, "
            f"RabbitMQ {m.get('rabbitmq')}, "
            f"PostgreSQL {m.get('postgresql')}, Python {m.get('python')}, revision {m.get('revision')}, "
            f"{m.get('date')}; 1-min load average at start of each invocation: {', '.join(map(str, loads))}."
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print(__doc__)
        return 2
    print(render(*load(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
