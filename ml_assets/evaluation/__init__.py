"""Evaluation: forecast metrics, origin-only baselines and rolling-origin backtests."""
