"""The `remove_orphaned_files` job: the data files of Delta writes that died before their commit
(or lost it and died) deleted from every table, weekly (resources/delta_files.remove_orphans)."""

import datetime as dt

import dagster as dg

from resources.delta import DeltaStore


class OrphansConfig(dg.Config):
    # Longer than any write takes from its first file to its commit: younger files may be a
    # running write's.
    retention_hours: float = 7 * 24


@dg.op(description="Deletes each Delta table's files that no commit mentions and that are older "
                   "than the retention; files older versions read are vacuum's, not touched.")
def remove_orphans(context: dg.OpExecutionContext, config: OrphansConfig,
                   delta: DeltaStore) -> None:
    retention = dt.timedelta(hours=config.retention_hours)
    for table in delta.tables():
        removed = delta.remove_orphans(table, retention)
        context.log.info("%s: %d orphaned files removed", table, len(removed))


@dg.job(description="Deletes the files of Delta writes that never committed (a killed run).")
def remove_orphaned_files() -> None:
    remove_orphans()


weekly_orphan_removal = dg.ScheduleDefinition(
    name="weekly_orphan_removal", job=remove_orphaned_files, cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Sundays at 03:00, files older than a week only.")
