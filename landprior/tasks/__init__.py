"""Tasks on the shared engine (MNIST, faces, TSP). Tasks never import each other."""
