"""MCLD (multi-focal conditioned latent diffusion, CVPR 2025), one module per part: pose_guider (DensePose IUV ->
conv_in features), projector (Perceiver resampler: ArcFace embedding -> face tokens), reference (reference UNet tokens
in the denoiser's self-attention), attention (per-stage CLIP contexts and face tokens in the cross-attention),
network (MCLDNet, the assembly), clip_image (the frozen CLIP image encoder) and release (the authors' checkpoint files)."""
