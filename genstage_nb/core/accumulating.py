"""The accumulating role of ``Process``: GenStage's ``demand: :accumulate`` mode.

A producer in ``"accumulate"`` mode keeps the demand it is asked for (and a
producer-consumer's events made meanwhile) in ``accumulated`` until it is set back to
``"forward"``; then the events kept are dispatched in the order they were made, and
then the demand kept is served.
"""

from __future__ import annotations

from typing import Any

from .roles import Role


class Accumulating(Role):
    """The accumulating role of ``Process`` (producers)."""

    accumulating: bool
    accumulated: list[tuple[str, Any]]  # ("demand", n) or ("dispatch", events)

    def _init_accumulating(self, stage: Any) -> None:
        """The stage's demand mode at the start, nothing accumulated."""
        self.accumulating = getattr(stage, "_demand_mode", "forward") == "accumulate"
        self.accumulated = []

    def _accumulated_events(self) -> int:
        """Events made and kept back by the accumulate mode."""
        return sum(len(e) for kind, e in self.accumulated if kind == "dispatch")

    def _take_accumulated(self) -> list:
        """Remove and return the events kept back (the demand kept goes with them)."""
        made: list = []
        for kind, value in self.accumulated:
            if kind == "dispatch":
                made.extend(value)
        self.accumulated.clear()
        return made

    def _stop_accumulating(self) -> None:
        """A stop request: the demand kept is let go, the events kept are dispatched."""
        self.accumulating = False
        pending, self.accumulated = self.accumulated, []
        for kind, value in pending:
            if kind == "dispatch":
                self._dispatch(value)

    def set_demand_mode(self, mode: str) -> None:
        """Switch a running stage's demand mode (``Stage.demand_mode``)."""
        self.post(self._on_demand_mode, mode)

    def preset_demand_mode(self, mode: str) -> None:
        """The demand mode of a stage that has not started yet."""
        self.accumulating = mode == "accumulate"

    async def _on_demand_mode(self, mode: str, _: Any) -> None:
        if mode == "accumulate":
            self.accumulating = True
            return
        self.accumulating = False
        kept, self.accumulated = self.accumulated, []
        # The events already made go first, in the order they were made; then the
        # demand kept is served (what it makes is newer than all of them).
        pending = [entry for entry in kept if entry[0] == "dispatch"]
        pending += [entry for entry in kept if entry[0] == "demand"]
        for i, (kind, value) in enumerate(pending):
            try:
                if kind == "dispatch":
                    self._dispatch(value)
                else:
                    more = self._on_demand(value)
                    if more is not None:
                        await more
            except Exception:
                # What is left is released after the restart (or the resume) all the same.
                rest = pending[i + 1 :]
                if rest:
                    self.accumulated = rest + self.accumulated
                    self.mailbox.appendleft((self._on_demand_mode, "forward", None))
                raise


__all__ = ["Accumulating"]
