"""CFLD (Lu et al., CVPR 2024), one module per part: appearance (Swin backbone), decoder (perception-refined decoder),
hybrid_attention (hybrid-granularity attention), pose_adapter, model (assembly around the UNet, null prompt, query-bias
attention processors) and checkpoint (official Swin and CFLD release layouts, atelier's folder)."""
