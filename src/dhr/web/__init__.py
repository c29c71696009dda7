"""Local web UI (gradio, optional): ``dhr serve`` or :func:`dhr.web.app.serve`.

Install the extra first: ``pip install gradio``. The server binds to 127.0.0.1 by default.
"""

from __future__ import annotations

__all__: list[str] = []
