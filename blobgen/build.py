"""The blob pipeline: load -> lay out -> relocate -> validate, from a laid-out object to a Blob.

Each stage is a function of the previous stage's frozen result, so a test or
`blobgen inspect` can stop anywhere and every stage can be read alone.
"""

from blobgen.blob import Blob
from blobgen.elf import load
from blobgen.layout import lay_out
from blobgen.relocate import relocate
from blobgen.validate import validate


def build(name: str, path: str, required: tuple[str, ...] = ()) -> Blob:
    return validate(name, relocate(lay_out(load(path))), required)
