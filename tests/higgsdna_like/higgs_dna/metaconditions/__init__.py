"""Registered metaconditions: name -> JSON file in this package (as in HiggsDNA)."""

metaconditions = {"Era2022_v1": "Era2022_v1.json"}
