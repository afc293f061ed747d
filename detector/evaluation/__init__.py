"""Detection evaluation: VOC AP, COCO AP, error analysis, result files and reports.

Pure functions on in-memory ``ImageRecord`` ground truth and
``dict[image_id, Detections]`` detections; the file readers/writers sit beside.
"""
from detector.evaluation.analysis import Analysis, analyse_detections
from detector.evaluation.coco_eval import COCOResult, default_category_ids, evaluate_coco
from detector.evaluation.metrics import DEFAULT_IOU, METRICS, evaluate_detections
from detector.evaluation.report import ReportFiles, format_report_table, write_report
from detector.evaluation.result_files import (ResultFileError, read_coco_results, read_voc_results,
                                              voc_result_path, write_coco_results, write_voc_results)
from detector.evaluation.voc_ap import EvaluationInputError, VOCResult, evaluate_voc, voc_ap

__all__ = [
    "Analysis", "COCOResult", "DEFAULT_IOU", "EvaluationInputError", "METRICS", "ReportFiles",
    "ResultFileError", "VOCResult", "analyse_detections", "evaluate_detections",
    "default_category_ids", "evaluate_coco", "evaluate_voc", "format_report_table",
    "read_coco_results", "read_voc_results", "voc_ap", "voc_result_path", "write_coco_results",
    "write_report", "write_voc_results",
]
