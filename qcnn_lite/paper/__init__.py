"""The paper's facts: its settings and reported numbers, and its cost model (FLOPs and bytes)."""
