"""Monitoring: the serving prediction log (next: feature drift and forecast accuracy)."""
