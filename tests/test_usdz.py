"""USDZ packages: the zip layout is checked by hand (zipfile and the local headers, independent of pxr), the stage
is opened with Usd.Stage.Open and compared with the mesh, the texture is decoded by Pillow, and every validator
usd-core ships (UsdValidation, which replaced UsdUtils.ComplianceChecker in usd-core 26) plus AR Quick Look's
rules on file and shader types must find nothing."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image
from pxr import Usd, UsdGeom, UsdShade, UsdValidation

from converter import geometry
from converter.errors import OutputError
from converter.mesh import build_mesh
from converter.exports.mesh_formats import Texture
from converter.exports.usdz import write_usdz

W, H = 64, 48


def picture(alpha: bool = False) -> Image.Image:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (H, W, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        pixels[..., 3] = np.where(np.arange(W)[None, :] < W // 2, 255, 0)
    return Image.fromarray(pixels, "RGBA" if alpha else "RGB")


def relief_mesh(normals: bool = False):
    """A wavy relief on the grid of a W × H picture, with a hole in the middle (so not every vertex is in a face)."""
    rows, columns = np.mgrid[0:H, 0:W]
    heights = (0.04 * np.sin(columns / 6.0) * np.cos(rows / 5.0)).astype(np.float32)
    keep = np.ones((H, W), bool)
    keep[20:24, 30:34] = False
    points = geometry.relief_backproject(heights, (W, H))
    colors = np.asarray(picture())
    return build_mesh(points, keep, np.arange(H), np.arange(W), (W, H), colors,
                      depth=np.ones((H, W), np.float32), normals=normals)


def data_offsets(path) -> dict[str, int]:
    """Where each entry's data starts, from the local file headers (30 bytes + name + extra field)."""
    offsets = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            handle.seek(info.header_offset)
            header = struct.unpack("<IHHHHHIIIHH", handle.read(30))
            assert header[0] == 0x04034B50  # local file header signature
            offsets[info.filename] = info.header_offset + 30 + header[9] + header[10]
    return offsets


def the_mesh(stage) -> UsdGeom.Mesh:
    meshes = [prim for prim in stage.Traverse() if prim.IsA(UsdGeom.Mesh)]
    assert len(meshes) == 1
    return UsdGeom.Mesh(meshes[0])


@pytest.fixture
def textured(tmp_path):
    mesh = relief_mesh(normals=True)
    path = tmp_path / "model.usdz"
    write_usdz(path, mesh, picture(), metres_per_unit=None)
    return mesh, path


def test_package_is_an_aligned_zip_with_the_layer_first(textured):
    _, path = textured
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC holds
        entries = archive.infolist()
        assert entries[0].filename.endswith((".usdc", ".usda"))
        assert all(entry.compress_type == zipfile.ZIP_STORED for entry in entries)  # USDZ is never compressed
        assert {os.path.splitext(entry.filename)[1] for entry in entries} == {".usdc", ".png"}
        assert archive.read(entries[0].filename)[:8] == b"PXR-USDC"
    for name, offset in data_offsets(path).items():
        assert offset % 64 == 0, name


