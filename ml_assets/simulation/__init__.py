"""Synthetic retail world: the platform's default, deterministic data source."""

from ml_assets.simulation.world import SALES_SCHEMA, Scenario, World, WorldConfig

__all__ = ["SALES_SCHEMA", "Scenario", "World", "WorldConfig"]
