"""./bin/dev's ports (bin/lib.sh's port_choose): below Linux's ephemeral range, and a taken one never makes it fail
obscurely: a data service moves to the next free port and says so, a web port or a port given in its variable
stops it with the port, what it is for and the variable that chooses another."""

import os
import re
import socket
import subprocess
import sys
from contextlib import closing

from live_stack import ROOT

# bin/lib.sh checks ports with the venv's Python: this one's.
VENV = {"SOCIOMILE_VENV": os.path.dirname(os.path.dirname(sys.executable))}
PORT_CHOICES = re.compile(r'^port_choose (\w+) ("[^"]+"|\S+) (\w+) (\d+)( fixed)?$', re.MULTILINE)


def _port_choose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs port_choose in bash with bin/lib.sh loaded, as bin/dev does, and prints the chosen port."""
    script = 'source "$0/bin/lib.sh"; port_choose CHOSEN "$@"; echo "chosen $CHOSEN"'
    return subprocess.run(["bash", "-c", script, str(ROOT), *args], env={**os.environ, **VENV, **(env or {})},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def _held_port() -> socket.socket:
    """A port held the way a client's connection holds its local port: bound, without SO_REUSEADDR."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def test_bin_dev_default_ports_are_below_the_ephemeral_range():
    # given the kernel's range for outgoing connections' local ports
    low, _high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    # when bin/dev's defaults are read
    choices = PORT_CHOICES.findall((ROOT / "bin" / "dev").read_text())
    # then every server port it picks is below it
    assert [variable for _result, _what, variable, _default, _fixed in choices] == [
        "PORT", "STREAM_PORT", "SOCIOMILE_PG_PORT", "SOCIOMILE_REDIS_PORT", "SOCIOMILE_AMQP_PORT", "SOCIOMILE_AMQP_DIST_PORT",
    ]  # fmt: skip
    assert all(int(default) < low for *_rest, default, _fixed in choices), choices


def test_a_taken_data_service_port_moves_to_the_next_free_one_and_says_so():
    with closing(_held_port()) as held:
        port = held.getsockname()[1]
        result = _port_choose("PostgreSQL", "SOCIOMILE_TEST_PORT", str(port), env={"SOCIOMILE_TEST_PORT": ""})
    assert result.returncode == 0, result.stderr
    chosen = int(result.stdout.split()[-1])
    assert port < chosen <= port + 100
    assert f"port {port} (PostgreSQL) is taken: using {chosen} (set SOCIOMILE_TEST_PORT to choose)" in result.stderr


def test_a_free_default_port_is_used_as_it_is():
    with closing(_held_port()) as held:
        port = held.getsockname()[1]
    result = _port_choose("Redis", "SOCIOMILE_TEST_PORT", str(port), env={"SOCIOMILE_TEST_PORT": ""})
    assert (result.returncode, result.stdout.split()[-1]) == (0, str(port)), result.stderr


def test_a_taken_web_port_stops_bin_dev_naming_the_port_and_its_variable():
    with closing(_held_port()) as held:
        port = held.getsockname()[1]
        result = _port_choose("web", "PORT", str(port), "fixed", env={"PORT": ""})
    assert result.returncode == 1
    assert "chosen" not in result.stdout
    suggested = int(re.search(rf"error: port {port} \(web\) is taken: choose another, e\.g\. PORT=(\d+) \./bin/dev",
                              result.stderr).group(1))  # fmt: skip
    assert port < suggested <= port + 100


def test_a_taken_port_given_in_its_variable_stops_bin_dev_and_is_never_replaced():
    with closing(_held_port()) as held:
        port = held.getsockname()[1]
        result = _port_choose("PostgreSQL", "SOCIOMILE_PG_PORT", "15432", env={"SOCIOMILE_PG_PORT": str(port)})
    assert result.returncode == 1
    assert f"error: port {port} (PostgreSQL, from SOCIOMILE_PG_PORT) is taken: choose another, e.g. SOCIOMILE_PG_PORT=" in result.stderr


def test_two_services_never_get_the_same_free_port():
    # given the first default taken, the second service's default is the first one's fallback
    with closing(_held_port()) as held:
        port = held.getsockname()[1]
        script = ('source "$0/bin/lib.sh"; port_choose A first FIRST_PORT "$1"; port_choose B second SECOND_PORT "$2"; '
                  'echo "$A $B"')  # fmt: skip
        result = subprocess.run(["bash", "-c", script, str(ROOT), str(port), str(port + 1)],
                                env={**os.environ, **VENV},
                                capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = map(int, result.stdout.split())
    assert first != second and first > port and second > port
