"""The plain-torch networks load state dicts in the published layouts and give the documented feature sizes."""

import pytest
import torch

from atelier import weights
from atelier.errors import UserError
from atelier.metrics.lpips import LPIPS, build_lpips, linear_layers
from atelier.metrics.nets import randomize
from atelier.metrics.nets.alexnet import alexnet_features
from atelier.metrics.nets.inception import InceptionV3Features, inception_features
from atelier.metrics.nets.vgg import vgg16_features

# torchvision's published shapes, written out independently of our modules
ALEXNET_LAYOUT = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}
_VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
              (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
VGG_LAYOUT = {f"features.{i}.{p}": ((o, c, 3, 3) if p == "weight" else (o,)) for i, c, o in _VGG_CONVS for p in ("weight", "bias")}
INCEPTION_SPOTS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
}
# torchvision documents 27,161,264 parameters for inception_v3; minus AuxLogits (3,326,696) and fc (2,049,000)
INCEPTION_TRUNK_PARAMETERS = 27_161_264 - 3_326_696 - 2_049_000


def _random_state(layout, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) * 0.05 for k, shape in layout.items()}


def _save_and_load(state, tmp_path, name):
    path = tmp_path / name
    torch.save(state, path)
    return weights.load_state_dict(path), str(path)


pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")


def test_alexnet_and_vgg_load_torchvision_layout_and_give_lpips_taps(tmp_path):
    state, source = _save_and_load(_random_state(ALEXNET_LAYOUT), tmp_path, "alexnet-owt-7be5be79.pth")
    alexnet = alexnet_features(state, source)
    assert torch.equal(alexnet.features[3].weight, state["features.3.weight"])
    taps = alexnet(torch.rand(1, 3, 64, 64))
    assert [t.shape[1] for t in taps] == [64, 192, 384, 256, 256]
    assert sum(p.numel() for p in alexnet.parameters()) == 2_469_696
    state, source = _save_and_load(_random_state(VGG_LAYOUT), tmp_path, "vgg16-397923af.pth")
    vgg = vgg16_features(state, source)
    assert [t.shape[1] for t in vgg(torch.rand(1, 3, 32, 32))] == [64, 128, 256, 512, 512]
    assert sum(p.numel() for p in vgg.parameters()) == 14_714_688


@pytest.mark.parametrize("variant", ["torchvision", "fid"])
def test_inception_loads_published_layout_and_pools_2048(tmp_path, variant):
    layout = {k: tuple(v.shape) for k, v in InceptionV3Features(variant).state_dict().items()}
    for key, shape in INCEPTION_SPOTS.items():
        assert layout[key] == shape
    heads = {"fc.weight": (1000 if variant == "torchvision" else 1008, 2048)}
    if variant == "torchvision":
        heads.update({"AuxLogits.conv0.conv.weight": (128, 768, 1, 1), "AuxLogits.fc.weight": (1000, 768)})
    full = _random_state({**layout, **heads})
    full = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in full.items() if "num_batches" not in k}
    state, source = _save_and_load(full, tmp_path, f"{variant}.pth")
    model = inception_features(variant, state, source)
    assert sum(p.numel() for p in model.parameters()) == INCEPTION_TRUNK_PARAMETERS
    assert model(torch.rand(1, 3, 299, 299)).shape == (1, 2048)


def test_variants_differ_only_in_pooling(tmp_path):
    state = randomize(InceptionV3Features("torchvision"), 0).state_dict()
    a = inception_features("torchvision", state)
    b = inception_features("fid", state)
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    assert not torch.allclose(a(x), b(x))


def test_loader_names_missing_and_misshapen_tensors(tmp_path):
    state = _random_state(ALEXNET_LAYOUT)
    del state["features.10.bias"]
    with pytest.raises(UserError, match="features.10.bias"):
        alexnet_features(state, "alex.pth")
    state = _random_state({**ALEXNET_LAYOUT, "features.0.weight": (64, 3, 7, 7)})
    with pytest.raises(UserError, match="wrong shape"):
        alexnet_features(state, "alex.pth")
    (tmp_path / "evil.pth").write_bytes(b"not a state dict")
    with pytest.raises(UserError, match="weights-only"):
        weights.load_state_dict(tmp_path / "evil.pth")


def test_lpips_with_torchmetrics_linear_layers():
    path = weights.resolve("lpips_alex", download=False)  # shipped inside the installed torchmetrics
    linear = linear_layers("alex", weights.load_state_dict(path), str(path))
    assert [w.numel() for w in linear] == [64, 192, 384, 256, 256] and all((w >= 0).all() for w in linear)
    metric = LPIPS(randomize(alexnet_features(), 0), linear).eval()
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)
    assert (metric(x, y) > 0).all() and torch.allclose(metric(x, y), metric(y, x), atol=1e-6)
    _, provenance = build_lpips("vgg", allow_random=True)  # offline, no VGG16 file: a seeded random backbone
    assert provenance["vgg16"] == "RANDOM (seed 0)" and provenance["lpips_vgg"].startswith("vgg.pth")


def test_parity_with_torchvision_inception_and_lpips_package():
    torchvision = pytest.importorskip("torchvision", reason="torchvision has no CPU build for this torch; parity runs where it installs")
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False).eval()
    randomize(reference, 0)
    ours = inception_features("torchvision", reference.state_dict())
    x = torch.rand(2, 3, 299, 299)
    reference.fc = torch.nn.Identity()
    assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_parity_with_lpips_package():
    lpips = pytest.importorskip("lpips", reason="the lpips package needs torchvision, which has no CPU build here")
    theirs = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    # lpips keeps torchvision's indices inside its slices: slice2.3.weight is features.3.weight
    backbone = {"features." + key.split(".", 1)[1]: value for key, value in theirs.net.state_dict().items()}
    linear = [getattr(theirs, f"lin{i}").model[1].weight.detach() for i in range(5)]
    ours = LPIPS(alexnet_features(backbone), linear).eval()
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert torch.allclose(ours(x, y), theirs(x, y, normalize=True).flatten(), atol=1e-5)
