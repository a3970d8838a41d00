"""The Python runtime of a compiled edgedet artifact: Detector and `python -m edgedet_runtime IMAGE...`.

Shipped verbatim as ARTIFACT/runtime/python/edgedet_runtime/__init__.py, next to copies of core.py (pre- and
post-processing) and runners.py (the runner that measured the artifact); needs numpy and the artifact's runtime only.
Nothing in it is generated: the artifact's constants (subnet, resolution, classes and their names, category ids, the
runtime options it was measured with) are read at run time from ARTIFACT/artifact.json and validated there
(runners.read_artifact), so no class name or path from a checkpoint or dataset can ever become code.

    from edgedet_runtime import Detector          # with ARTIFACT/runtime/python on sys.path
    det = Detector()                              # the artifact two folders up; Detector("path/to/ARTIFACT")
    for d in det.detect(rgb):                     # rgb uint8 [H,W,3]
        print(d["name"], d["score"], d["box"])    # box xyxy in pixels of rgb; best first

The runner applies the artifact's recorded runtime options (threads, OpenVINO hint/streams/device/pinning, ONNX
Runtime sequential execution); `threads=N` (or --threads N) overrides the thread count explicitly.
"""
import json
import os
import sys
import threading

import numpy as np

from . import core, runners

DEFAULT_THRESHOLD, DEFAULT_TOPK = 0.3, 100
ARTIFACT_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                                             os.pardir))  # runtime/python/edgedet_runtime -> ARTIFACT
MAX_IMAGE_BYTES = 1 << 30
MAX_PIXELS = 1 << 26  # 67 M pixels: larger images are refused (decompression bombs, lying headers)


class ImageError(ValueError):
    """An image file that cannot be read as RGB: one line naming the file and what is wrong."""


def runtime_config(art: dict) -> dict:
    """The constants of the Python and C++ runtimes, from a validated artifact.json dict."""
    m = art["metadata"]
    match = runners.SUBNET_ID.match(m["subnet"])
    names = m.get("class_names") or []
    return {"subnet": m["subnet"], "backend": art["backend"], "precision": art["precision"],
            "model_file": art["model_file"], "resolution": int(m["resolution"]), "num_classes": int(m["num_classes"]),
            "num_queries": int(match.group(5)), "class_names": list(names), "category_ids": m.get("category_ids"),
            "threshold": DEFAULT_THRESHOLD, "topk": DEFAULT_TOPK,
            "runtime_options": runners.runtime_options(art["backend"], art.get("runtime_options") or {})}


class CompiledPreprocess:
    """core.preprocess through libedgedet_preprocess: the C++ runtime's src/preprocess.cpp (the resize edgedet::Detector
    runs), built by `edgedet runtime build ARTIFACT [--preprocess-only]`. Same tensor bit for bit as core.preprocess
    (same float32 operations in the same order); 0.04 ms against numpy's 0.36 ms from 320x320 to 192 px on the README's
    AVX-512 machine (the CPU decides the code path: see code_path). Loading it runs native code: name only a
    library you built yourself, never one that came inside an artifact from elsewhere. Images other than uint8 RGB
    [H,W,3] go through core.preprocess."""

    def __init__(self, path):
        import ctypes

        self.path = os.path.abspath(str(path))
        if not os.path.isfile(self.path):
            raise FileNotFoundError("%s: no such pre-processing library (build it with `edgedet runtime build "
                                    "ARTIFACT --preprocess-only`)" % self.path)
        try:
            lib = ctypes.CDLL(self.path)
            fn = lib.edgedet_preprocess
        except (OSError, AttributeError) as e:
            raise ValueError("%s: not an edgedet pre-processing library (%s)"
                             % (self.path, str(e).splitlines()[0][:200])) from None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        self._fn, self._lib = fn, lib
        self._level = getattr(lib, "edgedet_preprocess_level", None)  # absent from libraries built before it
        if self._level is not None:
            self._level.argtypes, self._level.restype = [ctypes.c_int], ctypes.c_int

    @property
    def code_path(self) -> str:
        """The resize's code path in this process: portable, avx2 or avx512 (x86-64 Linux picks the widest the CPU
        has; all give the same tensor)."""
        return {0: "portable", 1: "avx2", 2: "avx512"}.get(self._level(-1), "?") if self._level else "unknown"

    def info(self) -> dict:
        return {"implementation": "libedgedet_preprocess", "path": self.path, "code_path": self.code_path}

    def __call__(self, rgb, resolution, out=None):
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
                and rgb.shape[0] > 0 and rgb.shape[1] > 0):
            return core.preprocess(rgb, resolution, out)
        h, w = rgb.shape[:2]
        if not (rgb.strides[2] == 1 and rgb.strides[1] == 3 and 3 * w <= rgb.strides[0] < 2 ** 31):
            rgb = np.ascontiguousarray(rgb)
        r = int(resolution)
        if out is None:
            out = np.empty((1, 3, r, r), np.float32)
        elif not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 3, r, r)
                  and out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out: expected a writeable C-contiguous float32 array [1,3,%d,%d]" % (r, r))
        rc = self._fn(rgb.__array_interface__["data"][0], w, h, rgb.strides[0], r,
                      out.__array_interface__["data"][0])
        if rc != 0:
            raise ValueError("%s: edgedet_preprocess failed (%s) for a %d x %d image at %d px"
                             % (self.path, {1: "bad arguments", 2: "out of memory"}.get(rc, "code %d" % rc), w, h, r))
        return out


