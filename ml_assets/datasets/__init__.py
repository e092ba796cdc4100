"""Builders that turn public retail data shipped in installed packages into the raw contract's
files (examples/datasets/*.yaml read them), so a developer has real data without a download."""
