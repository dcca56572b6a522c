"""Sweeps: T × λ × size × seeds grids, their executors (in-process, Ray) and results."""
