"""Keep the server's file paths out of what clients read.

Libraries name the file they failed on: FFmpeg's errors end in "...processing input:
'<temp dir>/atelier-probe-...'", so an error detail built from one shows where and under which
names the server spools uploads. Every problem detail and stored job error passes through
`without_paths`, which keeps the library's words and drops the path.
"""

from __future__ import annotations

import re
import tempfile
from functools import lru_cache


@lru_cache(maxsize=1)
def _pattern() -> re.Pattern[str]:
    roots = sorted({tempfile.gettempdir(), "/tmp", "/var/tmp"}, key=len, reverse=True)
    alternatives = "|".join(re.escape(root.rstrip("/")) for root in roots)
    # An optional ": " before the path, optional quotes around it, and the path itself.
    return re.compile(rf"(?::\s*)?(['\"]?)(?:{alternatives})/[^\s'\"]*\1")


def without_paths(text: str) -> str:
    """`text` with every temporary-file path (and the ": " that introduced it) removed."""
    return re.sub(r"(?<=\S)  +(?=\S)", " ", _pattern().sub("", text))
