"""The node's config: the shipped files validate, every problem is one documented line, check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.config import load_config, parse_config
from node.errors import ConfigError
from tests.helpers import card_text, threshold_model

REPO = Path(__file__).resolve().parents[2]
BASE = '[node]\nae_title = "NODE"\ndata_dir = "data"\n'
NET = "must be an IP address or network such as '10.1.2.3' or '10.1.2.0/24'"
AE_RULE = "an AE title has printable ASCII characters but backslash"
PACS = '[[peers]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 4242\n'


def problems(text: str, source: str = "node.toml") -> list[str]:
    """The lines of the ConfigError that ``text`` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source, Path("/srv/node"))
    return str(caught.value).splitlines()


def check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "check-config", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_shipped_config_validates_and_runs_on_one_machine() -> None:
    config = load_config(REPO / "config" / "node.toml")
    assert (config.node.ae_title, config.node.bind, config.node.port) == ("PACSNODE", "127.0.0.1", 11112)
    assert config.node.data_dir == REPO / "var"
    assert config.node.spool_dir == REPO / "var" / "spool"
    assert config.node.index_path.parent == config.node.jobs_path.parent == REPO / "var"
    assert config.node.outbox_dir == REPO / "var" / "outbox"
    assert config.node.log_dir == REPO / "var" / "logs"
    pacs, scanner = config.peer("pacs"), config.peer("scanner")
    assert (pacs.ae_title, pacs.host, pacs.port, pacs.allow_store) == ("ORTHANC", "127.0.0.1", 4242, False)
    assert (scanner.ae_title, scanner.allow_store, scanner.can_receive) == ("STORESCU", True, False)
    assert config.analysis.models == ("lung-nodule-ct", "ecg-rhythm")
    assert config.analysis.send_results_to == ("pacs",)
    assert config.analysis.models_dir == REPO / "models"


def test_shipped_config_states_every_default() -> None:
    """Each key the shipped file sets has the value the model gives when the key is left out."""
    shipped = load_config(REPO / "config" / "node.toml")
    defaults = parse_config(BASE)
    for section in ("limits", "completion", "workers", "sender", "duplicates", "retention", "logging"):
        assert getattr(shipped, section) == getattr(defaults, section), section


def test_site_example_validates() -> None:
    config = load_config(REPO / "config" / "examples" / "site.toml")
    scanners = [p for p in config.peers if p.allow_store and not p.can_receive]
    assert len(scanners) == 2 and all(p.addresses for p in scanners)
    assert config.analysis.send_results_to == ("pacs", "research")
    ed = config.peer("ct-emergency")
    assert ed.accepts_from("10.20.1.15") and not ed.accepts_from("10.20.1.16")
    assert config.peer("ct-radiology").accepts_from("10.20.2.9")
    assert not config.peer("research").accepts_from("10.30.5.40")


def test_minimal_file_takes_the_defaults() -> None:
    config = parse_config(BASE, config_dir=Path("/srv/node"))
    assert config.node.bind == "127.0.0.1" and config.node.port == 11112
    assert config.node.data_dir == Path("/srv/node/data")
    limits = config.limits
    assert (limits.max_associations, limits.max_pdu, limits.min_free_disk_mb) == (10, 0, 1024)
    assert (limits.acse_timeout_s, limits.dimse_timeout_s, limits.network_timeout_s) == (30, 60, 60)
    assert (config.completion.quiet_seconds, config.completion.max_wait_seconds) == (10, 600)
    assert config.completion.late_instances == "reanalyse"
    assert (config.workers.count, config.workers.threads, config.workers.max_attempts) == (1, 0, 5)
    assert config.sender.give_up_after_hours == 24 and config.sender.associations_per_peer == 2
    assert config.duplicates.policy == "keep-first" and config.logging.level == "INFO"
    assert config.peers == () and config.analysis.send_results_to == ()
    retention = config.retention
    assert (retention.enabled, retention.keep_days, retention.free_disk_target_mb, retention.interval_s) == (
        True,
        7,
        0,
        300,
    )
    with pytest.raises(KeyError):
        config.peer("pacs")


