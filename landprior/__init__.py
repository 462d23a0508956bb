"""landprior: denoising diffusion models as plug-and-play priors (Graikos et al. 2022)."""

__version__ = "0.1.0"
