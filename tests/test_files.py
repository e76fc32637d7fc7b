"""Written files appear whole or not at all; a journal torn by a kill reads back clean."""
import pytest

from hwnas.files import (NotFiniteError, append_journal, atomic_dir, atomic_path, read_journal,
                         write_json)


def test_a_failing_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": ')  # half written when the work fails
            raise RuntimeError("disk full")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_refuses_non_finite_numbers(tmp_path):
    with pytest.raises(NotFiniteError, match="latency_ms is inf"):
        write_json(tmp_path / "m.json", {"latency_ms": float("inf")})
    assert not (tmp_path / "m.json").exists()


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "models"
    with atomic_dir(folder) as d:
        (d / "a.pt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(folder) as d:
            (d / "b.pt").write_text("new, half done")
            raise KeyboardInterrupt
    assert sorted(p.name for p in folder.iterdir()) == ["a.pt"]
    with atomic_dir(folder) as d:
        (d / "b.pt").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["b.pt"]  # no stale file kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_a_torn_journal_line_is_dropped_and_the_next_append_starts_clean(tmp_path):
    journal = tmp_path / "journal.jsonl"
    append_journal(journal, [{"trial": 0}, {"trial": 1}])
    with journal.open("a") as f:
        f.write('{"trial": 2, "acc')  # a kill in the middle of a line
    assert read_journal(journal) == [{"trial": 0}, {"trial": 1}]
    append_journal(journal, [{"trial": 2}])
    assert read_journal(journal) == [{"trial": 0}, {"trial": 1}, {"trial": 2}]
    assert read_journal(tmp_path / "none.jsonl") == []
