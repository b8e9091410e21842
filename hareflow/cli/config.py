"""``hareflow config show`` and ``hareflow version``."""

from __future__ import annotations

import click

from hareflow.cli.common import CONTEXT_SETTINGS, get_settings, output_option, print_json


@click.group(context_settings=CONTEXT_SETTINGS)
def config() -> None:
    """Inspect the effective configuration.

    \b
    Example:
      hareflow config show -o json
    """


@config.command("show")
@output_option
def config_show(output: str) -> None:
    """Print the effective settings (env over HAREFLOW_CONFIG file over defaults), secrets masked.

    \b
    Example:
      HAREFLOW_BROKER_URL=amqp://u:secret@rabbit/ hareflow config show
    """
    settings = get_settings()
    values = settings.as_display_dict()
    if output == "json":
        print_json(values)
        return
    for key, value in values.items():
        click.echo(f"{key:<32} {value}")


@click.command()
def version() -> None:
    """Print the installed hareflow version.

    \b
    Example:
      hareflow version
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        click.echo(pkg_version("hareflow"))
    except PackageNotFoundError:
        click.echo("unknown (not installed)")