class Detector:
    """detect(rgb uint8 [H,W,3]) -> list of dicts (box xyxy pixels, score, label, name[, category_id]), best first.

    preprocess_library: path of a libedgedet_preprocess you built (CompiledPreprocess): the same input tensor as
    core.preprocess, in a fraction of the time (README, "C++ runtime"). Default: numpy (core.preprocess).
    The input tensor is written into a buffer each thread reuses; outputs are fresh arrays."""

    def __init__(self, artifact_dir=None, threads=None, threshold=None, topk=None, preprocess_library=None):
        self.dir = artifact_dir or ARTIFACT_DIR
        art = runners.read_artifact(self.dir)
        self.config = runtime_config(art)
        self.preprocess = core.preprocess if preprocess_library is None else CompiledPreprocess(preprocess_library)
        self.runner = runners.load(self.dir, art, {} if threads is None else {"threads": int(threads)})
        self.threshold = self.config["threshold"] if threshold is None else float(threshold)
        self.topk = self.config["topk"] if topk is None else int(topk)
        self.resolution = self.config["resolution"]
        self._local = threading.local()  # per-thread input buffer (raw)

    def raw(self, rgb):
        """(boxes [1,Q,4] normalised cxcywh, logits [1,Q,C]) for one image. The input tensor is written into a buffer
        this thread reuses from call to call (no fresh 0.4-1.8 MB allocation per frame); it never leaves raw()."""
        buf = getattr(self._local, "input", None)
        if buf is None:
            buf = self._local.input = np.empty((1, 3, self.resolution, self.resolution), np.float32)
        boxes, logits = self.runner.infer(self.preprocess(rgb, self.resolution, buf))
        return np.asarray(boxes), np.asarray(logits)

    def detect(self, rgb):
        boxes, logits = self.raw(rgb)
        det = core.postprocess(boxes, logits, [rgb.shape[:2]], self.topk, self.threshold)[0]
        names, ids = self.config["class_names"], self.config["category_ids"]
        out = []
        for b, s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            d = {"box": [round(v, 2) for v in b], "score": round(s, 4), "label": lab,
                 "name": names[lab] if lab < len(names) else str(lab)}
            if ids is not None:
                d["category_id"] = int(ids[lab])
            out.append(d)
        return out

    def info(self) -> dict:
        """The runner's runtime, version, precision and settings in effect (read back from the session), and which
        pre-processing runs (numpy, or the compiled library and its code path)."""
        pre = self.preprocess.info() if isinstance(self.preprocess, CompiledPreprocess) else {"implementation": "numpy"}
        return dict(self.runner.info(), preprocess=pre)


