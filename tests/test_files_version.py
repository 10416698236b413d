"""An image of format version 1 (fds with same_as, before runtime/files/) is refused with the version message.

Why a fixture: tests/fixtures/image-v1/ is a real `sleep` dumped by the
runtime before the format change (its inventory only: the
version is refused before any other file is opened), so this test fails if
the loader ever reads an old image as the new model.
"""

import shutil
from pathlib import Path

import pytest

from runtime.errors import ImageError
from runtime.images import names
from runtime.images.loader import load

FIXTURE = Path(__file__).parent / "fixtures" / "image-v1"


def test_a_version_1_image_is_refused_naming_both_versions(tmp_path):
    directory = tmp_path / "image"
    shutil.copytree(FIXTURE, directory)
    directory.chmod(0o700)
    with pytest.raises(ImageError) as refused:
        load(directory)
    assert str(refused.value) == f"inventory.json: format_version: unsupported version 1 (this tool reads " \
                                 f"{names.FORMAT_VERSION})"
    assert names.FORMAT_VERSION == 5 and "\n" not in str(refused.value)
