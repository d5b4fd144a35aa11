"""3D head scans (NPHM, FaceVerse) rendered into camera images: the fixed rigs (rig.py), the scan loader
(mesh.py, through trimesh) and the unlit renderer with its per-process frame cache (render.py). The
readers of the releases' layouts are in datasets/raw/scans.py."""
