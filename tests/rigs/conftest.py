"""Simulated foreign rigs (cases in rig_cases.py)."""
