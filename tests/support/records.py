"""Rows as the stages would hand them on, for tests and benchmarks of one stage."""

import numpy as np

from medtrinity_tasks.preprocess.images import encode_png
from medtrinity_tasks.records import record_id


def make_record(slice_index: int = 5, **overrides) -> dict:
    """A complete, valid record with one ROI, as the stages would leave it before the gate."""
    import numpy as np

    from medtrinity_tasks.generation.template import TemplateDescription

    pixels = np.full((64, 80), 90, dtype=np.uint8)
    row = {
        "id": record_id("unit", "imagesTr/a.nii.gz", "axial", slice_index),
        "source_id": "unit",
        "source_relpath": "imagesTr/a.nii.gz",
        "modality": "CT",
        "organ": "liver",
        "diseases": ["liver tumour"],
        "image": {"bytes": encode_png(pixels), "path": "unit/a/axial_0005.png"},
        "width": 80,
        "height": 64,
        "axis": "axial",
        "slice_index": slice_index,
        "spacing_mm": [0.8, 0.7, 2.5],
        "patient_orientation": ["L", "P"],
        "anatomy": ["kidney", "liver"],
        "rois": [
            {
                "label": "liver tumour",
                "bbox_xyxy": [10.0, 12.0, 30.0, 22.0],
                "mask_rle": {"size": [64, 80], "counts": "0"},
                "area_fraction": 0.04,
                "centroid_xy": [20.0, 17.0],
                "location": "right anterior abdomen, within the liver",
                "image_location": "upper left part of the image",
                "organ_location": None,
                "size": "about 14 x 8 mm",
                "size_mm": [14.0, 8.0],
                "shape": "oval",
                "margin": "well-defined margin",
                "texture": "hypodense relative to the surrounding tissue, homogeneous",
                "origin": "annotation",
            }
        ],
        "coarse_caption": "Axial CT slice of the abdomen.",
    }
    row.update(overrides)
    return TemplateDescription().process_batch([row])[0]


def engine_rows(n: int) -> list[dict]:
    """``n`` rows as a description engine receives them: a CT image with one ROI and its facts."""
    pixels = np.full((64, 64), 40, np.uint8)
    pixels[20:30, 30:44] = 200
    return [
        {
            "id": f"r{i}",
            "modality": "CT",
            "organ": "kidney",
            "coarse_caption": "Axial computed tomography (CT) slice of the abdomen; annotated findings: renal cyst.",
            "image": {"bytes": encode_png(pixels)},
            "diseases": ["renal cyst"],
            "rois": [
                {
                    "label": "renal cyst",
                    "bbox_xyxy": [30, 20, 44, 30],
                    "area_fraction": 0.03,
                    "location": "left kidney",
                    "texture": "hypodense (8 HU)",
                    "shape": "round",
                }
            ],
        }  # fmt: skip
        for i in range(n)
    ]
