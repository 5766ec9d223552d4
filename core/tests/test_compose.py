"""docker-compose.yml, read with a YAML parser (Docker does not run here): it runs what ./bin/dev runs, in the
production topology of docs/operations.md, and its proxy runs the very file the topology test runs without Docker
(core/tests/live/test_topology.py)."""

import re
import shutil

import yaml

from live_stack import PROXY_TEMPLATE, ROOT, LiveStack, proxy_config_render


def _compose(*names: str) -> dict:
    """The compose files merged as `docker compose -f a -f b` does for the keys they use (mappings merged)."""

    def merge(base: dict, override: dict) -> dict:
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return merged

    result: dict = {}
    for name in names:
        result = merge(result, yaml.safe_load((ROOT / name).read_text()))
    return result


def _replicas(service: dict) -> int:
    return service.get("deploy", {}).get("replicas", 1)


def test_compose_runs_every_process_bin_dev_runs():
    # given the processes ./bin/dev starts: its data services and each `run NAME ...`
    script = (ROOT / "bin" / "dev").read_text()
    started = set(re.findall(r"^run (\w+) ", script, flags=re.MULTILINE))
    started |= {name for name, call in [("postgres", "pg_start"), ("redis", "redis_start"), ("rabbitmq", "rabbitmq_start")]
                if re.search(rf"^{call} ", script, flags=re.MULTILINE)}  # fmt: skip
    assert started == {"postgres", "redis", "rabbitmq", "web", "stream", "worker", "beat"}

    # then compose has a service for each
    services = _compose("docker-compose.yml")["services"]
    assert started <= set(services), started - set(services)


def test_compose_runs_two_webs_and_two_workers_behind_one_proxy_and_the_single_file_one_of_each():
    services = _compose("docker-compose.yml")["services"]
    assert (_replicas(services["web"]), _replicas(services["worker"]), _replicas(services["beat"])) == (2, 2, 1)
    assert _replicas(services["stream"]) == 1 and _replicas(services["proxy"]) == 1
    # Only the proxy is published: every request goes through it.
    assert [name for name, service in services.items() if service.get("ports")] == ["proxy"]
    assert services["proxy"]["image"].startswith("nginx:")

    single = _compose("docker-compose.yml", "deploy/compose.single.yml")["services"]
    assert (_replicas(single["web"]), _replicas(single["worker"])) == (1, 1)
    assert set(single) == set(services)


def test_the_proxy_runs_the_file_the_topology_test_runs_with_the_same_placeholders():
    proxy = _compose("docker-compose.yml")["services"]["proxy"]
    # the official image renders /etc/nginx/templates/*.template into conf.d/ (replacing its default site)
    [mount] = proxy["volumes"]
    source, target, _mode = mount.split(":")
    assert (ROOT / source).resolve() == PROXY_TEMPLATE
    assert target == "/etc/nginx/templates/default.conf.template"

    # compose and the test give the template the same names, and each renders it whole
    stack = LiveStack(webs=2, proxy=True)
    try:
        test_values = stack.proxy_config_values()
    finally:
        shutil.rmtree(stack.dir)
    compose_values = {name: str(value) for name, value in proxy["environment"].items()}
    compose_values["BASE_DOMAIN"] = "localhost"  # `${BASE_DOMAIN:-localhost}`: compose's own default
    assert set(compose_values) == set(test_values)
    template = PROXY_TEMPLATE.read_text()
    rendered = proxy_config_render(template, compose_values)
    assert "server web:8000;" in rendered and "server stream:8001;" in rendered
    proxy_config_render(template, test_values)


def test_the_proxy_reaches_the_ports_the_processes_listen_on():
    services = _compose("docker-compose.yml")["services"]
    environment = services["proxy"]["environment"]
    stream_command = services["stream"]["command"]
    stream_port = stream_command[stream_command.index("--port") + 1]
    assert environment["SOCIOMILE_STREAM_SERVERS"] == f"server stream:{stream_port};"
    # gunicorn.conf.py's default bind, which the web service does not override
    assert 'os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")' in (ROOT / "gunicorn.conf.py").read_text()
    assert environment["SOCIOMILE_WEB_SERVERS"] == "server web:8000;"
    assert services["proxy"]["ports"] == ["${PROXY_PORT:-8000}:" + environment["SOCIOMILE_PROXY_LISTEN"]]


def test_webs_and_stream_report_liveness_to_compose_never_their_dependencies():
    services = _compose("docker-compose.yml")["services"]
    for name, port in (("web", 8000), ("stream", 8001)):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://localhost:{port}/health/live" in probe, (name, probe)


def test_the_template_leaves_nginx_variables_alone():
    # envsubst in the official image replaces $NAME of every variable of its environment (all upper case): an
    # nginx variable of ours in upper case would be replaced with an empty string there and not here.
    template = PROXY_TEMPLATE.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in template.splitlines())
    assert re.findall(r"\$\{?[A-Z_][A-Z0-9_]*", code) == [
        "${SOCIOMILE_WEB_SERVERS", "${SOCIOMILE_STREAM_SERVERS", "${SOCIOMILE_PROXY_LISTEN", "${BASE_DOMAIN",
        "${BASE_DOMAIN", "${SOCIOMILE_PROXY_ACCESS_LOG",
    ]
