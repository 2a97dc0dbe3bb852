"""``findings.json``: the findings of one analysed series in plain JSON, for people and the triage view."""

from __future__ import annotations

from pathlib import Path

from node.analyse.types import AnalysisResult


def findings_json(result: AnalysisResult, files: list[Path]) -> dict[str, object]:
    """Priority, its reason, each finding's measurements and the names of the result files."""
    return {
        "series_instance_uid": result.volume.series_instance_uid,
        "priority": str(result.priority),
        "priority_reason": result.priority_reason,
        "findings": [
            {
                "label": f.label_name,
                "number": f.number,
                "volume_mm3": round(f.volume_mm3, 2),
                "longest_axial_diameter_mm": round(f.longest_axial_diameter_mm, 2),
                "centroid_mm": [round(c, 2) for c in f.centroid_mm],
                "mean_value": round(f.mean_value, 1),
            }
            for f in result.findings
        ],
        "files": [p.name for p in files],
    }