def test_stage_matches_the_mesh(textured):
    mesh, path = textured
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0  # relative units shown life-sized
    assert stage.GetRootLayer().customLayerData["units"] == "relative"
    assert stage.GetDefaultPrim().GetPath() == "/Root"
    geom = the_mesh(stage)
    points = np.asarray(geom.GetPointsAttr().Get())
    counts = np.asarray(geom.GetFaceVertexCountsAttr().Get())
    indices = np.asarray(geom.GetFaceVertexIndicesAttr().Get())
    assert len(points) == mesh.vertex_count and len(counts) == mesh.face_count and (counts == 3).all()
    np.testing.assert_array_equal(points, mesh.vertices)
    np.testing.assert_array_equal(indices.reshape(-1, 3), mesh.faces)
    extent = np.asarray(geom.GetExtentAttr().Get())
    np.testing.assert_allclose(extent, [mesh.vertices.min(0), mesh.vertices.max(0)])
    computed = UsdGeom.Boundable.ComputeExtentFromPlugins(geom, Usd.TimeCode.Default())
    np.testing.assert_allclose(np.asarray(computed), extent)
    assert geom.GetSubdivisionSchemeAttr().Get() == UsdGeom.Tokens.none
    assert geom.GetOrientationAttr().Get() == UsdGeom.Tokens.rightHanded  # counter-clockwise front faces
    np.testing.assert_allclose(np.asarray(geom.GetNormalsAttr().Get()), mesh.normals)

    st = UsdGeom.PrimvarsAPI(geom).GetPrimvar("st")
    assert st.GetInterpolation() == UsdGeom.Tokens.vertex
    np.testing.assert_array_equal(np.asarray(st.Get()), mesh.uvs)  # both OpenGL convention: no flip
    colors = np.asarray(UsdGeom.PrimvarsAPI(geom).GetPrimvar("displayColor").Get())
    np.testing.assert_allclose(colors * 255, mesh.colors, atol=1e-3)


def test_material_reads_the_texture_inside_the_package(textured):
    _, path = textured
    stage = Usd.Stage.Open(str(path))
    material, _ = UsdShade.MaterialBindingAPI(the_mesh(stage).GetPrim()).ComputeBoundMaterial()
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetIdAttr().Get() == "UsdPreviewSurface"
    texture = UsdShade.Shader(surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source.GetPrim())
    assert texture.GetIdAttr().Get() == "UsdUVTexture"
    reader = UsdShade.Shader(texture.GetInput("st").GetConnectedSources()[0][0].source.GetPrim())
    assert reader.GetIdAttr().Get() == "UsdPrimvarReader_float2" and reader.GetInput("varname").Get() == "st"
    opacity = surface.GetInput("opacity")
    assert not (opacity and opacity.HasConnectedSource())  # an RGB texture: opaque

    asset = texture.GetInput("file").Get()
    assert asset.resolvedPath == f"{path}[{asset.path}]"  # resolved inside the package, not beside it
    with zipfile.ZipFile(path) as archive:
        png = archive.read(asset.path)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.size == (W, H)
    np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), np.asarray(picture()))


def validation_errors(path) -> list[str]:
    context = UsdValidation.ValidationContext(UsdValidation.ValidationRegistry().GetOrLoadAllValidators())
    return [
        f"{error.GetName()}: {error.GetMessage()}" for error in context.Validate(Usd.Stage.Open(str(path)))
        if error.GetType() in (UsdValidation.ValidationErrorType.Error, UsdValidation.ValidationErrorType.Warn)
    ]


def ar_quick_look_problems(path) -> list[str]:
    """AR Quick Look's rules that UsdValidation does not cover (ARKit checks of the former ComplianceChecker):
    one layer, files only usdc/png, prim and shader types it renders, every mesh bound to a material."""
    stage = Usd.Stage.Open(str(path))
    problems = []
    layers = stage.GetUsedLayers()
    if len([layer for layer in layers if not layer.anonymous]) != 1:
        problems.append(f"more than one layer: {[layer.identifier for layer in layers]}")
    with zipfile.ZipFile(path) as archive:
        problems += [f"file type: {name}" for name in archive.namelist() if not name.endswith((".usdc", ".png"))]
    allowed_prims = {"Xform", "Scope", "Mesh", "Material", "Shader", "GeomSubset", ""}
    allowed_shaders = {"UsdPreviewSurface", "UsdUVTexture", "UsdPrimvarReader_float2", "UsdTransform2d"}
    for prim in stage.Traverse():
        if prim.GetTypeName() not in allowed_prims:
            problems.append(f"prim type {prim.GetTypeName()} at {prim.GetPath()}")
        if prim.IsA(UsdShade.Shader) and UsdShade.Shader(prim).GetIdAttr().Get() not in allowed_shaders:
            problems.append(f"shader {UsdShade.Shader(prim).GetIdAttr().Get()}")
        if prim.IsA(UsdGeom.Mesh) and not UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()[0]:
            problems.append(f"no material on {prim.GetPath()}")
    return problems


