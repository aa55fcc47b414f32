"""Test helpers (not shipped): `pytest` finds them through ``pythonpath = tests`` in setup.cfg."""
