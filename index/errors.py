"""Exceptions raised by the index package. Catch ``ItemIndexError`` for all of them."""


class ItemIndexError(Exception):
    """Base class of every error raised by ``index/``."""


class IndexFileError(ItemIndexError):
    """A saved index file is missing, truncated, corrupted or not an index file.

    The message always names the file.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"index file {self.path!r}: {reason}")
