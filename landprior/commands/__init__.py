"""Click command groups, one module per area; registered in :mod:`landprior.cli`."""
