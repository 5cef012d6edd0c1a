"""The settings explorer's widgets: one (C's, K) slider pair per layer group, a live readout.

:class:`ExplorerUI` only wires ipywidgets to :class:`qcnn_lite.apps.explorer.Explorer`: moving a
slider quantizes (plain product quantization, cached) and refreshes the readout; the
"error correction" button re-quantizes the current settings with error correction. Tests drive
it headless by setting ``ui.sliders[group]["K"].value`` from code and reading ``ui.readout``.
"""
from __future__ import annotations

import html
from typing import Callable

from qcnn_lite.apps.explorer import CODEWORDS, CONV_SUB_DIMS, FC_SUB_DIMS, Explorer, Readout

__all__ = ["ExplorerUI", "readout_html"]


def readout_html(r: Readout) -> str:
    """The readout as the explorer shows it (numbers formatted once, here)."""
    rows = [
        ("storage", f"{r.storage_mib:.4f} MiB (dense {r.dense_mib:.4f} MiB): {r.compression:.2f}x smaller"),
        ("speed-up (cost model)", f"{r.speedup:.2f}x fewer operations"),
        ("time per image (measured)", f"{r.ms_per_image:.3f} ms (dense {r.dense_ms_per_image:.3f} ms)"),
        ("top-1 on the test subset", f"{r.top1:.2f} % (dense {r.dense_top1:.2f} %)"),
        ("quantization", "error correction" if r.corrected else "plain product quantization"),
        ("per layer (C's x K)", ", ".join(f"{n} {d}x{k}" for n, (d, k) in r.settings.items())),
    ]
    body = "".join(f"<tr><td><b>{html.escape(a)}</b></td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f'<table class="qcnn-explorer">{body}</table>'


def _choices(ex: Explorer, group: str) -> tuple[list[int], list[int]]:
    """Slider options the quantizer accepts for every layer of the group (C's narrowed to fit, as it does)."""
    names = ex.groups[group]
    is_fc = all(ex.net.params[n].weight.ndim == 2 for n in names)

    def fits(d: int, k: int) -> bool:
        try:
            ex.layer_plan({g: ((d, k) if g == group else (1, 1)) for g in ex.groups})
        except ValueError:
            return False
        return True

    subs = [d for d in (FC_SUB_DIMS if is_fc else CONV_SUB_DIMS) if fits(d, 2)]
    ks = [k for k in (2,) + CODEWORDS if subs and fits(subs[0], k)]
    if not subs or not ks:
        raise ValueError(f"no (C's, K) setting fits every layer of group {group!r}")
    return subs, ks


class ExplorerUI:
    """Sliders and a readout for an :class:`Explorer`; ``ui.widget`` is what the notebook displays."""

    def __init__(self, ex: Explorer, initial: dict[str, tuple[int, int]] | None = None,
                 on_update: Callable[[Readout], None] | None = None):
        import ipywidgets as w

        self.ex, self.on_update = ex, on_update
        self.sliders: dict[str, dict[str, object]] = {}
        rows = []
        for group in ex.groups:
            subs, ks = _choices(ex, group)
            d0, k0 = (initial or {}).get(group, (subs[min(2, len(subs) - 1)], ks[min(3, len(ks) - 1)]))
            sd = w.SelectionSlider(options=subs, value=d0, description=f"{group} C's", continuous_update=False)
            kk = w.SelectionSlider(options=ks, value=k0, description=f"{group} K", continuous_update=False)
            sd.observe(self._changed, names="value")
            kk.observe(self._changed, names="value")
            self.sliders[group] = {"C's": sd, "K": kk}
            rows.append(w.HBox([sd, kk]))
        self.button = w.Button(description="error correction", tooltip="re-quantize these settings with error correction")
        self.button.on_click(lambda _: self.update(corrected=True))
        self.status = w.HTML()
        self.output = w.HTML()
        self.widget = w.VBox(rows + [w.HBox([self.button, self.status]), self.output])
        self.readout: Readout | None = None
        self.update()

    def settings(self) -> dict[str, tuple[int, int]]:
        return {g: (s["C's"].value, s["K"].value) for g, s in self.sliders.items()}

    def _changed(self, _change) -> None:
        self.update(corrected=False)  # dragging: plain PQ, fast; the button adds error correction

    def update(self, corrected: bool = False) -> Readout:
        self.status.value = "<i>quantizing...</i>"
        self.readout = self.ex.readout(self.settings(), corrected=corrected)
        self.output.value = readout_html(self.readout)
        self.status.value = f"{self.ex.cached} quantized layers cached"
        if self.on_update is not None:
            self.on_update(self.readout)
        return self.readout
