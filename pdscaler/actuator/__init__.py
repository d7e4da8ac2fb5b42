"""Actuation behind the ``Actuator`` protocol (the Kubernetes scale subresource)."""
