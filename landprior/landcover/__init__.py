"""Geodata and the land-cover method (Graikos et al. 2022, section 4)."""
