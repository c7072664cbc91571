"""USDZ for Apple's AR Quick Look (iPhone, iPad, Vision Pro, macOS), written with Pixar's usd-core.

The package holds one binary layer (``model.usdc``, first in the zip as USDZ requires) and, with a texture, the
picture as ``texture.png``. The layer:

* ``/Root`` (Xform, kind component, the default prim) ``/Root/Geom`` (Mesh): points, triangles
  (faceVertexCounts all 3, counter-clockwise seen from the camera, which is USD's default right-handed orientation),
  no subdivision (USD would otherwise smooth a mesh as Catmull–Clark), ``primvars:st`` one texture coordinate per
  vertex, ``primvars:displayColor`` the vertex colours, normals when the mesh has them, the extent.
* ``/Root/Materials/Photo``: UsdPreviewSurface, its diffuse colour from a UsdUVTexture reading ``texture.png``
  through ``primvars:st`` (a UsdPrimvarReader_float2), rough and not metallic; an RGBA texture also drives the
  opacity with a 0.5 threshold (cut-out transparency, like the GLB's alpha mask). Only the three shader types
  AR Quick Look accepts are used. Without a texture no material is bound and viewers show the displayColor.

Texture coordinates: USD uses the OpenGL convention (origin at the bottom-left), like :class:`~converter.mesh.Mesh`,
so they are written as they are. Axes: ``upAxis`` Y, the product's frame as it is. Units: ``metersPerUnit`` is
the caller's (1.0 for metric results); for relative units (``None``) it is 1.0 too, so AR Quick Look places a
life-sized model (a relief 1 m wide, a relative-depth scene 1 to 2 m deep) rather than USD's default centimetres.
The layer's customLayerData records the generator and the units.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OutputError
from .files import atomic_output_named
from ..mesh import Mesh
from .mesh_formats import GENERATOR, Texture

RELATIVE_METRES_PER_UNIT = 1.0  # relative units shown as metres: see the module docstring
_LAYER = "model.usdc"
_TEXTURE = "texture.png"


def write_usdz(
    path: str | os.PathLike, mesh: Mesh, texture: Image.Image | Texture | None, *, metres_per_unit: float | None
) -> None:
    """Write ``mesh`` as a USDZ package for AR Quick Look (see the module docstring).

    texture: a PIL image or an encoded :class:`~converter.exports.mesh_formats.Texture`, or None for vertex colours only.
    metres_per_unit: the size of one unit in metres (1.0 for metric results), or None for relative units.
    Atomic: built in a private temporary folder beside the target, packaged, renamed into place.
    """
    from pxr import Tf, UsdUtils

    if metres_per_unit is not None and not (math.isfinite(metres_per_unit) and metres_per_unit > 0):
        raise ValueError("metres_per_unit must be a positive number or None")
    name = Path(path).name
    # The packager wants a ".usdz" name; the folder also holds the layer and the texture until they are packaged.
    with atomic_output_named(path, "model.usdz") as package:
        folder = package.parent
        try:
            texture = Texture.of(texture)
            if texture is not None:
                (folder / _TEXTURE).write_bytes(texture.png)
            has_alpha = None if texture is None else texture.has_alpha
            _build_layer(folder / _LAYER, mesh, has_alpha, metres_per_unit)
            packaged = UsdUtils.CreateNewARKitUsdzPackage(str(folder / _LAYER), str(package))
        except Tf.ErrorException:
            raise OutputError(f"'{name}' could not be written.") from None
        if not packaged or not package.is_file():
            raise OutputError(f"'{name}' could not be written.")


def _build_layer(layer_path: Path, mesh: Mesh, has_alpha: bool | None, metres_per_unit: float | None) -> None:
    """Write the USD layer; ``has_alpha``: None without a texture, else whether the texture has transparency."""
    from pxr import Kind, Sdf, Usd, UsdGeom, UsdShade, Vt

    stage = Usd.Stage.CreateNew(str(layer_path))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, metres_per_unit if metres_per_unit is not None else RELATIVE_METRES_PER_UNIT)
    stage.GetRootLayer().customLayerData = {
        "generator": GENERATOR,
        "units": "metres" if metres_per_unit is not None else "relative",
        "axes": "right-handed, y up, camera at the origin looking down -z",
    }
    root = UsdGeom.Xform.Define(stage, "/Root")
    Usd.ModelAPI(root.GetPrim()).SetKind(Kind.Tokens.component)
    stage.SetDefaultPrim(root.GetPrim())

    geom = UsdGeom.Mesh.Define(stage, "/Root/Geom")
    geom.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(mesh.vertices))
    geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(mesh.face_count, 3, dtype=np.int32)))
    geom.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(mesh.faces.astype(np.int32).reshape(-1)))
    geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    geom.CreateDoubleSidedAttr(True)  # a photo's surface is often seen from behind
    if mesh.vertex_count:
        extent = [mesh.vertices.min(axis=0).tolist(), mesh.vertices.max(axis=0).tolist()]
    else:
        extent = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    geom.CreateExtentAttr(Vt.Vec3fArray(extent))
    if mesh.normals is not None:
        geom.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(mesh.normals))
        geom.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    primvars = UsdGeom.PrimvarsAPI(geom)
    colors = primvars.CreatePrimvar("displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.vertex)
    colors.Set(Vt.Vec3fArray.FromNumpy(mesh.colors.astype(np.float32) / np.float32(255.0)))
    st = primvars.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
    st.Set(Vt.Vec2fArray.FromNumpy(mesh.uvs))

    if has_alpha is not None:
        UsdGeom.Scope.Define(stage, "/Root/Materials")
        material = UsdShade.Material.Define(stage, "/Root/Materials/Photo")
        surface = UsdShade.Shader.Define(stage, "/Root/Materials/Photo/PreviewSurface")
        surface.CreateIdAttr("UsdPreviewSurface")
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(1.0)
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        reader = UsdShade.Shader.Define(stage, "/Root/Materials/Photo/STReader")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        picture = UsdShade.Shader.Define(stage, "/Root/Materials/Photo/Texture")
        picture.CreateIdAttr("UsdUVTexture")
        picture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(_TEXTURE))
        picture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        picture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
        picture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
        picture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
            reader.ConnectableAPI(), "result", UsdShade.AttributeType.Output, Sdf.ValueTypeNames.Float2
        )
        rgb = picture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
        surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(rgb)
        if has_alpha:  # alpha: a cut-out, as the GLB's alpha mask
            alpha = picture.CreateOutput("a", Sdf.ValueTypeNames.Float)
            surface.CreateInput("opacity", Sdf.ValueTypeNames.Float).ConnectToSource(alpha)
            surface.CreateInput("opacityThreshold", Sdf.ValueTypeNames.Float).Set(0.5)
        material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
        UsdShade.MaterialBindingAPI.Apply(geom.GetPrim()).Bind(material)
    stage.GetRootLayer().Save()
