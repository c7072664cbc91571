"""Run inside Blender (``blender -b --factory-startup --python tests/blender_probe.py -- OUT.json FILE...``): import
each file with Blender's own importer into an empty scene, and write what arrived as JSON: per file the mesh
objects' vertex and face counts, world-space bounds, the colour attributes and textures, and for the upright checks
the mean height (world z) of the top and bottom halves of the picture, told apart by the colours (red top half,
blue bottom half), the texture coordinates, or the vertex order (a point cloud, row by row from the top)."""

import json
import sys

import bpy
import numpy

# Debian's Blender 3.4 glTF importer still writes numpy.bool, which numpy 1.24 (Debian's python3-numpy) removed.
if "bool" not in numpy.__dict__:
    numpy.bool = bool

IMPORTERS = {
    ".glb": lambda path: bpy.ops.import_scene.gltf(filepath=path),
    ".obj": lambda path: bpy.ops.wm.obj_import(filepath=path),
    ".stl": lambda path: bpy.ops.import_mesh.stl(filepath=path),
    ".ply": lambda path: bpy.ops.import_mesh.ply(filepath=path),
}


def halves_by_colour(mesh, world_z):
    """(mean z of reddish corners, mean z of bluish corners) from a colour attribute, or None."""
    for attribute in mesh.color_attributes:
        colours = [tuple(value.color[:3]) for value in attribute.data]
        if attribute.domain == "CORNER":
            heights = [world_z[loop.vertex_index] for loop in mesh.loops]
        else:
            heights = world_z
        red = [z for (r, _, b), z in zip(colours, heights) if r > b]
        blue = [z for (r, _, b), z in zip(colours, heights) if b > r]
        if red and blue:
            return sum(red) / len(red), sum(blue) / len(blue)
    return None


def halves_by_uv(mesh, world_z):
    """(mean z where the texture's v > 0.5, the picture's top; mean z where v < 0.5), or None."""
    if not mesh.uv_layers:
        return None
    uvs = mesh.uv_layers.active.data
    top = [world_z[loop.vertex_index] for loop, uv in zip(mesh.loops, uvs) if uv.uv[1] > 0.5]
    bottom = [world_z[loop.vertex_index] for loop, uv in zip(mesh.loops, uvs) if uv.uv[1] < 0.5]
    return (sum(top) / len(top), sum(bottom) / len(bottom)) if top and bottom else None


def textures(mesh):
    """Each image texture of the mesh's materials: its size and the mean RGB of its top and bottom halves."""
    found = []
    for material in mesh.materials:
        if material is None or not material.use_nodes:
            continue
        for node in material.node_tree.nodes:
            image = getattr(node, "image", None) if node.type == "TEX_IMAGE" else None
            if image is None:
                continue
            width, height = image.size
            pixels = numpy.array(image.pixels[:]).reshape(height, width, -1)[:, :, :3]  # rows from the bottom
            found.append({"size": [width, height], "top_rgb": pixels[height // 2:].mean(axis=(0, 1)).tolist(),
                          "bottom_rgb": pixels[: height // 2].mean(axis=(0, 1)).tolist()})
    return found


def probe(path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    IMPORTERS[path[path.rindex("."):].lower()](path)
    objects = []
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        mesh = obj.data
        world = [obj.matrix_world @ vertex.co for vertex in mesh.vertices]
        world_z = [point[2] for point in world]
        row = max(1, len(world) // 2)
        objects.append({
            "vertices": len(mesh.vertices), "faces": len(mesh.polygons),
            "min": [min(point[axis] for point in world) for axis in range(3)],
            "max": [max(point[axis] for point in world) for axis in range(3)],
            "colour_attributes": [attribute.name for attribute in mesh.color_attributes],
            "halves_by_colour": halves_by_colour(mesh, world_z),
            "halves_by_uv": halves_by_uv(mesh, world_z),
            "halves_by_order": [sum(world_z[:row]) / row, sum(world_z[-row:]) / row],
            "textures": textures(mesh),
        })
    return objects


arguments = sys.argv[sys.argv.index("--") + 1:]
report = {"blender": bpy.app.version_string, "files": {path: probe(path) for path in arguments[1:]}}
with open(arguments[0], "w") as output:
    json.dump(report, output)
