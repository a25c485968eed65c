"""Alerts at run time: the relational store, the engine that runs the rules, the MQTT relay and
the change feed. The pure parts (event model, taxonomy, life cycle, rules) are in analytics/."""
