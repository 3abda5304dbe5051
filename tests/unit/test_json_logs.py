"""JSON log lines as an option: the sidecar's lines parse as one JSON object each with the keys the
operator's (Kopf's) JSON logs use, a failure keeps its traceback, and the option reaches an injected
sidecar from the chart's environment."""

from __future__ import annotations

import argparse
import io
import json
import logging

from modelroute_operator.logic.injection import sidecar_container
from modelroute_operator.runtime.webhook_args import add_arguments, settings_from_args
from modelroute_sidecar.main import configure_logging
from modelroute_sidecar.settings import parse_settings


def test_sidecar_json_lines_parse_and_keep_the_traceback() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", stream, log_format="json")
    logger = logging.getLogger("modelroute_sidecar.test")
    logger.info('config "v1" applied')
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("push failed")
    logger.debug("not at INFO")
    handler.stop_writer()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["severity"], line["logger"], line["message"]) for line in lines] == [
        ("info", "modelroute_sidecar.test", 'config "v1" applied'),
        ("error", "modelroute_sidecar.test", "push failed"),
    ]
    assert lines[0]["timestamp"].endswith("+00:00")
    assert "ValueError: boom" in lines[1]["exception"]
    logging.basicConfig(force=True)


def test_text_stays_the_default_and_json_is_chosen_by_flag_or_env() -> None:
    assert parse_settings([]).log_format == "text"
    assert parse_settings(["--log-format", "json"]).log_format == "json"


def test_the_chart_variable_reaches_the_injected_sidecar() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={"MODELROUTE_SIDECAR_LOG_FORMAT": "json"})
    settings = settings_from_args(parser.parse_args(["--webhook-port=8443"]))
    assert settings is not None
    env = {e["name"]: e.get("value") for e in sidecar_container(settings.injection)["env"]}
    assert env["MODELROUTE_LOG_FORMAT"] == "json"
