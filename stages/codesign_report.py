"""DVC stage ``codesign_report@<task>``: a task's co-design study over every point of
``codesign.grid`` (``hwnas.codesign.report``). Writes ``results/codesign/<task>/``:
``table.csv``, ``pareto.png``, ``cross.png``, ``cross.csv``, ``report.md`` and ``metrics.json``.
"""
from __future__ import annotations

import json

from hwnas import layout
from hwnas.params import load_params, run_stage


def main() -> None:
    from hwnas.codesign import report
    from hwnas.codesign.grid import specs
    from hwnas.codesign.point import PointFiles
    from hwnas.errors import UserError
    from hwnas.files import staged

    cfg = load_params()["codesign"]
    task = layout.current_task()
    out_dir = layout.codesign_dir(task)
    by_key = specs(cfg["base"], cfg["grid"])
    results = {}
    for key in by_key:
        path = PointFiles(out_dir / "points" / key).metrics
        if not path.is_file():
            raise UserError(f"{path}: not found: run `hwnas codesign --task {task}`")
        results[key] = json.loads(path.read_text())
    df = report.table(cfg["grid"], results, by_key, cfg["cost"])
    ratio = report.cross(df, by_key)
    s = report.summary(df, ratio, cfg["area_budget_mm2"])
    with staged() as out:
        df.to_csv(out.path(out_dir / "table.csv"), index=False)
        ratio.to_csv(out.path(out_dir / "cross.csv"))
        report.plot_pareto(df, out.path(out_dir / "pareto.png"), cfg["area_budget_mm2"])
        report.plot_cross(ratio, df, out.path(out_dir / "cross.png"))
        out.text(out_dir / "report.md", report.markdown(df, ratio, s, cfg["base"], cfg["cost"],
                                                        task))
        out.json(out_dir / "metrics.json", s)
    print(f"codesign {task}: {s['points']} points, {s['points_at_least_40pct']} with a network "
          f"at least 40% below the chip's baseline latency; {out_dir / 'report.md'}")


if __name__ == "__main__":
    run_stage("codesign_report", main)
