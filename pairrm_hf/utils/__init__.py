"""Small helpers every layer may use: argument checks, device and dtype resolution, the package version."""
