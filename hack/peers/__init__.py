"""Peers the benchmarks run side by side with ours, built into .peers/ by `make peers`."""
