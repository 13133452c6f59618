"""Benchmarks and measurements of the service and the model, run from the repository root as
``python -m bench.<name>`` (``--help`` says what each measures). They share ``bench.common`` alone and
use the service's and the model's public functions; nothing in the service or the model imports them.
Their figures live in ``bench/results/``."""
