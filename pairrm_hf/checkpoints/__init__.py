"""Checkpoints: Hub resolution, layout detection, the legacy llm-blender layouts, saving, and the auto class."""
