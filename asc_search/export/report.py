"""``report.md``: the human-readable page of an export folder, made from its ``student.yaml`` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["report_markdown"]


def report_markdown(record: Mapping[str, Any]) -> str:
    """The report of an export (its student.yaml ``record``) as Markdown."""
    test = record["metrics"]["test"]
    comp = record["complexity"]
    prov = record["provenance"]
    lines = [
        f"# Exported student: trial {prov['trial_id']} of run {prov['run']}",
        "",
        f"Exported {prov['created_utc']} by asc-search {prov['asc_search_version']}"
        + (" (retrained from scratch on all of train)" if prov["retrained"] else " (weights of the trial's best "
           "validation epoch)") + ".",
        "",
        "## Complexity (deployed model)",
        "",
        "| figure | value | limit | ok |",
        "|---|---:|---:|:---:|",
    ]
    for row in comp["rows"]:
        lines.append(f"| {row['figure']} | {row['value']:,} | {row['limit']:,} | {'yes' if row['ok'] else 'NO'} |")
    lines += [
        "",
        f"Parameter bytes at {comp['param_dtype']}; MACs for one clip of shape {comp['input_shape']}. "
        + comp.get("note", ""),
        "",
        "## Test split (scored once)",
        "",
        f"- macro accuracy: **{test['macro_accuracy']:.4f}**  (accuracy {test['accuracy']:.4f}, "
        f"log loss {test['log_loss']:.4f}, {test['n']} clips)",
    ]
    val = record["metrics"].get("validation") or {}
    for kind in ("seen", "unseen"):
        if test.get(f"{kind}_macro_accuracy") is not None:
            lines.append(f"- macro accuracy on {kind} devices: {test[f'{kind}_macro_accuracy']:.4f}")
    if val.get("val_macro_accuracy") is not None:
        lines.append(f"- validation macro accuracy during the search: {val['val_macro_accuracy']:.4f}")
    if record.get("against_reference"):
        lines.append(f"- against the search's reference arms: {record['against_reference']['text']}")
    if test.get("per_device"):
        lines += ["", "| device | seen | macro accuracy | clips |", "|---|:---:|---:|---:|"]
        for dev, d in test["per_device"].items():
            seen = {True: "seen", False: "unseen", None: "?"}[d.get("seen")]
            macro = d.get("macro_accuracy")
            lines.append(f"| {dev} | {seen} | {'-' if macro is None else f'{macro:.4f}'} | {d['n']} |")
    if test.get("per_class"):
        lines += ["", "| class | accuracy |", "|---|---:|"]
        for label, acc in test["per_class"].items():
            lines.append(f"| {label} | {'-' if acc is None else f'{acc:.4f}'} |")
    lines += _seeds_lines(record.get("seeds"))
    if record.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {m}" for m in record["warnings"]]
    d, t = record["distillation"], record["training"]
    lines += ["", "## Training", ""]
    if d:
        lines.append(
            f"- distillation: kd_weight {d.get('kd_weight')}, temperature {d.get('temperature')}, "
            f"emb_weight {d.get('emb_weight')} ({d.get('emb_loss')})"
        )
    if t:
        lines.append(f"- training: {t.get('epochs')} epochs, lr {t.get('lr')}, batch size {t.get('batch_size')}")
    lines += [
        f"- ONNX check: max |onnxruntime - torch| = {record['onnx']['max_abs_diff']:.2e} on "
        f"{record['onnx']['check_clips']} test clips",
        "",
        "## Provenance",
        "",
        f"- feature cache fingerprint: {prov.get('feature_fingerprint')} ({prov.get('feature_cache')})",
        f"- teacher fingerprint(s): {prov.get('teacher_fingerprints')}",
        f"- search file sha256: {prov.get('search_file_sha256')}",
        "",
    ]
    return "\n".join(lines)


def _seeds_lines(seeds: Mapping[str, Any] | None) -> list[str]:
    """The evidence over seeds (export ``seeds=N``) as report lines."""
    if not seeds:
        return []

    def pm(stat: Mapping[str, Any]) -> str:
        if stat.get("mean") is None:
            return "-"
        return f"{stat['mean']:.4f}" + (f" ± {stat['sd']:.4f}" if stat.get("sd") is not None else "")

    return [
        "",
        f"## Over {len(seeds['seeds'])} seeds ({', '.join(str(s) for s in seeds['seeds'])})",
        "",
        f"{seeds['how']}; mean ± sample sd over seeds.",
        "",
        f"- test macro accuracy: **{pm(seeds['test_macro_accuracy'])}**",
        f"- unseen-device test macro accuracy: {pm(seeds['test_unseen_macro_accuracy'])}",
        f"- validation macro accuracy: {pm(seeds['val_macro_accuracy'])}",
        f"- the exported weights are those of {seeds['weights']}",
    ]
