"""OpenVINO: one IR (fp32 weights) compiled with a pinned INFERENCE_PRECISION_HINT for fp32/fp16/bf16 (CPUs with
AMX default to bf16 otherwise); int8 through NNCF post-training quantization with ModelType.TRANSFORMER,
or accuracy-controlled (reverts harmful layers to float until the AP drop is within max_drop). Artifacts run through
runners.OVRunner (Backend.load), which pins the hint and checks the device's fp16/bf16 capability."""
from __future__ import annotations

from pathlib import Path

from ..errors import MissingExtraError
from ..runtime.runners import OV_HINT
from .base import Artifact, Backend, CalibrationData, Unsupported


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise MissingExtraError("openvino", "openvino", "the OpenVINO backend") from None
    return ov


class OpenVINOBackend(Backend):
    name = "openvino"

    def available(self):
        try:
            _ov()
        except MissingExtraError as e:
            return str(e)
        return None

    def compile(self, onnx_path, precision, out_dir, calibration: CalibrationData | None, options, metadata):
        self.check_precision(precision)
        ov = _ov()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = ov.convert_model(str(onnx_path))
        # a static input shape lets the CPU plugin pick static kernels (~15% faster here than a dynamic batch)
        batch, res = int(options.get("batch") or 1), int(metadata["resolution"])
        model.reshape({"images": [batch, 3, res, res]})
        meta = dict(metadata, runtime_version=ov.get_version(), inference_precision_hint=OV_HINT[precision],
                    batch=batch)
        if precision == "int8":
            model, meta["quantization"] = self._quantize(model, calibration, options, metadata)
        ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=False)
        return Artifact(dir=out_dir, backend=self.name, precision=precision, model_file="model.xml",
                        metadata=meta).seal()

    def _quantize(self, model, calibration, options, metadata):
        from ..errors import ConfigError

        try:
            import nncf
        except ImportError:
            raise MissingExtraError("nncf", "openvino", "OpenVINO int8") from None
        if calibration is None:
            raise ConfigError("int8 needs a calibration recipe (--calibration calibration/X.yaml)")
        res = int(metadata["resolution"])
        items = list(calibration(res))
        calib = nncf.Dataset(items)
        info = {"tool": "nncf", "nncf_version": nncf.__version__, "model_type": "TRANSFORMER",
                "preset": "MIXED", "subset_size": len(items)}
        val = options.get("accuracy_control")  # {"dataset": COCO dataset for AP, "max_ap_drop": float}
        if val is not None:
            qmodel = self._quantize_with_accuracy_control(nncf, model, calib, val, res, len(items))
            info.update(accuracy_control=True, max_ap_drop=float(val["max_ap_drop"]), metric="AP (pycocotools)",
                        validation_images=len(val["dataset"]), **self._ap_drop(model, qmodel, val, res, options))
        else:
            qmodel = nncf.quantize(model, calib, model_type=nncf.ModelType.TRANSFORMER,
                                   preset=nncf.QuantizationPreset.MIXED, subset_size=len(items))
        return qmodel, info

    @staticmethod
    def _ap_drop(model, qmodel, val: dict, res: int, options: dict) -> dict:
        """AP of the float and the int8 model on the validation set, compiled with the runner's settings (what ships);
        Unsupported when the drop exceeds val["max_ap_drop"] (NNCF's search is greedy and may stop short of it)."""
        from ..evaluate import evaluate_runner
        from ..runtime.runners import OVRunner, runtime_options

        ov, opts = _ov(), runtime_options("openvino", options)
        aps = {}
        for precision, m in (("fp32", model), ("int8", qmodel)):
            s = OVRunner.settings(precision, opts)
            cfg = dict(s["config"], NUM_STREAMS=str(s["config"]["NUM_STREAMS"]))
            compiled = ov.Core().compile_model(m, s["device"], cfg)

            def infer(images, compiled=compiled):
                r = compiled(images)
                return r[compiled.output("boxes")], r[compiled.output("logits")]

            aps[precision] = float(evaluate_runner(infer, res, val["dataset"], batch_size=1)["AP"])
        drop = aps["fp32"] - aps["int8"]
        if drop > float(val["max_ap_drop"]) + 1e-9:
            raise Unsupported(f"OpenVINO int8 with accuracy control: the quantized model loses {drop:.4f} AP on the "
                              f"{len(val['dataset'])} validation images ({aps['fp32']:.4f} -> {aps['int8']:.4f}), "
                              f"more than max_ap_drop {float(val['max_ap_drop']):g}")
        return {"ap_fp32": aps["fp32"], "ap_int8": aps["int8"], "ap_drop": drop}

    @staticmethod
    def _quantize_with_accuracy_control(nncf, model, calib, val: dict, res: int, subset_size: int):
        """NNCF reverts the layers that hurt most to float until AP on `val["dataset"]` drops by at most
        val["max_ap_drop"] (absolute); AP comes from the same evaluator as every other number."""
        from ..evaluate import Subset, evaluate_runner

        ds = val["dataset"]

        def validation(compiled_model, indices) -> float:
            def infer(images):
                r = compiled_model(images)
                return r[compiled_model.output("boxes")], r[compiled_model.output("logits")]

            return float(evaluate_runner(infer, res, Subset(ds, list(indices)), batch_size=1)["AP"])

        return nncf.quantize_with_accuracy_control(
            model, calibration_dataset=calib, validation_dataset=nncf.Dataset(list(range(len(ds)))),
            validation_fn=validation, max_drop=float(val["max_ap_drop"]), drop_type=nncf.DropType.ABSOLUTE,
            model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED, subset_size=subset_size)


BACKEND = OpenVINOBackend()
