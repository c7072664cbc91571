"""Where an upload's bytes wait while its request is read: ``UPLOAD_FOLDER`` (``uploads/``), not the temp folder.

Werkzeug keeps a form's file in memory up to 500 kB and spills the rest to a temporary file; by default that file is
made in ``/tmp``, which is often a small RAM disk in containers, shared with everything else on the machine. Here it
is made in ``UPLOAD_FOLDER``, a folder the operator sizes and mounts for uploads. The file is unlinked as soon as it
is made (``tempfile.SpooledTemporaryFile``), so the kernel frees it when the request ends, whatever way it ends:
nothing is left to sweep, and nobody else can open it.
"""

from __future__ import annotations

import tempfile
from typing import IO

from flask import Request, current_app

IN_MEMORY_BYTES = 500 * 1024  # Werkzeug's own threshold


class SpoolingRequest(Request):
    """A request whose uploaded files spill to ``UPLOAD_FOLDER``."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES, mode="rb+",
                                             dir=current_app.config["UPLOAD_FOLDER"])
