"""The generic training tasks (autoencoder, text2img); each method's own task lives in atelier.methods.<name>.train,
and atelier.registry maps a config's `task:` value to all of them."""
