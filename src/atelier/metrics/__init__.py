"""Evaluation metrics that reproduce published protocols (CFLD/MCLD, PIDM, standard, VITON-HD and DressCode as
LaDI-VTON, MGD).

Modules: `ssim` (SSIM/PSNR equal to scikit-image), `lpips` (LPIPS v0.1), `fid` (FID/KID, streamed statistics and
their cache), `nets/` (plain-torch AlexNet, VGG16, Inception-v3 loading the published weight files), `images`
(loading and the protocols' resize recipes), `matching` (generated <-> ground-truth file names), `protocols` (the
named protocols and their exact settings), `evaluate` (the `atelier evaluate` run), `tryon` (DressCode per
category), `mgd` with `garment_data` and `garment` (MGD's garment-design metrics; `nets/openpose` its pose
network), `report` (markdown / JSON),
`retrieval` (Recall@K, FashionIQ, FashionGen), `captions` (BLEU, ROUGE-L, CIDEr-D), `per_image` (the demo's
per-image scores: closeness, garment colour error and mask IoU, caption colour hits) and `paired` (the paired test,
bootstrap interval and sign test, that compares two methods image by image).
Heavy imports stay inside these modules: importing `atelier.metrics` itself is free.
"""
