"""Virtual try-on and garment design (UniFashion's generation module, a StableVITON fork): network, model, training, sampling."""
