"""Euclidean TSP through the diffusion prior (Graikos et al. 2022, section 5)."""
