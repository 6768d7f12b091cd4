"""``report.md``: the human-readable page of an export folder, made from its ``student.yaml`` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["report_markdown"]


def _f(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _n(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _complexity(record: Mapping[str, Any]) -> list[str]:
    comp = record["complexity"]
    lines = ["## Complexity", "", "| figure | value | limit | ok |", "|---|---:|---:|:---:|"]
    for row in comp["rows"]:
        lines.append(f"| {row['figure']} | {row['value']:,} | {row['limit']:,} | {'yes' if row['ok'] else 'NO'} |")
    lines += ["", f"Counted from the architecture: parameter bytes at {comp['param_dtype']} (the DCASE count: "
              "torchinfo parameters x bytes), the deployed estimate (BatchNorm folded into the conv before it) and "
              f"MACs for one clip of shape {comp['input_shape']}. " + comp.get("note", ""), ""]
    return lines


def _deployed(dep: Mapping[str, Any]) -> list[str]:
    by_dtype = " + ".join(f"{dtype} {n:,}" for dtype, n in (dep.get("by_dtype") or {}).items())
    lines = [
        "## Deployed model",
        "",
        f"`{dep['file']}`: the {dep['precision']} graph (input `x` and output `logits` float32), made from the "
        f"float32 graph `{dep['reference_file']}` by onnxruntime {dep['runtime']['onnxruntime']}.",
        "",
        "| measured from the file | bytes |",
        "|---|---:|",
        f"| weights (kernels + biases): the figure held against the limit | **{dep['weights_bytes']:,}** "
        f"({by_dtype}) |",
        f"| limit (max_param_bytes) | {dep['max_param_bytes']:,} |",
        f"| counted (DCASE: params x bytes) / estimated from the architecture | {_n(dep['counted_param_bytes'])} / "
        f"{_n(dep['estimated_param_bytes'])} |",
        f"| quantisation scales / zero points (not counted) | {dep['scales_bytes']:,} / {dep['zero_points_bytes']:,} |",
        f"| whole file | {dep['file_bytes']:,} |",
        "",
        f"{dep['n_weights']:,} numbers after every BatchNorm was folded into the conv before it (one bias per "
        "channel; torchinfo counts a BatchNorm's weight and bias).",
    ]
    q = dep.get("quantization")
    if q:
        w, cal = q["weights"], q["calibration"]
        lines.append(
            f"Static quantisation, {q['format']}: int8 weights, symmetric, "
            f"{'per channel' if w['per_channel'] else 'per tensor'}"
            f"{', 7-bit grid (reduce_range)' if w['reduce_range'] else ''}; int8 activations per tensor; int32 biases; "
            f"ranges calibrated ({cal['method']}) on {cal['clips']} {cal['split']} clips drawn with seed {cal['seed']}."
        )
    c = dep["check"]
    lines += [f"Against the float32 graph on {c['clips']} test clips: max |logit difference| "
              f"{c['max_abs_logit_diff_vs_fp32']:.3g}, same class for {c['argmax_agreement_vs_fp32']:.1%}.", ""]
    return lines


def _scores(test: Mapping[str, Any], fp32: Mapping[str, Any], precision: str) -> list[str]:
    lines = [f"## Test split (scored once; the deployed {precision} graph run by onnxruntime)", "",
             f"| figure | deployed ({precision}) | float32 | drop |", "|---|---:|---:|---:|"]
    for key, label in (("macro_accuracy", "macro accuracy"), ("accuracy", "accuracy"),
                       ("seen_macro_accuracy", "macro accuracy, seen devices"),
                       ("unseen_macro_accuracy", "macro accuracy, unseen devices"), ("log_loss", "log loss")):
        if test.get(key) is None and fp32.get(key) is None:
            continue
        a, b = test.get(key), fp32.get(key)
        d = None if a is None or b is None else (a - b if key == "log_loss" else b - a)
        lines.append(f"| {label} | {_f(a)} | {_f(b)} | {_signed(d)} |")
    lines.append(f"\n{test['n']} clips; drop = float32 minus deployed (log loss: deployed minus float32).")
    if test.get("per_device"):
        lines += ["", "| device | seen | macro accuracy (deployed) | float32 | clips |", "|---|:---:|---:|---:|---:|"]
        for dev, d in test["per_device"].items():
            seen = {True: "seen", False: "unseen", None: "?"}[d.get("seen")]
            ref = (fp32.get("per_device") or {}).get(dev, {}).get("macro_accuracy")
            lines.append(f"| {dev} | {seen} | {_f(d.get('macro_accuracy'))} | {_f(ref)} | {d['n']} |")
    if test.get("per_class"):
        lines += ["", "| class | accuracy (deployed) | float32 |", "|---|---:|---:|"]
        for label, acc in test["per_class"].items():
            lines.append(f"| {label} | {_f(acc)} | {_f((fp32.get('per_class') or {}).get(label))} |")
    return lines


def _qat(qat: Mapping[str, Any] | None) -> list[str]:
    if not qat or not qat.get("variants"):
        return []
    lines = ["", "## Post-training quantisation and QAT", "",
             "| model | validation macro accuracy | test macro accuracy |", "|---|---:|---:|"]
    for name, v in qat["variants"].items():
        chosen = " (exported)" if name == qat.get("chosen") else ""
        lines.append(f"| {name}{chosen} | {_f(v.get('val_macro_accuracy'))} | {_f(v.get('test_macro_accuracy'))} |")
    lines.append(f"\n{qat.get('reason', '')}")
    return lines


def report_markdown(record: Mapping[str, Any]) -> str:
    """The report of an export (its student.yaml ``record``) as Markdown."""
    prov = record["provenance"]
    metrics = record["metrics"]
    dep = record["deployed"]
    lines = [
        f"# Exported student: trial {prov['trial_id']} of run {prov['run']}",
        "",
        f"Exported {prov['created_utc']} by asc-search {prov['asc_search_version']}"
        + (" (retrained from scratch on all of train)" if prov["retrained"] else " (weights of the trial's best "
           "validation epoch)") + ".",
        "",
        *_complexity(record),
        *_deployed(dep),
        *_scores(metrics["test"], metrics.get("test_fp32") or {}, dep["precision"]),
        *_qat(dep.get("qat")),
    ]
    val = metrics.get("validation") or {}
    split = metrics.get("validation_split") or {}
    lines += ["", "## Validation", ""]
    if val.get("val_macro_accuracy") is not None:
        lines.append(f"- macro accuracy during the search (float32): {val['val_macro_accuracy']:.4f}")
    if split:
        lines.append(f"- macro accuracy of this export on the validation split: deployed "
                     f"{_f(split['deployed']['macro_accuracy'])}, float32 {_f(split['fp32']['macro_accuracy'])}"
                     + (" (retrained on these clips)" if prov["retrained"] else ""))
    if record.get("against_reference"):
        lines.append(f"- against the search's reference arms: {record['against_reference']['text']}")
    lines += _seeds_lines(record.get("seeds"))
    if record.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {m}" for m in record["warnings"]]
    d, t = record["distillation"], record["training"]
    lines += ["", "## Training", ""]
    if d:
        emb = (f"emb_weight {d.get('emb_weight')} ({d.get('emb_loss')})" if d.get("emb_weight") else
               "no embedding matching (emb_weight 0)")
        lines.append(f"- distillation: kd_weight {d.get('kd_weight')}, temperature {d.get('temperature')}, {emb}")
    if t:
        lines.append(f"- training: {t.get('epochs')} epochs, lr {t.get('lr')}, batch size {t.get('batch_size')}")
    lines += [
        f"- ONNX check: max |onnxruntime - torch| = {record['onnx']['max_abs_diff']:.2e} on "
        f"{record['onnx']['check_clips']} test clips (the float32 graph)",
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
