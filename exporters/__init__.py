"""ONNX and Core ML export of SyncTalk_2D models, the bundle manifest, and export-time validation."""
