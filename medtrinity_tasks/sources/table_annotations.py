"""The ``image_table`` layout's cells: one image's CSV rows as its class labels, boxes and reference text."""

from __future__ import annotations

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import quote
from medtrinity_tasks.sources.catalog import SourceEntry, TableFile


def table_annotations(source: SourceEntry, lines: list[tuple[TableFile, dict]]) -> dict:
    """One image's rows as image labels, boxes (x0, y0, x1, y1) and reference text."""
    names, boxes, texts = [], [], {}
    for table, line in lines:
        labels = _line_labels(source, table, line)
        if table.box_columns and all(line[c].strip() for c in table.box_columns):
            box = _line_box(table, line)
            boxes += [{"label": name, "bbox_xyxy": box} for name in labels]
        else:
            names += labels
        text = _line_text(table, line)
        if text:
            texts[text] = None  # distinct, in table order
    text = "\n".join(texts) or None
    return {"image_labels": sorted(set(names)), "annotation_boxes": boxes, "reference_text": text}


def _line_text(table: TableFile, line: dict) -> str:
    if len(table.text_columns) == 1:
        return line[table.text_columns[0]].strip()
    parts = [(column, line[column].strip()) for column in table.text_columns]
    return " ".join(f"{column}: {value}" for column, value in parts if value)


def _line_labels(source: SourceEntry, table: TableFile, line: dict) -> list[str]:
    cells = []
    if table.label_column:
        cell = line[table.label_column]
        cells = cell.split(table.label_separator) if table.label_separator else [cell]
    cells += [column for column in table.label_columns or [] if line[column].strip() in table.positive_values]
    labels = []
    for cell in (c.strip() for c in cells):
        label = source.label_named(cell)
        if label is None:
            undefined = "label is not defined by the catalog entry"
            raise InputRejected(undefined, text=f"label {quote(cell)} is not defined by the catalog entry")
        labels.append(label.name)
    return labels


def _line_box(table: TableFile, line: dict) -> list[float]:
    cells = [line[c] for c in table.box_columns]
    if len(cells) == 1:
        cells = cells[0].split(",")
    try:
        a, b, c, d = (float(cell) for cell in cells)
    except ValueError:
        box = f"box [{', '.join(map(quote, cells))}]"
        raise InputRejected("box is not four numbers", text=f"{box} is not four numbers") from None
    return [a, b, a + c, b + d] if table.box_format == "xywh" else [a, b, c, d]
