"""The running service: `mingliang.py` assembles it from its parts."""
