"""Simulated kitchens and street cameras that speak the MQTT contract (docs/mqtt-contract.md).

The pure models (`kitchen`, `street`, `faults`) give each sensor's values as a function of the
simulated time; `fleet` publishes them over MQTT; `python -m simulators` runs a fleet.
"""
