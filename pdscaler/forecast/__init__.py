"""Load forecasting behind the ``Forecaster`` protocol."""
