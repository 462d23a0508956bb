"""Euclidean TSP through the diffusion prior (Graikos et al. 2022, section 5).

Modules (each importable on its own; tasks never import each other):

* :mod:`~landprior.tasks.tsp.data` - instances (seeded, Kool et al. test sets), the text
  format ``x1 y1 ... xn yn output t1 ... tn t1`` and TSPLIB readers, tour lengths.
* :mod:`~landprior.tasks.tsp.solvers` - reference tours (fast-tsp; elkai optional), parallel
  and cached.
* :mod:`~landprior.tasks.tsp.render` - the image f(A) from precomputed sparse edge rasters,
  training images of solved tours and the dataset builder.
* :mod:`~landprior.tasks.tsp.adjacency` - A = S + S^T, S = row-softmax(L / tau).
* :mod:`~landprior.tasks.tsp.extract` - greedy edge insertion, batched exact 2-opt, baselines.

Seam for the diffusion solver: per batch of equal-size instances ``points`` (B, n, 2),
``rasters = render.edge_rasters(points)``, ``L = adjacency.init_logits(B, n)``, optimise L
with the engine's latent variant on ``x = render.image_from_logits(rasters, L)``, then
``extract.tours_from_adjacency(adjacency.adjacency_from_logits(L), points)``.
"""