def test_retention_settings_are_read_and_related_to_the_disk_floor() -> None:
    text = BASE + "[limits]\nmin_free_disk_mb = 100\n[retention]\nkeep_days = 0\nfree_disk_target_mb = 101\n"
    retention = parse_config(text + "interval_s = 0.5\nenabled = false\n").retention
    assert (retention.keep_days, retention.free_disk_target_mb, retention.interval_s) == (0, 101, 0.5)
    assert not retention.enabled
    # Off (0) is always allowed, whatever the floor; a float is accepted for days.
    assert parse_config(BASE + "[retention]\nfree_disk_target_mb = 0\nkeep_days = 1.5\n").retention.keep_days == 1.5
    assert parse_config(BASE).node.results_dir(42) == Path("data/outbox/analyse-42").resolve()


def test_config_is_frozen() -> None:
    config = parse_config(BASE)
    with pytest.raises(ValidationError):
        config.node.port = 1


@pytest.mark.parametrize(
    ("data_dir", "below_tmp"), [("data", "srv/cfg/data"), ("../var", "srv/var"), ("./a/../b", "srv/cfg/b")]
)
def test_relative_data_dir_starts_at_the_config_folder(tmp_path: Path, data_dir: str, below_tmp: str) -> None:
    folder = tmp_path / "srv" / "cfg"
    folder.mkdir(parents=True)
    path = folder / "node.toml"
    path.write_text(f'[node]\nae_title = "NODE"\ndata_dir = "{data_dir}"\n[analysis]\nmodels_dir = "models"\n')
    config = load_config(path)
    assert config.node.data_dir == tmp_path / below_tmp
    assert config.analysis.models_dir == folder / "models"


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nae_title = "NODE"\ndata_dir = "/var/lib/pacs-node"\n')
    assert load_config(path).node.data_dir == Path("/var/lib/pacs-node")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # Ranges and types.
        (
            BASE + PACS + PACS.replace('"pacs"', '"b"').replace("4242", "70000"),
            "peers.1.port: must be 1..65535, not 70000",
        ),
        (BASE.replace('data_dir = "data"', 'port = 0\ndata_dir = "d"'), "node.port: must be 1..65535, not 0"),
        (BASE.replace("data_dir", 'port = "11112"\ndata_dir'), "node.port: must be an integer, not '11112'"),
        (BASE + "[limits]\nmax_pdu = 100\n", "limits.max_pdu: must be 0 (no limit) or 4096..4294967295, not 100"),
        (BASE + "[limits]\nacse_timeout_s = 0\n", "limits.acse_timeout_s: must be > 0, not 0.0"),
        (BASE + "[workers]\ncount = 65\n", "workers.count: must be 0..64, not 65"),
        (BASE + "[retention]\nkeep_days = -1\n", "retention.keep_days: must be >= 0, not -1.0"),
        (BASE + "[retention]\ninterval_s = 0\n", "retention.interval_s: must be > 0, not 0.0"),
        (BASE + '[retention]\nkeep_days = "7"\n', "retention.keep_days: must be a number, not '7'"),
        (BASE + "[retention]\nenabled = 1\n", "retention.enabled: must be true or false, not 1"),
        (
            BASE + "[retention]\nfree_disk_target_mb = -5\n",
            "retention.free_disk_target_mb: must be 0..1099511627776, not -5",
        ),
        (
            BASE + "[retention]\nkeep = 3\n",
            "retention.keep: unknown key (allowed here: enabled, keep_days, free_disk_target_mb, interval_s)",
        ),
        (
            BASE + "[retention]\nfree_disk_target_mb = 1024\n",
            "retention.free_disk_target_mb: must be 0 (off) or greater than limits.min_free_disk_mb (1024), not 1024",
        ),
        (
            BASE + "[limits]\nmin_free_disk_mb = 5000\n[retention]\nfree_disk_target_mb = 4000\n",
            "retention.free_disk_target_mb: must be 0 (off) or greater than limits.min_free_disk_mb (5000), not 4000",
        ),
        (
            BASE + '[logging]\nlevel = "info"\n',
            "logging.level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR', not 'info'",
        ),
        (
            BASE + '[duplicates]\npolicy = "newest"\n',
            "duplicates.policy: must be 'keep-first' or 'replace', not 'newest'",
        ),
        (
            BASE + '[[peers]]\nname = "s"\nae_title = "S"\nallow_store = "yes"\n',
            "peers.0.allow_store: must be true or false, not 'yes'",
        ),
        ("peers = 3\n" + BASE, "peers: must be an array, not 3"),
        ('node = "x"\n', "node: must be a table, not 'x'"),
        ("", "node: missing (required)"),
        ('[node]\nae_title = "A"\n', "node.data_dir: missing (required)"),
        (BASE.replace('"data"', '""'), "node.data_dir: must be a folder path, not ''"),
        # Unknown keys, at every level, say what is allowed there.
        (
            BASE + "[limit]\n",
            "limit: unknown key (allowed here: node, limits, receive, completion, workers, peers, analysis, rules, "
            "fallback, sender, duplicates, retention, logging, notify, web)",
        ),
        (BASE + "colour = 1\n", "node.colour: unknown key (allowed here: ae_title, bind, port, data_dir, tls)"),
        (
            BASE + "[completion]\nquiet = 5\n",
            "completion.quiet: unknown key (allowed here: quiet_seconds, max_wait_seconds, late_instances)",
        ),
        (
            BASE + PACS + "tls = { verify = false }\n",
            "peers.0.tls.verify: unknown key (allowed here: ca_certificates, certificate, private_key, "
            "verify_hostname, min_version)",
        ),
        (
            BASE + '[analysis]\nmodel = "x"\n',
            "analysis.model: unknown key (allowed here: models, models_dir, send_results_to)",
        ),
        # Relations between keys.
        (
            BASE + PACS + PACS.replace("ORTHANC", "OTHER"),
            "peers.1.name: 'pacs' is already a peer name; names must be unique",
        ),
        (
            BASE + PACS + '[analysis]\nsend_results_to = ["archive"]\n',
            "analysis.send_results_to: 'archive' is not a peer (peers: pacs)",
        ),
        (
            BASE + '[analysis]\nsend_results_to = ["pacs"]\n',
            "analysis.send_results_to: 'pacs' is not a peer (peers: none)",
        ),
        (
            BASE
            + '[[peers]]\nname = "ct"\nae_title = "CT"\nallow_store = true\n[analysis]\nsend_results_to = ["ct"]\n',
            "analysis.send_results_to: peer 'ct' has no host and port to send to",
        ),
        (BASE + '[analysis]\nmodels = ["a", "a"]\n', "analysis.models: 'a' is listed twice"),
        (
            BASE + "[completion]\nquiet_seconds = 20\nmax_wait_seconds = 5\n",
            "completion.max_wait_seconds: must be >= quiet_seconds (20), not 5",
        ),
        (
            BASE + "[sender]\nretry_initial_s = 60\nretry_max_s = 30\n",
            "sender.retry_max_s: must be >= retry_initial_s (60), not 30",
        ),
        (
            BASE + '[[peers]]\nname = "p"\nae_title = "P"\nhost = "pacs"\n',
            "peers.0.port: missing: give host and port to send to this peer, or neither",
        ),
        (
            BASE + '[[peers]]\nname = "p"\nae_title = "P"\naddresses = ["10.0.0.1"]\n',
            "peers.0.addresses: only restricts a peer that may send to us: set allow_store = true",
        ),
        (
            BASE
            + '[[peers]]\nname = "a"\nae_title = "CT"\nallow_store = true\n'
            + '[[peers]]\nname = "b"\nae_title = "CT"\nallow_store = true\n',
            "peers.1.ae_title: 'CT' is already the AE title of peer 'a'; peers that may send to us need distinct ones",
        ),
        # AE titles, names, addresses.
        (
            BASE.replace('"NODE"', '"TOO-LONG-AE-TITLE"'),
            "node.ae_title: 'TOO-LONG-AE-TITLE' has 17 characters; an AE title has at most 16",
        ),
        (
            BASE.replace('"NODE"', '"A\\\\B"'),
            f"node.ae_title: 'A\\B' contains a backslash; {AE_RULE}",
        ),
        (
            BASE.replace('"NODE"', '"A\\tB"'),
            f"node.ae_title: 'A\\tB' contains '\\t'; {AE_RULE}",
        ),
        (
            BASE.replace('"NODE"', '"    "'),
            "node.ae_title: must not be empty or all spaces (an AE title has 1..16 characters)",
        ),
        (
            BASE + '[[peers]]\nname = "Main PACS"\nae_title = "P"\n',
            "peers.0.name: must be 1..64 of a-z, 0-9, '-', '_', starting with a letter or digit, not 'Main PACS'",
        ),
        (
            BASE.replace("data_dir", 'bind = "localhost"\ndata_dir'),
            "node.bind: must be an IP address such as '127.0.0.1' or '0.0.0.0' (all interfaces), not 'localhost'",
        ),
        (BASE + PACS.replace('"127.0.0.1"', '"pacs host"'), "peers.0.host: must be a host name or IP, not 'pacs host'"),
        (
            BASE + '[[peers]]\nname = "s"\nae_title = "S"\nallow_store = true\naddresses = ["10.0.0.1", "300.1.2.3"]\n',
            f"peers.0.addresses.1: {NET}, not '300.1.2.3'",
        ),
        (
            BASE + '[[peers]]\nname = "s"\nae_title = "S"\nallow_store = true\naddresses = ["10.1.2.3/24"]\n',
            f"peers.0.addresses.0: {NET}, not '10.1.2.3/24' (10.1.2.3/24 has host bits set)",
        ),
    ],
)
def test_each_problem_is_one_documented_line(text: str, line: str) -> None:
    assert problems(text) == [f"node.toml: {line}"]


