"""atelier: diffusion-based fashion image synthesis in one package."""

__version__ = "0.1.0"
