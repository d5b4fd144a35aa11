"""GaussianHead (Wang et al., "GaussianHead: High-fidelity Head Avatars with Learnable Gaussian Derivation"):
the per-subject monocular baseline the GPHM avatars are compared with, trained from the same store clip and
evaluated on the same held-out frames (`python cli.py avatar baseline`, `python cli.py avatar evaluate A B`)."""
