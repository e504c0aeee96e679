"""Where the workspace lives: --db PATH, else $INFOPRUNE_DB, else ./workspace/infoprune.duckdb."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = Path("workspace") / "infoprune.duckdb"
ENV_DB = "INFOPRUNE_DB"


def resolve_db_path(cli_value: str | os.PathLike | None = None) -> Path:
    """The store path by precedence: explicit value, environment variable, documented default."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DB


def jobs_dir(db_path: Path) -> Path:
    """Logs of background jobs sit beside the store, one folder per store."""
    return db_path.with_name(db_path.name + ".jobs")
