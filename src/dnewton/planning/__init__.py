"""The cost model and the planner: what a layout costs per Newton iteration
(seconds, bytes, memory per rank) and which to take (docs/scaling.md)."""
