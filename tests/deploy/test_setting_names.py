"""Every REELFAB_* variable a deployment gives a container is a setting the code reads: a typo in a
ConfigMap or the compose file would otherwise be ignored silently (Settings ignores unknown variables)
and the service would run on the default."""

from __future__ import annotations

from typing import Any

import pytest

from reelfab.settings import Settings
from tests.deploy import test_compose_and_images as compose
from tests.deploy import test_k8s as k8s

SETTINGS = {f"REELFAB_{name.upper()}" for name in Settings.model_fields}


def unknown(names: Any) -> list[str]:
    return sorted(n for n in names if n.startswith("REELFAB_") and n not in SETTINGS)


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_reelfab_variable_in_the_manifests_is_a_setting(overlay: str) -> None:
    found: dict[str, list[str]] = {}
    for name, deployment in k8s.deployments(overlay).items():
        secret_refs = [e["name"] for e in k8s.container(deployment).get("env", []) if "valueFrom" in e]
        if bad := unknown([*k8s.environment(overlay, deployment), *secret_refs]):
            found[name] = bad
    for name, job in k8s.of_kind(overlay, "Job").items():
        if bad := unknown(e["name"] for e in k8s.container_of_job(job).get("env", [])):
            found[f"job {name}"] = bad
    assert not found, f"{overlay}: variables no setting reads: {found}"


def test_every_reelfab_variable_in_the_compose_file_is_a_setting() -> None:
    found = {name: bad for name, service in compose.COMPOSE["services"].items()
             if (bad := unknown(compose.environment(service)))}
    assert not found, f"docker-compose.yml: variables no setting reads: {found}"


def test_a_misspelt_variable_is_caught() -> None:
    assert unknown(["REELFAB_KAFKA_BOOTSTRAP", "REELFAB_KAFKA_BOOTSTRAPS", "PATH"]) == ["REELFAB_KAFKA_BOOTSTRAPS"]
