"""The stage core: pure state machines (demand, buffer, dispatchers) and the anyio
runtime that moves events between stages. Imports anyio only."""
