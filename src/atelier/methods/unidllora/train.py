"""Task `dual-lora`: Uni-DlLoRA (Liao et al. 2024) training on paired photos and illustrations.

Data: two folders whose images share file names (FashionSynth's style/photo and style/illustration, or any pair);
each photo is paired with the illustration of the same name (relative path without suffix).
Models: the frozen base UNet, VAE and text encoder; a `real` and an `illustration` LoRA over the UNet's attention
projections (atelier.methods.unidllora.dual_lora); the Uni-adapter (two T2I-Adapters, RGB + sketch; atelier.methods.unidllora.uni_adapter).
Where the paper and released code are silent, these are the choices made here:
- Alternation: optimizer steps cycle through `domain_order` (default illustration, real, illustration, ...); a step
  of domain D activates only D's LoRA and denoises D's latents (photo latents for `real`, illustration latents for
  `illustration`). The domain is a function of the step the loop passes, so resume is exact.
- The adapters see the photo and its sketch in both domains (what they see at inference), and train on every step
  with the active LoRA: they learn the content, the LoRAs the domain. Their weights split `adapter.scale` as at
  inference (0.5 / 0.5 by default).
- Every step uses the fixed `prompt` (empty by default, as the paper samples); no captions.
- `init_illustration_lora` may start the illustration LoRA from an existing diffusers-format LoRA (a style LoRA).
Cached once: VAE posteriors of photos and illustrations (and flips), the adapters' inputs (RGB and sketch, uint8),
the prompt's embedding. Output: RUN/final/ with lora/real/, lora/illustration/ (diffusers LoRA format), adapter/ and
adapter_1/ (diffusers T2IAdapter), sketch.json (the extractor) and pidnet/ when PiDiNet made the sketches.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig, to_dict
from atelier.diffusion.components import SDComponents
from atelier.diffusion.encode import encode_prompts
from atelier.diffusion.lora import LoraSettings, lora_parameters
from atelier.errors import UserError
from atelier.methods.unidllora.dual_lora import (
    DOMAINS,
    PAPER_WEIGHTS,
    add_dual_lora,
    save_dual_lora,
    set_domain_weights,
)
from atelier.methods.unidllora.sketch import PIDINET_FOLDER, SketchSettings, make_sketcher, pidinet_weight_file
from atelier.methods.unidllora.uni_adapter import (
    UniAdapter,
    UniAdapterSettings,
    branch_weights,
    build_uni_adapter,
    load_uni_adapter,
)
from atelier.training.base import TaskBase, filter_listed
from atelier.training.cache import encode_latents, load_images
from atelier.training.losses import DiffusionLossConfig, denoising_loss
from atelier.utils.io import write_json

logger = logging.getLogger(__name__)

SKETCH_FILE = "sketch.json"


@dataclass
class PairedDataConfig:
    """Two folders of images with matching file names: photos (real domain) and their illustrations."""

    real_root: str = ""
    illustration_root: str = ""
    list_file: str | None = None  # optional file of names (one per line) restricting the pairs, e.g. style/train.lst
    resolution: tuple[int, int] = (64, 48)  # (height, width); multiples of the adapter's total downscale
    flip: bool = False  # horizontal flips of every pair (cached too)
    max_images: int | None = None


@dataclass
class DualLoraSampleConfig:
    count: int = 4  # training photos translated at each sample step
    steps: int = 50
    strength: float = 0.7
    guidance_scale: float = 5.0


@dataclass
class DualLoraConfig:
    task: Literal["dual-lora"] = "dual-lora"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PairedDataConfig = field(default_factory=PairedDataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    init_illustration_lora: str | None = None
    adapter: UniAdapterSettings = field(default_factory=UniAdapterSettings)
    sketch: SketchSettings = field(default_factory=SketchSettings)
    domain_order: list[str] = field(default_factory=lambda: ["illustration", "real"])
    prompt: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sample: DualLoraSampleConfig = field(default_factory=DualLoraSampleConfig)


def read_pairs(data: PairedDataConfig) -> list[tuple[Path, Path]]:
    """(photo, illustration) file pairs matched by relative path without suffix, restricted by list_file/max_images."""
    from atelier.data.formats.captioned import list_images

    roots = {"data.real_root": data.real_root, "data.illustration_root": data.illustration_root}
    for flag, root in roots.items():
        if not root or not Path(root).is_dir():
            raise UserError(f"{flag} {root!r} is not a folder; set it to the photo / illustration folder "
                            "(e.g. runs/demo/data/style/photo and runs/demo/data/style/illustration)")
    real, drawn = ({file.relative_to(root).with_suffix(""): file for file in list_images(Path(root))} for root in roots.values())
    real = dict(filter_listed(real.items(), data.list_file, lambda pair: pair[1]))
    unmatched = sorted(str(key) for key in real if key not in drawn)
    if unmatched:
        raise UserError(f"{len(unmatched)} photos in {data.real_root} have no illustration of the same name in "
                        f"{data.illustration_root} (first: {unmatched[0]}); add them or restrict the pairs with data.list_file")
    pairs = [(real[key], drawn[key]) for key in sorted(real)][: data.max_images]
    if not pairs:
        raise UserError(f"data.real_root {data.real_root}: no image pairs to train on (check data.list_file)")
    return pairs


class DualLoraTask(TaskBase):
    """Alternating real / illustration LoRA steps on a shared frozen UNet, with the Uni-adapter trained on every step."""

    retired_keys = frozenset({"schedule.micro_steps"})  # older checkpoints' step counter (now the loop passes the step)

    def __init__(self, cfg: DualLoraConfig, components: SDComponents | None = None, device: str | torch.device | None = None):
        unknown = [domain for domain in cfg.domain_order if domain not in DOMAINS]
        if unknown or not cfg.domain_order:
            raise UserError(f"domain_order {cfg.domain_order}: expected a non-empty list of {' and '.join(DOMAINS)}")
        if cfg.lora.text_encoder:
            raise UserError("lora.text_encoder: the dual LoRA covers the UNet only (the paper's setting); set it to false")
        super().__init__(cfg, components, device, frozen=("unet", "vae", "text_encoder"))
        unet = self.components.unet
        init = {"illustration": cfg.init_illustration_lora} if cfg.init_illustration_lora else None
        add_dual_lora(unet, cfg.lora, seed=cfg.train.seed, init_from=init)
        unet.train()
        scale = self.components.latent_scale
        if cfg.adapter.init_from:
            adapter = load_uni_adapter(cfg.adapter.init_from, unet, scale)
        else:
            adapter = build_uni_adapter(unet, scale, cfg.adapter.num_res_blocks, seed=cfg.train.seed)
        self.uni = UniAdapter(adapter.to(self.device).train().requires_grad_(True), make_sketcher(cfg.sketch))
        self.weights = branch_weights(cfg.adapter.scale, cfg.adapter.weights)
        self._cache()

    def _cache(self) -> None:
        """Encode every pair (and its flip) once: both domains' latents and the adapters' uint8 inputs."""
        data = self.cfg.data
        pairs = read_pairs(data)
        photos = load_images([real for real, _ in pairs], data.resolution, flip=data.flip, desc="load photos")
        drawings = load_images([drawn for _, drawn in pairs], data.resolution, flip=data.flip, desc="load illustrations")
        vae = self.components.vae
        self.latents = {"real": encode_latents(vae, photos), "illustration": encode_latents(vae, drawings)}
        inputs = [self.uni.inputs(chunk) for chunk in photos.split(32)]
        self.rgb = torch.cat([(rgb * 255).round().to(torch.uint8) for rgb, _ in inputs])
        self.sketch = torch.cat([(sketch * 255).round().to(torch.uint8) for _, sketch in inputs])
        components = self.components
        self.text = encode_prompts(components.tokenizer, components.text_encoder, [self.cfg.prompt], self.device)
        self.sample_photos = photos[: self.cfg.sample.count]
        self.sample_truths = drawings[: self.cfg.sample.count]
        logger.info("cached %d pairs: latents %s, adapter inputs %s", len(photos), tuple(self.latents["real"].mean.shape[1:]),
                    tuple(self.rgb.shape[1:]))

    def domain_at(self, step: int) -> str:
        """The domain optimizer step `step` (0-based) trains; all its accumulation micro-steps share it."""
        return self.cfg.domain_order[step % len(self.cfg.domain_order)]

    # --- the loop's interface -------------------------------------------------------------------------------------
    def num_examples(self) -> int:
        return len(self.rgb)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        domain = self.domain_at(step)
        set_domain_weights(self.components.unet, {domain: 1.0}, trainable=True)
        latents = self.latents[domain][batch].sample(generator)
        rgb, sketch = self.rgb[batch].float() / 255, self.sketch[batch].float() / 255
        features = self.uni.features(rgb, sketch, self.weights)
        text = self.text.expand(len(batch), -1, -1)
        return denoising_loss(self.components.unet, self.components.scheduler, latents, text, generator, self.cfg.loss,
                              down_intrablock_additional_residuals=features)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        lora = {f"unet.{name}": param for name, param in lora_parameters(self.components.unet).items()}
        adapter = {f"adapter.{name}": param for name, param in self.uni.adapter.named_parameters()}
        return {**lora, **adapter}

    def save_outputs(self, folder: Path) -> None:
        save_dual_lora(folder / "lora", self.components.unet)
        self.uni.save(folder)
        sketch = to_dict(self.cfg.sketch)
        if self.cfg.sketch.extractor == "pidinet":  # ship the weights, as the released checkpoint's pidnet/ does
            source = pidinet_weight_file(self.cfg.sketch.pidinet_weights)
            (folder / PIDINET_FOLDER).mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / PIDINET_FOLDER / source.name)
            sketch["pidinet_weights"] = PIDINET_FOLDER
        write_json(folder / SKETCH_FILE, sketch)

    def sample(self, folder: Path, step: int) -> None:
        """Training photos translated with the paper's settings: photo / sketch / translation / true illustration rows."""
        from atelier.methods.unidllora.model import Illustrator
        from atelier.methods.unidllora.sample import illustrate
        from atelier.utils.images import make_grid, tensor_to_pil
        from atelier.utils.io import save_image

        settings = self.cfg.sample
        self.components.unet.eval()
        out = illustrate(Illustrator(self.components, self.uni), self.sample_photos, prompt=self.cfg.prompt,
                         strength=settings.strength, steps=settings.steps, guidance_scale=settings.guidance_scale,
                         adapter_scale=self.cfg.adapter.scale, adapter_weights=self.cfg.adapter.weights,
                         lora_weights=PAPER_WEIGHTS, show_progress=False)
        self.components.unet.train()
        rows = [[tensor_to_pil(photo), tensor_to_pil(sketch.repeat(3, 1, 1) * 2 - 1), result, tensor_to_pil(truth)]
                for photo, sketch, result, truth in zip(self.sample_photos, out.sketches, out.images, self.sample_truths)]
        save_image(make_grid(rows), folder / f"step-{step:07d}.png")
