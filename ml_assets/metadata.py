"""Metadata a person reads in the Dagster UI, built the same way for every table asset."""

from __future__ import annotations

import base64
from typing import Any

import dagster as dg
import polars as pl


def table_metadata(df: pl.DataFrame, table_uri: str, version: int | None) -> dict[str, Any]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=name, type=str(dtype)) for name, dtype in df.schema.items()])
    return {
        "dagster/row_count": df.height,
        "dagster/column_schema": schema,
        "delta_version": version,
        "delta_table": dg.MetadataValue.path(table_uri),
    }


def markdown_table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def markdown_images(images: dict[str, bytes]) -> str:
    """Markdown with a heading and an inline data-URI image per entry, as Dagster's UI renders
    it in `MetadataValue.md`."""
    parts = []
    for title, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        alt = title.replace("[", "(").replace("]", ")")
        parts.append(f"### {title}\n\n![{alt}](data:image/png;base64,{data})\n")
    return "\n".join(parts)
