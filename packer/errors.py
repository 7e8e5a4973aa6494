"""Errors raised at packer's boundaries."""

from __future__ import annotations

__all__ = ["PackerError", "InputError"]


class PackerError(Exception):
    """Base class for errors packer raises on purpose."""


class InputError(PackerError, ValueError):
    """Bad user input: the message names the field, the value and the fix, in one line."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self):
        # picklable with both arguments, so an error raised in a worker process reaches the caller intact
        return (type(self), (self.field, self.detail))
