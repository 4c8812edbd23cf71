"""One parser of ``--database`` for every store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierserve.errors import InvalidInput
from tierserve.storage.database import parse_database


def test_empty_means_sqlite_files_in_the_state_directory(tmp_path: Path) -> None:
    where = parse_database("", tmp_path)
    assert not where.is_postgres
    assert where.jobs_file == tmp_path / "jobs.db"
    assert where.sqlite_file("security.db") == tmp_path / "security.db"


def test_a_sqlite_path_names_the_job_database_and_the_others_sit_beside_it(tmp_path: Path) -> None:
    where = parse_database("sqlite:////srv/state/main.db", tmp_path)  # SQLAlchemy's form: 4 slashes
    assert where.jobs_file == Path("/srv/state/main.db")
    assert where.sqlite_file("security.db") == Path("/srv/state/security.db")
    assert parse_database("sqlite:///state/main.db", tmp_path).jobs_file == Path("state/main.db")


def test_postgres_urls_are_shared(tmp_path: Path) -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert parse_database(url, tmp_path).postgres_url == url


@pytest.mark.parametrize("bad", ["mysql://x", "sqlite://relative.db", "sqlite:///", "jobs.db"])
def test_anything_else_is_refused_with_the_forms_it_may_take(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInput, match="--database"):
        parse_database(bad, tmp_path)
