"""Helpers of `benchmarks/bench_alternatives.py`: the three captioners behind one interface, one shared training
loop, and the speed/memory workers."""
