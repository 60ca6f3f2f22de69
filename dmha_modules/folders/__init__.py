"""Model folders: writing them, checking their safety, replacing them in place, ONNX export."""
