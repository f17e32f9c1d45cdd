"""Is there nothing to index? Answered from file sizes and mtimes alone, in milliseconds.

`rci index` asks before it starts a Prefect flow run: importing Prefect and starting its
temporary server costs about 4.5 s on 2 cores, far more than finding out that nothing
changed. Any doubt (a file touched, added or deleted; another model or version; a run that
died midway; a file that could not be read last time) answers "no", and the flow does the
real work.
"""

from __future__ import annotations

from tasks.commit import Manifest, incompatibility, load_manifest
from tasks.discover import Discovery
from tasks.embed import resolve_model
from tasks.merkle import Snapshot, load_snapshot
from tasks.records import FileIssue
from tasks.settings import CodebaseLayout, Settings
from tasks.stats import IndexStats


def changes_since_snapshot(
    layout: CodebaseLayout, found: Discovery, previous: Snapshot | None = None, first_only: bool = False
) -> list[str]:
    """Files added, changed (size or mtime) or deleted since the last run's snapshot, by path;
    every file when there is no snapshot. `first_only`: stop at the first one."""
    previous = previous or load_snapshot(layout.snapshot_path)
    if previous is None:
        return [source.rel_path for source in found.files]
    known = {**{path: failure.leaf for path, failure in previous.failed.items()}, **previous.leaves}
    changed = []
    for source in found.files:
        leaf = known.pop(source.rel_path, None)
        if leaf is None or leaf.size != source.size or leaf.mtime_ns != source.mtime_ns:
            changed.append(source.rel_path)
            if first_only:
                return changed
    return changed + sorted(known)  # the rest were deleted


def up_to_date(layout: CodebaseLayout, settings: Settings, found: Discovery) -> IndexStats | None:
    """The run's stats if the index already matches the files, else None."""
    manifest = load_manifest(layout.manifest_path)
    if manifest is None or layout.bulk_state_path.exists() or layout.unfinished_path.exists():
        return None  # no index, or a run died midway: the flow repairs it
    wanted = Manifest.for_run(layout, resolve_model(settings), manifest.model_dim, settings.qdrant_url)
    if incompatibility(manifest, wanted):
        return None  # the flow stops with the explanation
    previous = load_snapshot(layout.snapshot_path)
    if previous is None or changes_since_snapshot(layout, found, previous, first_only=True):
        return None
    from tasks.tantivy_store import TantivyStore

    stats = IndexStats(
        directory=str(layout.root),
        codebase_id=layout.codebase_id,
        data_dir=str(layout.data_dir),
        mode="up-to-date",
        files_total=len(found.files),
        files_unchanged=len(previous.leaves),
        chunks_total=TantivyStore.open_existing(layout.tantivy_dir).count(),
    )
    stats.skip(found.skipped)
    stats.skip([FileIssue(path, failure.reason, retry=False) for path, failure in sorted(previous.failed.items())])
    return stats