def test_every_problem_is_reported_at_once() -> None:
    text = BASE.replace('"NODE"', '"A\\\\B"') + "port = 0\n[limits]\nmax_pdus = 1\n[workers]\ncount = -1\n"
    assert problems(text, "site.toml") == [
        f"site.toml: node.ae_title: 'A\\B' contains a backslash; {AE_RULE}",
        "site.toml: node.port: must be 1..65535, not 0",
        "site.toml: limits.max_pdus: unknown key (allowed here: max_associations, acse_timeout_s, dimse_timeout_s, "
        "network_timeout_s, max_pdu, min_free_disk_mb, drain_timeout_s)",
        "site.toml: workers.count: must be 0..64, not -1",
    ]


def test_ae_titles_lose_their_padding_and_peers_match_addresses() -> None:
    text = BASE.replace('"NODE"', '" NODE  "')
    text += '[[peers]]\nname = "ct"\nae_title = "CT1 "\nallow_store = true\naddresses = ["10.0.0.0/24", "::1"]\n'
    config = parse_config(text)
    assert config.node.ae_title == "NODE"
    ct = config.peers[0]
    assert ct.ae_title == "CT1"
    assert ct.accepts_from("10.0.0.200") and ct.accepts_from("::1")
    assert not ct.accepts_from("10.0.1.1") and not ct.accepts_from("not an address")


