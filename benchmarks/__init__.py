"""`make bench`: performance benchmarks with reports under benchmarks/results/."""
