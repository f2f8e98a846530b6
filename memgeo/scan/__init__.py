"""Scanning prompt sets on a checkpoint: prompt readers, the result store, the scan, its report.

* :mod:`~memgeo.scan.readers` - prompt files (JSON lines, text, CSV) into prompt records;
* :mod:`~memgeo.scan.store` - the result store (one row per prompt, seed, signal and settings);
* :mod:`~memgeo.scan.run` - :func:`run_scan`;
* :mod:`~memgeo.scan.report` - its summary, thresholds from reference prompts, ranked reports;
* :mod:`~memgeo.scan.audit` - the fine-tune audit: which generations copy a training image.
"""

from .readers import PromptRecord, parse_bool, read_prompts
from .report import Calibration, calibrate, format_report, prompt_scores, report_rows, summarize, write_report
from .run import (
    ScanConfig,
    ScanInterrupted,
    ScanResult,
    model_identity,
    resolve_probe_times,
    run_scan,
    unique_prompts,
)
from .store import STORE_FORMAT, STORE_VERSION, ResultStore, settings_digest

__all__ = [
    "PromptRecord", "parse_bool", "read_prompts", "ResultStore", "settings_digest", "STORE_FORMAT", "STORE_VERSION",
    "ScanConfig", "ScanInterrupted", "ScanResult", "run_scan", "resolve_probe_times", "unique_prompts", "model_identity",
    "summarize", "prompt_scores", "Calibration", "calibrate", "report_rows", "format_report", "write_report",
]
