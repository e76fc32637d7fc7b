"""DVC stage ``data@<task>``: the task's dataset, written under ``data/<task>/`` so that its
bytes are hashed and cached like any stage's output.

- detection, segmentation: the task's scene generator (``hwnas.tasks.<task>.scenes``) with
  the task's ``scenes`` params: COCO (detection) or VOC-style (segmentation) folders
  ``train/``, ``val/``, ``test/``, ``stats.json`` and a contact sheet;
  ``train_supernet.data.dataset`` names the folder.
- classification: the dataset is read where it ships (``train_supernet.data.dataset``);
  ``dataset.json`` records its splits and a hash of their arrays, so a changed dataset
  shows in ``dvc status``.
"""
from __future__ import annotations

import json

from hwnas import layout
from hwnas.params import ParamsError, load_params, run_stage


def main() -> None:
    import hashlib

    from hwnas import tasks
    from hwnas.files import staged, write_json

    params = load_params()
    task, out = layout.current_task(), layout.task_data(layout.current_task())
    if task in tasks.SCENES:
        if params.get("scenes") is None:
            raise ParamsError(f"params.yaml: {task}.scenes: missing (the scene generator's "
                              "settings)")
        from pydantic import ValidationError

        from hwnas.params import validation_message

        config_class, generate = tasks.scene_generator(task)
        try:
            config = config_class(**params["scenes"])
        except ValidationError as err:
            raise ParamsError(validation_message(err, f"params.yaml: {task}.scenes")) from None
        stats = generate(config, out)  # the folder replaced whole, atomically
        print("data: " + ", ".join(f"{s}: {v['scenes']} scenes" for s, v in stats.items())
              + f" -> {out}/")
        return
    d = params["train_supernet"]["data"]
    splits = tasks.torch_task(task).load(d, params["base"]["seed"])
    digest = hashlib.sha256()
    for part in (splits.train, splits.val, splits.test):
        digest.update(part.x.numpy().tobytes())
        digest.update(part.y.numpy().tobytes())
    card = {**splits.summary(), "sha256": digest.hexdigest()}
    with staged() as files:
        write_json(files.dir(out) / "dataset.json", card)
    print(f"data: {json.dumps(card)}")


if __name__ == "__main__":
    run_stage("data", main)
