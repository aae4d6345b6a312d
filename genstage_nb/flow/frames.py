"""A flow's results as a pandas DataFrame (``Flow.to_frame``, ``Flow.show``)."""

from __future__ import annotations

from typing import Any

from .window import WindowResult


def frame_of(results: list, shape: str) -> Any:
    import pandas as pd

    if shape == "records" and all(isinstance(r, WindowResult) for r in results):
        return pd.DataFrame(
            {
                "window_start": [r.window[0] for r in results],
                "window_end": [r.window[1] for r in results],
                "key": [r.key for r in results],
                "value": [r.value for r in results],
                "final": [r.final for r in results],
            }
        )
    if shape == "pairs":
        return pd.DataFrame(results, columns=["key", "value"])
    if shape == "join":
        return pd.DataFrame(results, columns=["left", "right"])
    if results and all(isinstance(r, dict) for r in results):
        return pd.DataFrame.from_records(results)
    return pd.DataFrame({"value": results})


__all__ = ["frame_of"]
