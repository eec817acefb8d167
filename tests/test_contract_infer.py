"""``mendflow contract infer``: a starting contract from a sample of a data file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from mendflow._cli_contract import contract as contract_group
from mendflow.cli import main
from mendflow.contracts import Column, Contract, OneOf


def test_infer_jsonl_gives_types_nullability_choices_and_key(tmp_path: Path) -> None:
    """Types and not-null come from the sample; a low-cardinality text column gets `in:`."""
    path = tmp_path / "orders.jsonl"
    lines = [{"id": i, "status": ["new", "paid"][i % 2], "amount": i * 1.5,
              "at": f"2024-01-{1 + i % 28:02d}T10:00:00Z", "note": None if i % 3 else "x"}
             for i in range(120)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(contract_group, ["infer", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# A starting contract")
    contract = Contract.from_spec(yaml.safe_load(result.output)["contract"])
    assert contract.columns == {
        "id": Column("bigint", nullable=False),
        "status": Column("varchar", nullable=False, checks=(OneOf(("new", "paid")),)),
        "amount": Column("double", nullable=False),
        "at": Column("timestamptz", nullable=False),
        "note": Column("varchar"),
    }
    assert contract.unique == ("id",)


def test_infer_csv_to_a_file_and_refuse_to_overwrite(tmp_path: Path) -> None:
    """-o writes the file; a second run needs --force; --sample bounds the rows read."""
    path = tmp_path / "customers.csv"
    path.write_text("customer_id,name,score\n" + "".join(
        f"{i},n{i},{'' if i == 3 else i / 2}\n" for i in range(1, 11)))
    out = tmp_path / "contract.yaml"
    args = ["contract", "infer", str(path), "-o", str(out), "--sample", "5"]
    assert CliRunner().invoke(main, args).exit_code == 0
    contract = Contract.from_spec(yaml.safe_load(out.read_text())["contract"])
    assert contract.columns == {"customer_id": Column("bigint", nullable=False),
                                "name": Column("varchar", nullable=False),
                                "score": Column("double")}
    assert contract.unique == ("customer_id",)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2
    assert "pass --force" in again.output
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0


def test_infer_missing_file_exits_2_with_a_message(tmp_path: Path) -> None:
    """A file that is not there: exit 2, one clear line, no traceback."""
    result = CliRunner().invoke(main, ["contract", "infer", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "file not found" in result.output
    assert "Traceback" not in result.output
