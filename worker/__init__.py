"""The worker: consumes task messages, runs them in a pool of child processes, reports results."""