@pytest.mark.parametrize("alpha", [False, True], ids=["rgb", "rgba"])
def test_usd_validators_and_ar_quick_look_rules_find_nothing(tmp_path, alpha):
    path = tmp_path / "model.usdz"
    write_usdz(path, relief_mesh(), picture(alpha), metres_per_unit=1.0)
    assert validation_errors(path) == []
    assert ar_quick_look_problems(path) == []
    stage = Usd.Stage.Open(str(path))
    surface = UsdShade.MaterialBindingAPI(the_mesh(stage).GetPrim()).ComputeBoundMaterial()[0]
    surface = surface.ComputeSurfaceSource()[0]
    opacity = surface.GetInput("opacity")
    assert bool(opacity and opacity.HasConnectedSource()) == alpha  # transparency as a cut-out
    if alpha:
        assert surface.GetInput("opacityThreshold").Get() == pytest.approx(0.5)


def test_validators_do_catch_a_broken_file(tmp_path):
    """The check above can fail: a package with a compressed entry and a wrongly typed input is reported."""
    from pxr import Sdf

    layer = tmp_path / "broken.usda"
    stage = Usd.Stage.CreateNew(str(layer))
    shader = UsdShade.Shader.Define(stage, "/Broken")
    shader.CreateIdAttr("UsdPrimvarReader_float2")
    shader.CreateInput("varname", Sdf.ValueTypeNames.Token).Set("st")
    stage.GetRootLayer().Save()
    assert validation_errors(layer) != []


def test_metric_units_and_the_texture_object(tmp_path):
    path = tmp_path / "metric.usdz"
    write_usdz(path, relief_mesh(), Texture.of(picture()), metres_per_unit=1.0)
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetRootLayer().customLayerData["units"] == "metres"
    millimetres = tmp_path / "millimetres.usdz"  # another name: USD caches the layers of open stages
    write_usdz(millimetres, relief_mesh(), None, metres_per_unit=0.001)
    assert UsdGeom.GetStageMetersPerUnit(Usd.Stage.Open(str(millimetres))) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        write_usdz(path, relief_mesh(), None, metres_per_unit=0.0)


def test_without_a_texture_the_vertex_colours_are_written(tmp_path):
    mesh = relief_mesh()
    path = tmp_path / "colours.usdz"
    write_usdz(path, mesh, None, metres_per_unit=None)
    with zipfile.ZipFile(path) as archive:
        assert [name.endswith(".usdc") for name in archive.namelist()] == [True]
    stage = Usd.Stage.Open(str(path))
    geom = the_mesh(stage)
    assert not UsdShade.MaterialBindingAPI(geom.GetPrim()).ComputeBoundMaterial()[0]
    colors = np.asarray(UsdGeom.PrimvarsAPI(geom).GetPrimvar("displayColor").Get())
    np.testing.assert_allclose(colors * 255, mesh.colors, atol=1e-3)
    assert validation_errors(path) == []


def test_failures_are_output_errors_and_leave_nothing(tmp_path):
    mesh = relief_mesh()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OutputError) as caught:
        write_usdz(blocker / "model.usdz", mesh, picture(), metres_per_unit=None)
    assert "model.usdz" in str(caught.value) and str(tmp_path) not in str(caught.value)
    with pytest.raises(OutputError, match="does not exist"):
        write_usdz(tmp_path / "missing" / "model.usdz", mesh, picture(), metres_per_unit=None)
    assert os.listdir(tmp_path) == ["not-a-folder"]


def test_success_leaves_only_the_package_and_overwrites(tmp_path):
    path = tmp_path / "model.usdz"
    path.write_bytes(b"old")
    write_usdz(path, relief_mesh(), picture(), metres_per_unit=None)
    assert os.listdir(tmp_path) == ["model.usdz"]
    assert zipfile.is_zipfile(path)
