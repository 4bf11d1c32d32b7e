"""Readers of the published NIDS dataset files, on small files written here with the exact headers and quirks."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="the traffic readers need pyarrow (pip install 'fedshield[traffic]')")

from fedshield.data.idx import DataFileError, DataNotFoundError  # noqa: E402
from fedshield.data.traffic import cicids2017, nbaiot, toniot, unsw_nb15  # noqa: E402
from fedshield.data.traffic.cicids2017 import read_cicids2017  # noqa: E402
from fedshield.data.traffic.nbaiot import read_nbaiot  # noqa: E402
from fedshield.data.traffic.toniot import read_toniot  # noqa: E402
from fedshield.data.traffic.unsw_nb15 import read_unsw_nb15  # noqa: E402


def _write(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


# ------------------------------------------------------------------------------------------- UNSW-NB15


def _unsw_row(i: int, proto: str, service: str, state: str, cat: str, label: int) -> list[str]:
    values = {c: str(i + k * 0.5) for k, c in enumerate(unsw_nb15.COLUMNS)}
    values.update(id=str(i + 1), proto=proto, service=service, state=state, attack_cat=cat, label=str(label))
    return [values[c] for c in unsw_nb15.COLUMNS]


def _unsw(tmp_path: Path) -> Path:
    root = tmp_path / "unsw"
    _write(root / "UNSW_NB15_training-set.csv", list(unsw_nb15.COLUMNS), [
        _unsw_row(0, "tcp", "-", "FIN", "Normal", 0),
        _unsw_row(1, "udp", "dns", "INT", "Generic", 1),
        _unsw_row(2, "tcp", "http", "FIN", "Exploits", 1),
    ])
    _write(root / "UNSW_NB15_testing-set.csv", list(unsw_nb15.COLUMNS), [
        _unsw_row(3, "arp", "-", "INT", "Normal", 0),
        _unsw_row(4, "tcp", "ftp", "CON", "Reconnaissance", 1),
    ])
    return root


def test_unsw_nb15_reads_both_files_with_categoricals_and_families(tmp_path):
    raw = read_unsw_nb15(_unsw(tmp_path))
    assert len(raw) == 5
    assert raw.is_test.tolist() == [False, False, False, True, True]
    assert raw.family.tolist() == ["benign", "generic", "exploits", "benign", "reconnaissance"]
    assert raw.categorical["proto"].tolist() == ["tcp", "udp", "tcp", "arp", "tcp"]
    assert "id" not in raw.numeric_names and "label" not in raw.numeric_names and "proto" not in raw.numeric_names
    assert len(raw.numeric_names) == 45 - 6  # id, proto, service, state, attack_cat, label
    j = raw.numeric_names.index("dur")
    assert raw.numeric[:, j].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]


def test_unsw_nb15_label_disagreeing_with_attack_cat_is_an_error(tmp_path):
    root = _unsw(tmp_path)
    _write(root / "UNSW_NB15_testing-set.csv", list(unsw_nb15.COLUMNS), [_unsw_row(0, "tcp", "-", "FIN", "DoS", 0)])
    with pytest.raises(DataFileError, match=r"UNSW_NB15_testing-set\.csv.*'label'.*'attack_cat'"):
        read_unsw_nb15(root)


def test_unsw_nb15_wrong_header_names_file_and_column(tmp_path):
    root = _unsw(tmp_path)
    header = list(unsw_nb15.COLUMNS)
    header[header.index("sbytes")] = "src_bytes"
    _write(root / "UNSW_NB15_training-set.csv", header, [_unsw_row(0, "tcp", "-", "FIN", "Normal", 0)])
    with pytest.raises(DataFileError, match=r"UNSW_NB15_training-set\.csv.*missing column\(s\) \['sbytes'\].*'src_bytes'"):
        read_unsw_nb15(root)


def test_unsw_nb15_truncated_file_names_the_file(tmp_path):
    root = _unsw(tmp_path)
    path = root / "UNSW_NB15_training-set.csv"
    path.write_text(path.read_text()[:-40])  # the last row loses its last fields
    with pytest.raises(DataFileError, match=r"UNSW_NB15_training-set\.csv: not a complete 45-column CSV"):
        read_unsw_nb15(root)


def test_unsw_nb15_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(DataNotFoundError, match="UNSW_NB15_training-set.csv.*research.unsw.edu.au"):
        read_unsw_nb15(tmp_path)


# ----------------------------------------------------------------------------------------- CIC-IDS2017


def _cic_row(port: str, bytes_s: str, pkts_s: str, label: str, base: float = 1.0) -> list[str]:
    row = [str(base + k) for k in range(len(cicids2017.COLUMNS))]
    row[0] = port
    row[cicids2017.COLUMNS.index("Flow Bytes/s")] = bytes_s
    row[cicids2017.COLUMNS.index(" Flow Packets/s")] = pkts_s
    row[-1] = label
    return row


def test_cicids2017_quirks(tmp_path):
    """Leading-space names, the duplicated Fwd Header Length, Infinity/NaN, repeated header rows, mixed-type
    integer/float text, and the Windows-1252 label."""
    root = tmp_path / "MachineLearningCVE"
    header = list(cicids2017.COLUMNS)
    _write(root / cicids2017.FILES[0], header, [
        _cic_row("80", "Infinity", "Infinity", "BENIGN"),
        _cic_row("443", "", "NaN", "BENIGN"),
        header,  # a copy of the header inside the file
        _cic_row("22", "12.5", "3", "Web Attack \u2013 Brute Force"),  # byte 0x96 in cp1252
    ], encoding="cp1252")
    _write(root / cicids2017.FILES[6], header, [_cic_row("8080", "1e3", "2", "PortScan", base=7.0)])
    raw = read_cicids2017(tmp_path)
    assert len(raw) == 4
    assert raw.family.tolist() == ["benign", "benign", "web_attack_brute_force", "portscan"]
    names = raw.numeric_names
    assert "Label" not in names and "Flow Bytes/s" in names and "Fwd Header Length.1" in names
    assert names.count("Fwd Header Length") == 1 and len(names) == 78
    b = raw.numeric[:, names.index("Flow Bytes/s")]
    assert np.isposinf(b[0]) and np.isnan(b[1]) and b[2] == 12.5 and b[3] == 1000.0
    assert np.isnan(raw.numeric[1, names.index("Flow Packets/s")])
    assert raw.numeric[:, names.index("Destination Port")].tolist() == [80, 443, 22, 8080]
    assert raw.port_columns == ("Destination Port",)


def test_cicids2017_non_numeric_value_names_file_and_column(tmp_path):
    root = tmp_path / "MachineLearningCVE"
    _write(root / cicids2017.FILES[1], list(cicids2017.COLUMNS), [_cic_row("80", "fast", "1", "BENIGN")])
    with pytest.raises(DataFileError, match=r"Tuesday-WorkingHours\.pcap_ISCX\.csv: column 'Flow Bytes/s' holds a non-numeric value 'fast'"):
        read_cicids2017(root)


# ---------------------------------------------------------------------------------------------- N-BaIoT


def test_nbaiot_header_is_the_published_115_columns():
    assert len(nbaiot.COLUMNS) == 115
    assert nbaiot.COLUMNS[:4] == ("MI_dir_L5_weight", "MI_dir_L5_mean", "MI_dir_L5_variance", "MI_dir_L3_weight")
    assert "HH_L0.1_pcc" in nbaiot.COLUMNS and nbaiot.COLUMNS[-1] == "HpHp_L0.01_pcc"


def _nb_rows(n: int, value: float) -> list[list[str]]:
    return [[str(value + i)] * 115 for i in range(n)]


def test_nbaiot_device_folders(tmp_path):
    d0, d2 = nbaiot.DEVICES[0], nbaiot.DEVICES[2]
    _write(tmp_path / d0 / "benign_traffic.csv", list(nbaiot.COLUMNS), _nb_rows(3, 0.0))
    _write(tmp_path / d0 / "mirai_attacks" / "syn.csv", list(nbaiot.COLUMNS), _nb_rows(2, 10.0))
    _write(tmp_path / d0 / "gafgyt_attacks" / "combo.csv", list(nbaiot.COLUMNS), _nb_rows(1, 20.0))
    _write(tmp_path / d2 / "benign_traffic.csv", list(nbaiot.COLUMNS), _nb_rows(2, 30.0))
    raw = read_nbaiot(tmp_path)
    assert raw.family.tolist() == ["benign"] * 3 + ["gafgyt_combo", "mirai_syn", "mirai_syn", "benign", "benign"]
    assert raw.device.tolist() == [0, 0, 0, 0, 0, 0, 2, 2]
    assert raw.numeric[:, 0].tolist() == [0, 1, 2, 20, 10, 11, 30, 31]
    assert raw.device_names == nbaiot.DEVICES


def test_nbaiot_flat_kaggle_layout(tmp_path):
    _write(tmp_path / "2.benign.csv", list(nbaiot.COLUMNS), _nb_rows(2, 0.0))
    _write(tmp_path / "2.mirai.udpplain.csv", list(nbaiot.COLUMNS), _nb_rows(1, 5.0))
    _write(tmp_path / "1.gafgyt.tcp.csv", list(nbaiot.COLUMNS), _nb_rows(1, 9.0))
    raw = read_nbaiot(tmp_path)
    assert raw.device.tolist() == [0, 1, 1, 1]
    assert raw.family.tolist() == ["gafgyt_tcp", "benign", "benign", "mirai_udpplain"]


def test_nbaiot_truncated_row_names_the_file(tmp_path):
    path = _write(tmp_path / nbaiot.DEVICES[0] / "benign_traffic.csv", list(nbaiot.COLUMNS), _nb_rows(2, 0.0))
    with open(path, "a") as f:
        f.write("1.0,2.0,3.0\n")
    with pytest.raises(DataFileError, match=r"benign_traffic\.csv: not a complete 115-column CSV"):
        read_nbaiot(tmp_path)


# ---------------------------------------------------------------------------------------------- ToN-IoT


def _ton_row(ts: str, proto: str, dur: str, label: str, kind: str) -> list[str]:
    v = {c: "-" for c in toniot.COLUMNS}
    v.update(ts=ts, src_ip="192.168.1.1", src_port="4444", dst_ip="10.0.0.1", dst_port="80", proto=proto,
             service="-", duration=dur, src_bytes="100", dst_bytes="0", conn_state="S0", missed_bytes="0",
             src_pkts="1", src_ip_bytes="60", dst_pkts="0", dst_ip_bytes="0", dns_qclass="0", dns_qtype="0",
             dns_rcode="0", dns_AA="-", http_request_body_len="0", http_response_body_len="0",
             http_status_code="0", label=label, type=kind)
    return [v[c] for c in toniot.COLUMNS]


def test_toniot_network_file(tmp_path):
    _write(tmp_path / "Train_Test_datasets" / "Train_Test_Network_dataset" / "train_test_network.csv", list(toniot.COLUMNS), [
        _ton_row("1554198358", "tcp", "0.5", "0", "normal"),
        _ton_row("1554198359", "udp", "-", "1", "scanning"),
        _ton_row("1554198360", "tcp", "1.25", "1", "ddos"),
    ])
    raw = read_toniot(tmp_path)
    assert raw.family.tolist() == ["benign", "scanning", "ddos"]
    assert not {"ts", "src_ip", "dst_ip", "http_uri", "label", "type"} & set(raw.numeric_names)
    assert {"src_port", "dst_port"} <= set(raw.numeric_names) and raw.port_columns == ("src_port", "dst_port")
    dur = raw.numeric[:, raw.numeric_names.index("duration")]
    assert dur[0] == 0.5 and np.isnan(dur[1]) and dur[2] == 1.25
    assert raw.categorical["proto"].tolist() == ["tcp", "udp", "tcp"]
    assert raw.is_test is None and raw.order.tolist() == [1554198358, 1554198359, 1554198360]
