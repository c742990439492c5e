"""Image towers written in plain torch (no torchvision import needed)."""
