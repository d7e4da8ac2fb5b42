"""Replaying traces on the simulated cluster under pdscaler and under baseline autoscalers."""
