"""Scripts copied into TensorRT artifacts and run ON the device (python3 + tensorrt only; no edgedet import):
build_engine.py (ONNX -> model.engine), bench_engine.py (latency), calib_loader.py (Polygraphy INT8 data loader)."""
