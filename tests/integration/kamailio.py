"""A Kamailio (Debian's, with its tls module) as the TLS SIP peer that is not our code.

It listens on UDP and TLS on loopback and bridges the two, record-routing everything:

- an initial request arriving over UDP (SIPp, which has no TLS) goes to ``to_tls`` over TLS (the exchange's
  tls: listener), presenting Kamailio's client certificate (for mutual TLS);
- one arriving over TLS (the exchange dialling ``sips:``) goes to ``to_udp`` over UDP (a SIPp callee), after
  Kamailio checked the exchange's client certificate against the test CA.

Kamailio verifies the exchange's certificate chain against the same CA. Its log goes to ``kamailio.log``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.sipp import HOST, _wait_bound
from tests.tls_pki import Issued

MODULES = ("tls", "tm", "sl", "rr", "maxfwd", "textops", "siputils", "pv", "xlog")
MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules")

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:{host}:{udp_port}
listen=tls:{host}:{tls_port}
enable_tls=yes
tcp_crlf_ping=yes
mpath="{mpath}"
{loads}
modparam("tls", "config", "{tls_cfg}")
modparam("rr", "enable_double_rr", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    xlog("L_INFO", "kam: $rm $ru from $si:$sp over $pr\\n");
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if ($pr == "tls") {{
        $ru = "sip:" + $rU + "@{to_udp}";  # before record_route(): a sips Record-Route on the UDP side
        $du = "sip:{to_udp};transport=udp";  # would send the callee's in-dialog requests over TLS
    }} else {{
        $du = "sip:{to_tls};transport={forward}";
    }}
    record_route();
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"""

TLS_CONFIG = """[server:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = {require}
private_key = {key}
certificate = {cert}
ca_list = {ca}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = {key}
certificate = {cert}
ca_list = {ca}
"""


def kamailio_binary() -> str | None:
    return shutil.which("kamailio")


def tls_module_installed() -> bool:
    return any((Path(d) / "tls.so").exists() for d in MODULE_DIRS)


class Kamailio:
    """One Kamailio bridging UDP and TLS (see the module docstring); a context manager."""

    def __init__(self, workdir: Path, *, udp_port: int, tls_port: int, to_tls: str, to_udp: str, cert: Issued,
                 ca_file: Path, require_client_cert: bool = True, forward: str = "tls", shm_mb: int = 64) -> None:
        """``forward``: the transport towards ``to_tls`` ("udp" for a plain baseline through the same proxy);
        ``shm_mb``: its shared memory (transactions live there: hundreds of CPS need hundreds of MB)."""
        self.shm_mb = shm_mb
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.udp_port, self.tls_port = udp_port, tls_port
        mpath = next(d for d in MODULE_DIRS if (Path(d) / "tls.so").exists())
        tls_cfg = workdir / "tls.cfg"
        tls_cfg.write_text(TLS_CONFIG.format(key=cert.key_file, cert=cert.cert_file, ca=ca_file,
                                             require="yes" if require_client_cert else "no"))
        self.config = workdir / "kamailio.cfg"
        self.config.write_text(CONFIG.format(
            host=HOST, udp_port=udp_port, tls_port=tls_port, mpath=mpath, tls_cfg=tls_cfg, to_tls=to_tls,
            to_udp=to_udp, forward=forward, loads="\n".join(f'loadmodule "{m}.so"' for m in MODULES)))
        self.log_path = workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Kamailio:
        binary = kamailio_binary()
        assert binary is not None
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, timeout=30,
                               check=False)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio refused its config:\n{check.stderr.decode(errors='replace')[-4000:]}")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-DD", "-E", "-f", str(self.config), "-m", str(self.shm_mb), "-M", "8",
                 "-w", str(self.workdir), "-Y", str(self.workdir)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        if not (_wait_bound(self.tls_port, "tcp", timeout) and _wait_bound(self.udp_port, "udp", timeout)):
            self.stop()
            raise RuntimeError(f"kamailio did not start listening:\n{self.log()}")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        time.sleep(0.1)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
