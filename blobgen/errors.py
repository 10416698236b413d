"""The one exception of blobgen: a blob that cannot be built or an input that cannot be read.

Every stage raises BlobError with the file it was working on, so the CLI can
print exactly one line and exit with status 2 whatever went wrong.
"""


class BlobError(Exception):
    """A build or read failure; the message names the file and the symbol/field at fault."""

    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")
        self.file = file
        self.message = message
