"""The runtimes shipped next to each artifact: runners.py (one runner per runtime, also used by the host backends and
the device agent), core.py (numpy pre/post-processing, also used by edgedet's evaluator and calibration) and
detector.py (the Python runtime's Detector), copied verbatim by render.py; the C++ project by cpp.py."""
