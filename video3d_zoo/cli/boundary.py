"""The command line's error boundary: user errors as one line and exit 2, bugs with their traceback."""

from __future__ import annotations

import sys
from typing import Callable

from ..errors import Video3DZooError


def guarded(command: str, call: Callable[[], int], one_line: bool = False) -> int:
    """``call()``'s exit status.  A :class:`~video3d_zoo.errors.Video3DZooError` or an OSError naming a file
    prints ``video3d-zoo COMMAND: error: ...`` (the first line; more lines indented, or joined with
    ``one_line``) and gives 2; a closed pipe 141; Ctrl-C 130; any other exception keeps its traceback, says it
    is a bug and gives 1."""
    try:
        return call()
    except BrokenPipeError:  # whoever read stdout went away (``| head``): nothing of ours went wrong
        _silence_stdout()
        return 141
    except Video3DZooError as exc:  # an error may carry its advice as commands (cli_message) besides Python
        message = getattr(exc, "cli_message", None) or str(exc)
        if one_line:
            message = " ".join(message.split())
        return _user_error(command, message)
    except OSError as exc:
        if exc.filename is None and not isinstance(exc, (PermissionError, FileNotFoundError)):
            return _internal_error(command)
        return _user_error(command, _describe_os_error(exc))
    except KeyboardInterrupt:
        print(f"video3d-zoo {command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        return _internal_error(command)


def _user_error(command: str, message: str) -> int:
    first, *rest = message.strip().splitlines() or ["(no message)"]
    print(f"video3d-zoo {command}: error: {first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}", file=sys.stderr)
    return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail once more."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        pass


def _describe_os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    return f"{where}{reason}"


def _internal_error(command: str) -> int:
    import traceback

    from ..version import __version__

    traceback.print_exc()
    print(f"video3d-zoo {command}: internal error - this is a bug in video3d_zoo {__version__}, not a problem "
          "with your input; please report it with the traceback above", file=sys.stderr)
    return 1


