"""Findings: experiments that measure a choice and write its results (`python -m experiments.NAME` from the
repository root)."""
