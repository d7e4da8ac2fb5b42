"""Trace-driven prefill/decode cluster simulator."""
