"""Where a study's model artifacts live, and what loading the best one says when it can't."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.study.artifacts import artifact_dir
from search.study.storage import StudyError


@pytest.mark.parametrize(
    ("url", "directory", "expected"),
    [
        ("sqlite:///studies/x.db", None, Path("studies/artifacts")),
        ("sqlite:////tmp/a/b.db", None, Path("/tmp/a/artifacts")),
        ("postgresql://u:p@host/db", None, Path("studies/artifacts")),
        ("postgresql://u:p@host/db", Path("/shared/models"), Path("/shared/models")),
        ("sqlite:///:memory:", None, Path("studies/artifacts")),
    ],
)
def test_artifact_dir_is_beside_a_sqlite_study(
    url: str, directory: Path | None, expected: Path
) -> None:
    assert artifact_dir(url, directory) == expected


def test_load_best_says_when_there_is_no_study(tmp_path: Path) -> None:
    from search import load_best

    with pytest.raises(StudyError, match="no study database"):
        load_best("nothing-here", storage=f"sqlite:///{tmp_path / 'none.db'}")
