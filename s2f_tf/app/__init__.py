"""The applications: the `s2f` command (cli), the demo, the benchmarks. Nothing imports them."""
