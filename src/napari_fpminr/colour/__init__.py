"""Colour z-stacks: red, green and blue acquisitions of one field as one registered colour model.

Qt-free core; sits beside ``tiles``/``volume`` (it uses ``io`` for files and ``recon`` to solve).
"""
