"""Typed errors. Every message is one line that names the file or setting and the fix.

The CLI turns any :class:`RamtagError` into one red line and its ``exit_code`` (1; 2 for usage
errors) in ``ramtag.cli.app.main``; library users catch the subclass they care about.
"""

from __future__ import annotations

import re

# C0/C1 control characters (ESC starts terminal escape sequences), DEL, lone surrogates (undecodable
# bytes of a file name), and the bidirectional overrides that can make a name read backwards.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNPRINTABLE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` safe to show on a terminal or in a log: control and escape characters, bidi overrides
    and lone surrogates become visible ``\\x1b`` / ``\\u202e`` escapes; everything else is kept as is.

    Use it wherever text from outside (file names, LLM answers, tag files, server messages) is printed.
    """
    pattern = _UNPRINTABLE_KEEP_NL if keep_newlines else _UNPRINTABLE
    return pattern.sub(_escape_char, str(text))


class RamtagError(Exception):
    """Base class of every error ramtag raises on purpose (bad input, missing weights, ...)."""

    exit_code: int = 1


class UsageError(RamtagError):
    """The command line or API call itself is wrong (conflicting options, bad values)."""

    exit_code = 2


class InputError(RamtagError):
    """A user-supplied file (image, list, config) is missing, unreadable or malformed."""


class ImageDecodeError(InputError):
    """One image could not be decoded; the run skips it and goes on."""


class WeightsError(RamtagError):
    """Named weights are unknown, not downloaded, or their files are inconsistent."""


class UnknownWeightsError(WeightsError, UsageError):
    """A weights or text-encoder name that is neither registered, installed nor a folder: a usage
    error (exit 2), still caught as :class:`WeightsError`."""


class CheckpointError(WeightsError):
    """A checkpoint's keys or shapes do not match the architecture (message lists the keys)."""


class VocabularyError(WeightsError):
    """A tag list, Chinese tag list or threshold list is malformed or has the wrong length."""


class DownloadError(RamtagError):
    """A download failed (network, HTTP status, checksum mismatch)."""


class OfflineError(DownloadError):
    """A file is needed but not cached, and downloads are disabled (HF_HUB_OFFLINE / RAMTAG_OFFLINE)."""


class LLMError(RamtagError):
    """The OpenAI-compatible LLM server could not be used (connection, auth, model, answers)."""


class SidecarError(RamtagError):
    """An existing XMP sidecar cannot be merged safely (not valid XML); it is left untouched."""


class OutputError(RamtagError):
    """A file could not be written (disk full, permission, name too long, unsafe link); the run goes on."""

    @classmethod
    def from_os(cls, e: OSError, path: object, what: str = "cannot write it") -> OutputError:
        """One line naming ``path`` and the cause of ``e`` in words."""
        return cls(f"{printable(path)}: {what} ({os_cause(e)})")


def os_cause(e: OSError) -> str:
    """The cause of an OSError in words a user can act on (errno names are not)."""
    import errno

    causes = {
        errno.ENOSPC: "disk full",
        getattr(errno, "EDQUOT", -1): "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "read-only file system",
        errno.ENAMETOOLONG: "file name too long",
        errno.ENOENT: "folder or file does not exist",
        errno.EIO: "input/output error",
    }
    cause = causes.get(e.errno or 0) or e.strerror or type(e).__name__
    return printable(cause)


class ExiftoolError(RamtagError):
    """exiftool is missing, failed, or timed out while embedding metadata."""


class TrainingError(RamtagError):
    """Training data or training options are unusable."""
