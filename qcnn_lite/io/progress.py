"""Progress bars: tqdm when it is installed (notebooks, laptops), a silent stand-in otherwise (phones)."""
from __future__ import annotations

import os
from typing import Any


class _Silent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = 0

    def update(self, k: int = 1) -> None:
        self.n += k

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(total: int | None = None, desc: str = "", enabled: bool = True, **kwargs: Any):
    """A tqdm bar (auto: notebook or terminal) or a no-op; ``QCNN_PROGRESS=0`` silences all bars."""
    if not enabled or os.environ.get("QCNN_PROGRESS", "1") == "0":
        return _Silent()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, desc=desc, leave=kwargs.pop("leave", False), **kwargs)
