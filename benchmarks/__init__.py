"""Reference benchmarks of tlcourse's algorithms on real data, set beside published numbers.

Run ``python -m benchmarks --help`` (or ``make benchmarks``). Each benchmark module defines one
:class:`benchmarks.core.Benchmark`: its settings (``smoke`` for the test suite, ``cpu`` for a few
minutes on a laptop, ``full`` for one GPU), a ``run(setting, seed)`` function that returns the
measured metrics of one seed, and the published anchors and targets to compare with. Results are
written as JSON to ``benchmarks/results/`` and gathered into the committed table
``benchmarks/RESULTS.md``.
"""
