"""pdscaler: a coordinated prefill/decode autoscaler for disaggregated LLM serving."""

__version__ = "0.1.0"
