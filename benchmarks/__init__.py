"""hareflow benchmarks: not tests, they print numbers (one JSON object per line on stdout).

Run ``python -m benchmarks.run --help``; ``docs/benchmarks.md`` records what they measure and the
figures measured so far.
"""
