"""Operator simulators served over HTTPS on loopback, deterministic from a seed."""
