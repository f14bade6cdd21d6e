"""isthmus benchmarks: `make bench` (``python -m tests.bench``) measures each scenario against etcd itself.

Not part of ``make test``; ``tests/test_bench_smoke.py`` runs every scenario at a tiny size instead.
"""
