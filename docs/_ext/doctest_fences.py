"""A griffe extension for the API reference: fence the doctest examples of docstrings.

The docstrings keep plain ``>>>`` examples (the test suite runs them with
``--doctest-modules``); in the docs site each example becomes a ``pycon`` code block
instead of being read as Markdown (where an output such as ``[10, 11]`` would be a
link). An example runs from a ``>>>`` line to the next blank line, as doctest reads it.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_examples(text: str) -> str:
    """Wrap every doctest example of ``text`` in a fenced ``pycon`` block.

    >>> print(fence_examples("Adds.\\n\\n>>> 1 + 1\\n2\\n\\nDone."))
    Adds.
    <BLANKLINE>
    ```pycon
    >>> 1 + 1
    2
    ```
    <BLANKLINE>
    Done.
    """
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if not inside and line.lstrip().startswith(">>>"):
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest examples of every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and ">>>" in docstring.value:
            docstring.value = fence_examples(docstring.value)
