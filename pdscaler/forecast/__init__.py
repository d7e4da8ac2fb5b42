"""Load forecasting behind the ``Forecaster`` protocol: the baselines, the models, the
online forecaster that fits them off the tick, and the rolling-origin backtest.

An adapter package: it may import ``pdscaler.domain``, numpy and scikit-learn, never the
control loop, the engine or the store. ``registry.forecaster_for`` builds the forecaster a
policy names; it is not imported here, so that importing the baselines does not import
scikit-learn.
"""