def test_load_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^.*missing\.toml: no such file$"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)
    (tmp_path / "bad.toml").write_bytes(b'[node]\nae_title = "\xff"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: not UTF-8 text"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "notes.toml").write_text("this is not toml\n")
    with pytest.raises(ConfigError, match=r"notes\.toml: not valid TOML: .*line 1"):
        load_config(tmp_path / "notes.toml")


# --- check-config through the command line ------------------------------------------------------------


def test_check_config_shipped_file() -> None:
    done = check_config("config/node.toml")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "config/node.toml: valid"
    text = done.stdout
    assert "PACSNODE listening on 127.0.0.1:11112" in text
    assert str(REPO / "var") in text
    assert "pacs (ORTHANC): receives results at 127.0.0.1:4242" in text
    assert "scanner (STORESCU): may send to us from any address" in text
    assert "lung-nodule-ct" in text and "sha256 verified" in text
    assert "retention finished studies deleted 7 days after their last instance" in text
    assert done.stderr == ""


def test_check_config_site_example() -> None:
    done = check_config("config/examples/site.toml")
    assert done.returncode == 0, done.stderr
    assert "ct-emergency (CT_ED_01): may send to us from 10.20.1.15" in done.stdout
    assert "results   sent to pacs, research" in done.stdout
    assert "retention finished studies deleted 3 days after their last instance, or sooner while less than" in (
        done.stdout
    )


def test_check_config_refuses_a_retention_target_below_the_floor(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(BASE + "[retention]\nfree_disk_target_mb = 10\nkeep_days = -2\n")
    done = check_config(str(path))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"{path}: retention.keep_days: must be >= 0, not -2.0"]
    path.write_text(BASE + "[retention]\nfree_disk_target_mb = 10\n")
    done = check_config(str(path))
    assert done.stderr.splitlines() == [
        f"{path}: retention.free_disk_target_mb: must be 0 (off) or greater than limits.min_free_disk_mb (1024), not 10"
    ]
    path.write_text(BASE + "[retention]\nfree_disk_target_mb = 2048\nkeep_days = 0\n[analysis]\nmodels = []\n")
    done = check_config(str(path))
    assert done.returncode == 0, done.stderr
    assert "retention finished studies deleted at the first pass, or sooner while less than 2,048 MB is free" in (
        done.stdout
    )


def test_check_config_prints_every_problem_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(BASE + PACS.replace("4242", "70000") + '[analysis]\nsend_results_to = ["archive"]\nextra = 1\n')
    done = check_config(str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{path}: peers.0.port: must be 1..65535, not 70000",
        f"{path}: analysis.extra: unknown key (allowed here: models, models_dir, send_results_to)",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file"), (b"\x00\x01 binary \xff", "not UTF-8 text"), (b"<xml>not toml</xml>\n", "not valid TOML")],
)
def test_check_config_unreadable_file_is_one_line(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "node.toml"
    if content is not None:
        path.write_bytes(content)
    done = check_config(str(path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{path}: {expected}")
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_check_config_reports_missing_and_invalid_models(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "threshold-test").mkdir(parents=True)
    threshold_model(models / "threshold-test" / "model.onnx")
    (models / "threshold-test" / "model.toml").write_text(card_text("f" * 64))
    path = tmp_path / "node.toml"
    path.write_text(BASE + '[analysis]\nmodels = ["threshold-test", "nope"]\nmodels_dir = "models"\n')
    done = check_config(str(path))
    assert done.returncode == 1, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: analysis.models.0: ") and "sha256 is " in lines[0]
    assert lines[1] == f"{path}: analysis.models.1: model 'nope' not found in {models}; known models: threshold-test"


def test_check_config_valid_with_a_verified_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "threshold-test").mkdir(parents=True)
    sha = threshold_model(models / "threshold-test" / "model.onnx")
    (models / "threshold-test" / "model.toml").write_text(card_text(sha))
    path = tmp_path / "node.toml"
    path.write_text(BASE + '[analysis]\nmodels = ["threshold-test"]\nmodels_dir = "models"\n')
    done = check_config(str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{path}: valid"
    assert "threshold-test 1.0 (sha256 verified)" in done.stdout
    assert "results   sent to nowhere" in done.stdout
    assert not (tmp_path / "data").exists(), "check-config must not create anything"


# --- TLS: [node.tls] and a peer's tls -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of PEM files made by trustme: ca.pem, node.pem + node.key, other.key (another certificate's)."""
    import trustme

    folder = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    leaf = ca.issue_cert("node.example.org")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "node.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "node.key"))
    ca.issue_cert("other.example.org").private_key_pem.write_to_path(str(folder / "other.key"))
    (folder / "notes.txt").write_text("not a certificate\n")
    (folder / "certs").mkdir()
    return folder


LISTENER = '[node.tls]\ncertificate = "node.pem"\nprivate_key = "node.key"\n'
TLS_PEER = PACS + "tls = true\n"


def test_tls_settings_take_paths_from_the_config_folder(pem: Path) -> None:
    text = BASE + LISTENER + 'ca_certificates = "ca.pem"\nrequire_client_certificate = true\n'
    text += TLS_PEER + PACS.replace('"pacs"', '"archive"') + 'tls = { ca_certificates = "ca.pem", '
    text += 'certificate = "node.pem", private_key = "node.key", verify_hostname = false, min_version = "1.3" }\n'
    text += PACS.replace('"pacs"', '"plain"') + "tls = false\n"
    (pem / "node.toml").write_text(text)
    config = load_config(pem / "node.toml")
    tls = config.node.tls
    assert tls is not None and (tls.certificate, tls.private_key, tls.ca_certificates) == (
        pem / "node.pem",
        pem / "node.key",
        pem / "ca.pem",
    )
    assert tls.require_client_certificate and tls.min_version == "1.2"
    pacs, archive, plain = config.peers
    assert pacs.tls is not None and pacs.tls.ca_certificates is None and pacs.tls.verify_hostname
    assert archive.tls is not None and archive.tls.certificate == pem / "node.pem"
    assert not archive.tls.verify_hostname and archive.tls.min_version == "1.3"
    assert plain.tls is None
    assert parse_config(BASE).node.tls is None and parse_config(BASE + PACS).peers[0].tls is None


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (BASE + LISTENER.replace("node.pem", "missing.pem"), "node.tls.certificate: no such file: {pem}/missing.pem"),
        (BASE + LISTENER.replace("node.pem", "certs"), "node.tls.certificate: not a file: {pem}/certs"),
        (BASE + LISTENER.replace('"node.pem"', '""'), "node.tls.certificate: must be a file path, not ''"),
        (
            BASE + LISTENER.replace("node.pem", "notes.txt"),
            "node.tls.certificate: {pem}/notes.txt holds no PEM certificate",
        ),
        (
            BASE + LISTENER.replace("node.key", "other.key"),
            "node.tls.private_key: {pem}/other.key is not the key of the certificate {pem}/node.pem",
        ),
        (
            BASE + LISTENER.replace("node.key", "ca.pem"),
            "node.tls.private_key: {pem}/ca.pem holds no PEM private key",
        ),
        (
            BASE + LISTENER + 'ca_certificates = "node.key"\n',
            "node.tls.ca_certificates: {pem}/node.key holds no PEM certificate",
        ),
        (
            BASE + LISTENER + "require_client_certificate = true\n",
            "node.tls.require_client_certificate: needs ca_certificates: the CA certificates client certificates "
            "must chain to",
        ),
        (BASE + LISTENER + 'min_version = "1.1"\n', "node.tls.min_version: must be '1.2' or '1.3', not '1.1'"),
        (BASE + '[node.tls]\nprivate_key = "node.key"\n', "node.tls.certificate: missing (required)"),
        (
            BASE + PACS + 'tls = "yes"\n',
            "peers.0.tls: must be true, false or a table such as { ca_certificates = \"ca.pem\" }, not 'yes'",
        ),
        (
            BASE + '[[peers]]\nname = "ct"\nae_title = "CT"\nallow_store = true\ntls = true\n',
            "peers.0.tls: only for sending to this peer: give host and port (the listener's TLS is [node.tls])",
        ),
        (
            BASE + PACS + 'tls = { certificate = "node.pem" }\n',
            "peers.0.tls.private_key: missing: give certificate and private_key (for mutual TLS), or neither",
        ),
        (
            BASE + PACS + 'tls = { ca_certificates = "nope.pem" }\n',
            "peers.0.tls.ca_certificates: no such file: {pem}/nope.pem",
        ),
    ],
)
def test_each_tls_problem_is_one_line_naming_the_key_and_the_file(pem: Path, text: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "node.toml", pem)
    assert str(caught.value).splitlines() == ["node.toml: " + line.replace("{pem}", str(pem))]


def test_an_encrypted_or_unreadable_key_is_refused(pem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((pem / "node.key").read_bytes(), password=None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "locked.key").write_bytes(locked)
    text = BASE + LISTENER.replace('"node.key"', f'"{tmp_path / "locked.key"}"')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "node.toml", pem)  # never prompts for the password
    assert str(caught.value) == (
        f"node.toml: node.tls.private_key: {tmp_path / 'locked.key'} is encrypted; the node needs an unencrypted "
        "key (readable by its user only)"
    )
    monkeypatch.setattr("node.config.tls.os.access", lambda path, mode: False)  # tests run as root here
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + LISTENER, "node.toml", pem)
    assert str(caught.value).splitlines() == [
        f"node.toml: node.tls.certificate: cannot read {pem / 'node.pem'} (permission denied for this user)",
        f"node.toml: node.tls.private_key: cannot read {pem / 'node.key'} (permission denied for this user)",
    ]


def test_the_commented_tls_example_in_the_shipped_config_is_valid_toml() -> None:
    shipped = (REPO / "config" / "node.toml").read_text().splitlines()
    start = shipped.index("# [node.tls]")
    example = [line.removeprefix("# ") for line in shipped[start : start + 6]]
    assert example[-1] == 'min_version = "1.2"'
    assert problems(BASE + "\n".join(example) + "\n") == [
        "node.toml: node.tls.certificate: no such file: /etc/pacs-node/tls/node.pem",
        "node.toml: node.tls.private_key: no such file: /etc/pacs-node/tls/node.key",
        "node.toml: node.tls.ca_certificates: no such file: /etc/pacs-node/tls/hospital-ca.pem",
    ]


def test_check_config_reports_tls_files(pem: Path) -> None:
    path = pem / "bad.toml"
    path.write_text(BASE + LISTENER.replace("node.pem", "gone.pem") + PACS + 'tls = { ca_certificates = "x.pem" }\n')
    done = check_config(str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{path}: node.tls.certificate: no such file: {pem / 'gone.pem'}",
        f"{path}: peers.0.tls.ca_certificates: no such file: {pem / 'x.pem'}",
    ]
    path.write_text(BASE + LISTENER + TLS_PEER)
    done = check_config(str(path))
    assert done.returncode == 0, done.stderr
