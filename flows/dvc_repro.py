"""``dvc repro`` as the pipeline runs it: DVC's warnings and errors reach stderr, its
per-stage chatter does not (the running-stage lines, the git and push hints: ``hwnas run``
says once how to record a run). ``dvc repro -q`` would hide DVC's errors too."""
import logging
import sys

if __name__ == "__main__":
    from dvc.cli import main
    from dvc.ui import ui

    logging.getLogger("dvc").setLevel(logging.WARNING)  # info lines: stage names, hints
    ui.enable = lambda: None  # ui.write: "Use `dvc push`..." after every stage
    sys.exit(main(["repro", *sys.argv[1:]]))
