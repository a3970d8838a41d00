import sqlite3
from pathlib import Path


def measurement_rows(db: Path) -> dict:
    """(subnet, precision) -> creation time of every row of a search's measurement store ({} before it exists)."""
    try:
        with sqlite3.connect(db, timeout=30) as c:
            return {(s, p): t for s, p, t in c.execute("select subnet, precision, created from edgedet_measurements")}
    except sqlite3.OperationalError:
        return {}
