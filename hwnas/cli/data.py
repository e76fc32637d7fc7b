"""``hwnas scenes``: a task's data, generated (deterministic COCO or VOC-style folders)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hwnas.cli.app import app
from hwnas.cli.inputs import fail
from hwnas.params import MAX_SEED


@app.command()
def scenes(
    out: Annotated[Path, typer.Option(help="Folder to write (replaced whole): train/, val/, "
                                      "test/ (COCO for detection; images/ + masks/ for "
                                      "segmentation), stats.json, contact_sheet.png.")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML of generator settings (the task's SceneConfig: "
             "hwnas.tasks.detection.scenes, hwnas.tasks.segmentation.scenes).")] = None,
    task: Annotated[str, typer.Option(help="detection (boxes) or segmentation (masks).")
                    ] = "detection",
    seed: Annotated[Optional[int], typer.Option(min=0, max=MAX_SEED)] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Scene side, pixels (32-256).")] = None,
    classes: Annotated[Optional[str], typer.Option(
        help="presence (one class: any digit) or digits (0-9).")] = None,
):
    """Generate scenes: real MNIST digits on crops of real photographs, with clutter and
    empty scenes, labelled with boxes or masks; the same settings give the same bytes."""
    from pydantic import ValidationError

    from hwnas.errors import UserError, one_line, read_yaml
    from hwnas.params import validation_message
    from hwnas.tasks import scene_generator

    try:
        SceneConfig, generate = scene_generator(task)
    except UserError as err:
        fail(f"--task: {one_line(err).removeprefix('task: ')}")

    where = str(config) if config else "scenes"
    settings = (read_yaml(config) or {}) if config else {}
    if not isinstance(settings, dict):
        fail(f"{where}: expected a mapping of generator settings")
    given = {"seed": seed, "resolution": resolution, "classes": classes}
    settings.update({k: v for k, v in given.items() if v is not None})
    try:
        cfg = SceneConfig(**settings)
    except ValidationError as err:
        fail(validation_message(err, where))
    if not out.resolve().name:
        fail(f"--out: {out}: name a folder for the scenes")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / "stats.json").is_file():
        fail(f"--out: {out} exists and holds something else than scenes (no stats.json); it "
             "would be replaced: name a new folder")
    stats = generate(cfg, out)
    for split, s in stats.items():
        labels = f"{s['boxes']} boxes" if "boxes" in s else (
            f"{100 * s['foreground_share']['mean']:.1f}% foreground pixels")
        typer.echo(f"{split}: {s['scenes']} scenes, {labels}, {100 * s['empty_share']:.0f}% empty")
    typer.echo(f"-> {out}/ (contact_sheet.png shows the first training scenes)")
