"""``hareflow providers``: the installed providers and what each offers."""

from __future__ import annotations

import click

from hareflow.cli.common import CONTEXT_SETTINGS, output_option, print_json, print_table


@click.group(context_settings=CONTEXT_SETTINGS)
def providers() -> None:
    """Providers: packages adding connection types, hooks and task types (hareflow's own first).

    \b
    Example:
      hareflow providers list
    """


def _short(reference: str) -> str:
    return reference.rpartition(":")[2]


@providers.command("list")
@output_option
def providers_list(output: str) -> None:
    """List the installed providers: name, version, connection types, hooks and task types.

    A provider package that fails to load is left out, with a warning on stderr. With
    ``--output json`` hooks and task types are full ``module:Class`` references.

    \b
    Example:
      hareflow providers list --output json
    """
    import logging

    from hareflow.common.providers import providers as installed

    logging.getLogger("hareflow.common.providers").addHandler(logging.StreamHandler())
    found = installed()
    if output == "json":
        print_json(
            [
                {
                    "name": p.name,
                    "version": p.version,
                    "description": p.description,
                    "connection_types": [
                        {
                            "conn_type": ct.conn_type,
                            "label": ct.label,
                            "hook": ct.hook,
                            "testable": ct.test is not None,
                        }
                        for ct in p.connection_types
                    ],
                    "hooks": list(p.hooks),
                    "task_types": list(p.task_types),
                }
                for p in found
            ]
        )
        return
    print_table(
        ["name", "version", "connection types", "hooks", "task types"],
        [
            [
                p.name,
                p.version,
                ", ".join(ct.conn_type for ct in p.connection_types) or "-",
                ", ".join(_short(h) for h in p.hooks) or "-",
                ", ".join(_short(t) for t in p.task_types) or "-",
            ]
            for p in found
        ],
    )