# ---------------------------------------------------------------------------------------------------------- images
def _pnm(data: bytes, path: str):
    """Binary PGM/PPM (P5/P6, maxval 1..65535; 16-bit samples are big-endian) -> RGB uint8, scaled to 0..255 as
    (v * 255 + maxval // 2) // maxval. The header must fit in the first 1 KiB and is checked against the file size
    before any pixel is touched."""
    head, fields, pos = data[:1024], [], 2
    while len(fields) < 3:
        while head[pos:pos + 1].isspace():
            pos += 1
        if head[pos:pos + 1] == b"#":
            end = head.find(b"\n", pos)
            if end < 0:
                break
            pos = end + 1
            continue
        end = pos
        while head[end:end + 1].isdigit() and end - pos < 10:
            end += 1
        if end == pos or not head[end:end + 1].isspace():
            break
        fields.append(int(head[pos:end]))
        pos = end
    if len(fields) < 3:
        raise ImageError("%s: bad PNM header (width, height and maxval must be decimal numbers in the first 1 KiB)"
                         % path)
    w, h, maxval = fields
    channels = 3 if data[1:2] == b"6" else 1
    if not (0 < w and 0 < h and w * h <= MAX_PIXELS and 0 < maxval < 65536):
        raise ImageError("%s: PNM header says %d x %d, maxval %d (at most %d pixels, maxval 1..65535)"
                         % (path, w, h, maxval, MAX_PIXELS))
    pos += 1  # the single whitespace after maxval
    sample = 1 if maxval < 256 else 2
    need = w * h * channels * sample
    if len(data) - pos < need:
        raise ImageError("%s: truncated: the header says %d x %d (%d bytes of pixels), the file has %d"
                         % (path, w, h, need, max(len(data) - pos, 0)))
    a = np.frombuffer(data, np.uint8 if sample == 1 else ">u2", w * h * channels, pos).reshape(h, w, channels)
    if maxval != 255:
        a = ((a.astype(np.uint32) * 255 + maxval // 2) // maxval).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(a, (h, w, 3)) if channels == 1 else a, np.uint8)


def _npy(path: str):
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError("unsupported .npy version %s" % (version,))
            shape, _, dtype = read(f)
        except (ValueError, OSError, SyntaxError) as e:
            raise ImageError("%s: not a .npy array (%s)" % (path, str(e).splitlines()[0][:120])) from None
        if dtype != np.uint8 or len(shape) != 3 or shape[2] != 3 or not 0 < shape[0] * shape[1] <= MAX_PIXELS:
            raise ImageError("%s: a .npy image must be uint8 [H,W,3] with at most %d pixels, got %s %s"
                             % (path, MAX_PIXELS, dtype, list(shape)))
    a = np.load(path, allow_pickle=False)
    return np.ascontiguousarray(a)


def _pil(path: str):
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ImageError("%s: cannot be read as an image (%s)" % (path, e)) from None
        with im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale, never clip at 255
                a = np.asarray(im, dtype=np.uint32)
                a = ((np.minimum(a, 65535) * 255 + 32767) // 65535).astype(np.uint8)
                return np.ascontiguousarray(np.stack([a] * 3, -1))
            return np.array(im.convert("RGB"))


def read_image(path: str):
    """RGB uint8 [H,W,3] from a file: binary PPM/PGM and .npy built in (bounded, checked against the file size),
    other formats through Pillow when installed (decompression bombs refused, 16-bit grey scaled). ImageError
    (one line) for anything that is not a readable image."""
    try:
        if not os.path.isfile(path):
            raise ImageError("%s: no such file" % path if not os.path.exists(path) else "%s: not a file" % path)
        size = os.path.getsize(path)
        if size == 0:
            raise ImageError("%s: empty file" % path)
        if size > MAX_IMAGE_BYTES:
            raise ImageError("%s: %d bytes, larger than the %d MiB an image may have" % (path, size,
                                                                                         MAX_IMAGE_BYTES >> 20))
        if path.endswith(".npy"):
            return _npy(path)
        with open(path, "rb") as f:
            head = f.read(2)
            if head in (b"P5", b"P6"):
                return _pnm(head + f.read(), path)
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise ImageError("%s: install pillow to read this format (built in: binary PPM/PGM, .npy)" % path) \
                from None
        a = _pil(path)
        if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ImageError("%s: an image without pixels (%s)" % (path, list(a.shape)))
        return a
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Warning) as e:
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ImageError("%s: cannot be read as an image (%s)" % (path, why)) from None


def _print_safe(s: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in s)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edgedet_runtime",
                                 description="detections of this artifact in images, one JSON line each")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--artifact", default=None, help="artifact folder (default: the one this runtime is in)")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--topk", type=int, default=None, help="at most this many detections per image (default 100)")
    ap.add_argument("--threads", type=int, default=None, help="override the recorded thread count")
    ap.add_argument("--info", action="store_true", help="print the runtime settings in effect first")
    ap.add_argument("--preprocess-library", default=None, metavar="PATH",
                    help="libedgedet_preprocess you built (edgedet runtime build ARTIFACT --preprocess-only): the same "
                         "input tensor, compiled; loads native code, so only a library you built yourself")
    a = ap.parse_args(argv)
    try:
        det = Detector(a.artifact, threads=a.threads, threshold=a.threshold, topk=a.topk,
                       preprocess_library=a.preprocess_library)
        if a.info:
            print(json.dumps({"info": det.info()}))
        for path in a.images:
            for d in det.detect(read_image(path)):
                print(json.dumps(dict(d, image=path)))
    except (ImageError, runners.ArtifactError, runners.Unsupported, FileNotFoundError, ValueError) as e:
        print("error: %s" % _print_safe(str(e)), file=sys.stderr)
        return 2
    return 0
