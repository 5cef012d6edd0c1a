"""Measuring: time and peak memory, machine facts, the baselines (torch, no-BLAS, faiss) and the phone benchmark."""
