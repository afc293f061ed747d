"""Detection evaluation: VOC AP, COCO AP, error analysis, result files and reports.

Pure functions on in-memory ``ImageRecord`` ground truth and
``dict[image_id, Detections]`` detections; the file readers/writers sit beside.

The names below are imported from their modules on first use: the result
writers serve the torch-free ONNX runtime, which has no pycocotools or torch.
"""
import importlib

# name -> the submodule that defines it (loaded by __getattr__ on first use).
_LAZY = {"Analysis": "analysis", "analyse_detections": "analysis", "COCOResult": "coco_eval",
         "default_category_ids": "result_files", "evaluate_coco": "coco_eval", "DEFAULT_IOU": "metrics",
         "METRICS": "metrics", "evaluate_detections": "metrics", "ReportFiles": "report",
         "format_report_table": "report", "write_report": "report", "ResultFileError": "result_files",
         "read_coco_results": "result_files", "read_voc_results": "result_files",
         "voc_result_path": "result_files", "write_coco_results": "result_files",
         "write_voc_results": "result_files", "EvaluationInputError": "voc_ap", "VOCResult": "voc_ap",
         "evaluate_voc": "voc_ap", "voc_ap": "voc_ap"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Analysis", "COCOResult", "DEFAULT_IOU", "EvaluationInputError", "METRICS", "ReportFiles",
    "ResultFileError", "VOCResult", "analyse_detections", "evaluate_detections",
    "default_category_ids", "evaluate_coco", "evaluate_voc", "format_report_table",
    "read_coco_results", "read_voc_results", "voc_ap", "voc_result_path", "write_coco_results",
    "write_report", "write_voc_results",
]
