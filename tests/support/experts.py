"""Records for the sample expert: phantom cases it never saw in training."""

from medtrinity_tasks.roi.training import sample_slices


def held_out_records():
    """Pipeline records of phantom cases the sample expert never saw (8-9), with their annotations:
    images, label slices and records."""
    return sample_slices(cases=2, first_case=8, seed=11)


def expert_rows(held_out, count: int) -> list[dict]:
    """Held-out records as if their input had no annotation: no label file, no ROIs."""
    _, _, records = held_out
    with_lesions = [r for r in records if r["rois"]][:count]
    return [dict(r, label_relpath=None, rois=[], diseases=[], anatomy=[]) for r in with_lesions]
