"""Bad-input corpus, network-traffic CSVs: labels that are empty (they used to become an attack family named
``unknown``), and a UTF-8 byte-order mark (spreadsheet exports; it used to make the first column "unexpected")."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow", reason="the traffic readers need pyarrow (pip install 'fedshield[traffic]')")

from fedshield.core.errors import DataFileError  # noqa: E402
from fedshield.data.traffic import cicids2017, toniot  # noqa: E402
from fedshield.data.traffic.cicids2017 import read_cicids2017  # noqa: E402
from fedshield.data.traffic.toniot import read_toniot  # noqa: E402
from test_traffic_readers import _cic_row, _ton_row, _write  # noqa: E402

TON = ("Train_Test_datasets", "Train_Test_Network_dataset", "train_test_network.csv")


def _ton_rows():
    return [_ton_row("1554198358", "tcp", "0.5", "0", "normal"), _ton_row("1554198359", "udp", "-", "1", "scanning"),
            _ton_row("1554198360", "tcp", "1.25", "1", "ddos")]


def test_cicids2017_empty_label_names_the_file_column_and_row(tmp_path):
    root = tmp_path / "MachineLearningCVE"
    _write(root / cicids2017.FILES[0], list(cicids2017.COLUMNS),
           [_cic_row("80", "1", "1", "BENIGN"), _cic_row("81", "1", "1", " "), _cic_row("82", "1", "1", "")])
    with pytest.raises(DataFileError, match=r"Monday-WorkingHours\.pcap_ISCX\.csv: column 'Label' is empty in 2 data "
                                            r"row\(s\) \(first: data row 1\)"):
        read_cicids2017(root)


def test_toniot_empty_attack_type_is_refused_even_when_label_says_attack(tmp_path):
    rows = _ton_rows()
    rows[1][toniot.COLUMNS.index("type")] = ""  # label 1: the old label/type check did not see it
    _write(tmp_path.joinpath(*TON), list(toniot.COLUMNS), rows)
    with pytest.raises(DataFileError, match=r"train_test_network\.csv: column 'type' is empty in 1 data row\(s\) "
                                            r"\(first: data row 1\)"):
        read_toniot(tmp_path)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    rows = _ton_rows()
    text = ",".join(toniot.COLUMNS) + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    path = tmp_path.joinpath(*TON)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    raw = read_toniot(tmp_path)
    assert raw.family.tolist() == ["benign", "scanning", "ddos"]
    assert raw.numeric[:, raw.numeric_names.index("src_port")].tolist() == [4444.0] * 3
