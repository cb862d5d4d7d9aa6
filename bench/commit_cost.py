"""Cost of one SQLite commit of a request's claim, ``synchronous=FULL`` against ``NORMAL``.

Run: ``.venv/bin/python -m bench.commit_cost [--commits 300] [--dir DIR]``. A WAL database
in ``DIR`` (default: a temporary directory — put it on the disk the store will use), one
claim-sized row per transaction, as :mod:`bus.store.sqlite_batch` commits a batch of one.
CPU is the process's (user + system: the kernel's fsync work counts), wall the caller's
wait. A synchronous request's claim with its STARTED record commits ``NORMAL`` since issue
14 (``MessageWrite.lasting``); its answer with the final record stays ``FULL``.

Then the store's own path for such a commit (:class:`bus.store.sqlite.SqliteStore`, a
real claim, one per group commit, on uvloop): through aiosqlite's thread (``hop``: every
commit before this cut) against on the event loop's thread (``inline``:
``SqliteStore._run_batch`` for a commit that does not wait for the disk), interleaved.
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import tempfile
import time
from pathlib import Path

import uvloop


def per_commit(path: Path, synchronous: str, commits: int, run: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per commit of one row under ``synchronous``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS claims (k TEXT PRIMARY KEY, v BLOB)")
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO claims VALUES (?, ?)", (f"{synchronous}-{run}-{i}", b"x" * 600)
            )
            conn.execute("COMMIT")
        return (
            (time.perf_counter() - wall) / commits * 1e6,
            (time.process_time() - cpu) / commits * 1e6,
        )
    finally:
        conn.close()


async def store_path(path: Path, commits: int) -> list[tuple[str, float, float]]:
    """(path, wall µs, CPU µs) per relaxed claim commit, hop and inline, two rounds each."""
    from bus.store.sqlite import SqliteStore
    from bus.store.sqlite_batch import _commit_all, claim

    store = SqliteStore(path)
    await store.connect()
    rows: list[tuple[str, float, float]] = []
    try:
        for run in range(2):
            for name in ("hop", "inline"):
                wall, cpu = time.perf_counter(), time.process_time()
                for i in range(commits):
                    op = claim("bench", f"{name}-{run}-{i}", "h" * 64, 600.0)
                    batch = functools.partial(_commit_all, ops=[op], relax=True)
                    if name == "hop":
                        await store._on_thread(batch)
                    else:
                        await store._run_batch(batch, True)
                rows.append(
                    (
                        name,
                        (time.perf_counter() - wall) / commits * 1e6,
                        (time.process_time() - cpu) / commits * 1e6,
                    )
                )
    finally:
        await store.aclose()
    return rows


def main() -> None:
    """Print wall and CPU µs per commit for FULL and NORMAL, twice, interleaved."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commits", type=int, default=300, help="commits per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "commits.sqlite3"
        print(f"{'synchronous':12} {'wall µs':>9} {'CPU µs':>9}")
        for run in range(2):
            for mode in ("FULL", "NORMAL"):
                wall, cpu = per_commit(path, mode, args.commits, run)
                print(f"{mode:12} {wall:9.0f} {cpu:9.0f}")
        print(f"\n{'store path':12} {'wall µs':>9} {'CPU µs':>9}   (relaxed claim commit)")
        for name, wall, cpu in uvloop.run(
            store_path(Path(tmp) / "store.sqlite3", args.commits * 10)
        ):
            print(f"{name:12} {wall:9.0f} {cpu:9.0f}")


if __name__ == "__main__":
    main()
