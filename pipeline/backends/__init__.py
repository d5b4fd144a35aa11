"""Backends of the stages: offline defaults (mediapipe, classical methods) and full-quality ones
whose weights the user supplies (rembg, face-alignment). Nothing here downloads anything."""
