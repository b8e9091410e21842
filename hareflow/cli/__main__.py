"""``python -m hareflow.cli``: the same command as the ``hareflow`` console script."""

from hareflow.cli import main

main(prog_name="hareflow")
