"""Claims in a notebook's prose, computed from the results they rest on.

A ``report`` cell (``notebooks/_src/nbbuild.py``) renders its sentences from variables;
a qualitative word in them -- exact, faster, a gain, a loss, noise -- comes from one of:

* :func:`claim` -- ``claim(cond, "text if true", "text if false")`` picks the sentence the
  result supports; ``claim(cond, "text")`` states ``text`` and *requires* ``cond``;
* :func:`verdict` -- the word a confidence interval supports: a gain, a loss, or noise.

Every call is recorded; the report cell attaches the records to its output
(``metadata["qcnn_claims"]``) and then asserts that every required condition holds, so
executing a notebook whose output contradicts its prose fails, and
``tests/test_notebook_numbers.py`` checks the records of the committed notebooks.
"""
from __future__ import annotations

_ROWS: list[dict] = []

__all__ = ["claim", "verdict", "start", "rows", "failed"]


def start() -> None:
    """Forget earlier records: a report cell calls this first."""
    _ROWS.clear()


def claim(holds, if_true: str, if_false: str | None = None) -> str:
    """``if_true`` when ``holds``, else ``if_false``; with no ``if_false`` the claim must hold."""
    ok = bool(holds)
    required = if_false is None
    text = if_true if ok or required else if_false
    _ROWS.append({"text": text, "condition": ok, "required": required})
    return text


def verdict(lo: float, hi: float, gain: str = "a gain", loss: str = "a loss",
            noise: str = "within the noise") -> str:
    """The reading of a 95 % interval ``[lo, hi]`` of a difference: above 0, below 0, or straddling it."""
    text = gain if lo > 0 else loss if hi < 0 else noise
    _ROWS.append({"text": text, "condition": True, "required": False, "interval": [float(lo), float(hi)]})
    return text


def rows() -> list[dict]:
    """The claims recorded since :func:`start`."""
    return [dict(r) for r in _ROWS]


def failed() -> list[str]:
    """The required claims whose condition is false (empty when the prose is true to the output)."""
    return [r["text"] for r in _ROWS if r["required"] and not r["condition"]]
