import pytest

from minijepa.results import RESULTS, markdown_tables, mean_std, stale_tables, sync_tables


def test_markdown_tables_reads_headings_titles_rows(tmp_path):
    path = tmp_path / "r.md"
    path.write_text("# A\n\ntext\n\n| t | x | y |\n|---|---|---|\n| r1 | 1.0 ± 0.5 | 2 |\n| r2 | 3 | |\n\n"
                    "## B\n| u | z |\n|---|---|\n| s | 4 |\nafter\n")
    tables = markdown_tables(path)
    assert [(t["heading"], t["title"], t["columns"]) for t in tables] == [("A", "t", ["x", "y"]), ("B", "u", ["z"])]
    assert tables[0]["rows"] == {"r1": {"x": "1.0 ± 0.5", "y": "2"}, "r2": {"x": "3", "y": ""}}
    assert mean_std(tables[0]["rows"]["r1"]["x"]) == (1.0, 0.5) and mean_std("3") == (3.0, 0.0)


def test_mean_std_rejects_text():
    with pytest.raises(ValueError, match="neither a number"):
        mean_std("not run yet")


def test_the_committed_results_parse():
    compare = [t for t in markdown_tables(RESULTS) if t["title"].startswith("fashion-cpu")]
    assert compare
    for t in compare:
        for row in ("I-JEPA (latent targets)", "pixel targets"):
            assert all(0 < mean_std(t["rows"][row][c])[0] < 100 for c in t["columns"][:4])


def test_sync_tables_copies_the_study_table_with_the_same_header(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "s.md").write_text("| study t | x |\n|---|---|\n| r | 2.0 |\n| new | 3.0 |\n")
    results = tmp_path / "results.md"
    results.write_text("# A\n\n| study t | x |\n|---|---|\n| r | 1.0 |\n\nsaid\n\n| other | y |\n|---|---|\n| q | 5 |\n")
    assert stale_tables(results, studies) == ["| study t | x |"]
    assert sync_tables(results, studies) == ["| study t | x |"]
    assert results.read_text() == ("# A\n\n| study t | x |\n|---|---|\n| r | 2.0 |\n| new | 3.0 |\n\nsaid\n\n"
                                   "| other | y |\n|---|---|\n| q | 5 |\n")  # the table without a study: untouched
    assert stale_tables(results, studies) == []


def test_the_committed_results_carry_the_studies_tables_as_they_are():
    assert stale_tables() == [], "docs/results.md: run python -m minijepa.results --sync"


@pytest.mark.parametrize("path", [RESULTS, *sorted(RESULTS.parent.glob("studies/*.md"))], ids=lambda p: p.name)
def test_every_committed_table_row_fills_its_header(path):
    """A row with a cell too few shifts every later cell under the wrong column (a reader keys cells by header); only
    a note row ("| pixel targets | not run yet |") may be shorter."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            width = line.count("|")
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                assert row.count("|") in (width, 3), f"{path.name}: {row}"
