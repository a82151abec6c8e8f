"""The Kubernetes manifests, checked as rendered by `kubectl kustomize`: in the base and in each variant under
k8s/overlays (scale to zero, and the shorter wait docs/tuning.md recommends).

Nothing here reaches a cluster, so everything that can be known about the manifests without one is checked:
the objects and their cross references, the values shared with db/ and the Dockerfiles, Kubernetes' own
schemas (kubernetes-validate, strict) for every supported version, KEDA's CRD schema (cloudcoil's models,
strict), the keys KEDA's postgresql scaler reads, checkov, and the replica counts the HPA will ask for, from
the trigger's query run against the real schema.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keda_emulation  # tools/, put on the path by conftest.py
import localpg
import psycopg2
import pytest
import yaml
from support import (
    KUBECTL,
    NAMESPACE,
    SECRET,
    STOP_MARGIN,
    VARIANTS,
    containers,
    env,
    expand,
    kustomize,
    load_loop,
    objects,
    one,
    option,
    pod_templates,
    secret_data,
)

ROOT = Path(__file__).resolve().parent.parent
CHECKOV = Path(sys.executable).parent.parent / "checkov" / "bin" / "checkov"  # its pins clash with pytest's

# The Kubernetes minor versions the manifests must be valid for: the README promises 1.30 to 1.36, the minors
# KEDA's releases are tested on, and 1.37's schema is checked too. kubernetes-validate checks every core object
# against each version's published schema.
SUPPORTED_KUBERNETES = [f"1.{minor}" for minor in range(30, 38)]  # 1.30 to 1.37

KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}

# The trigger metadata keys KEDA's postgresql scaler reads: the `keda:"name=..."` tags of postgreSQLMetadata
# in kedacore/keda pkg/scalers/postgresql_scaler.go whose order includes triggerMetadata, plus <name>FromEnv for
# those read from resolvedEnv. KEDA ignores any other key silently (the article's activationQueryValue).
POSTGRESQL_TRIGGER_KEYS = {
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
    "connectionFromEnv",
    "passwordFromEnv",
}
# The same struct's names whose order includes authParams: what a TriggerAuthentication may set.
POSTGRESQL_AUTH_PARAMS = {"connection", "host", "port", "userName", "dbName", "sslmode", "password"}

# The loops' UID and GID, from their Dockerfiles; the postgres image's own postgres user is 999:999.
POSTGRES_IMAGE_UID = 999


def matches(selector, labels):
    """True when a matchLabels-only selector selects these labels."""
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are expected here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def postgres_seconds(value):
    """A PostgreSQL time setting in seconds; a bare number is in milliseconds, as for these settings."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?", value)
    assert match, f"not a PostgreSQL duration: {value!r}"
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}[unit]


def dockerfile_user(service):
    users = re.findall(r"^USER\s+(\S+)", (ROOT / service / "Dockerfile").read_text(), re.M)
    assert len(users) == 1, f"{service}/Dockerfile should switch user once, found {users}"
    uid, _, gid = users[0].partition(":")
    return int(uid), int(gid) if gid else None


# ---------------------------------------------------------------------------------------------------------
# Validators. Each returns a list of problems, so that the tests below can also show that they catch mistakes.


def kubernetes_errors(doc, version):
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [
            f"{doc['kind']}/{doc['metadata']['name']} on {version}: {error.message} at "
            f"{'.'.join(str(p) for p in error.absolute_path)}"
        ]
    return []


def keda_errors(doc):
    """KEDA's CRD schema, strictly: unknown fields, snake_case aliases and wrong types are all errors."""
    from cloudcoil.models.keda import v1alpha1
    from pydantic import ValidationError

    model = {"ScaledObject": v1alpha1.ScaledObject, "TriggerAuthentication": v1alpha1.TriggerAuthentication}
    try:
        # extra="forbid" rejects fields the CRD does not define (the models themselves would ignore them);
        # by_name=False accepts only the CRD's own camelCase names, as the API server does.
        model[doc["kind"]].model_validate(doc, strict=True, extra="forbid", by_name=False)
    except ValidationError as error:
        return [
            f"{doc['kind']}/{doc['metadata']['name']}: {e['msg']} at {'.'.join(map(str, e['loc']))}"
            for e in error.errors()
        ]
    return []


def scaler_errors(scaled_object):
    """What KEDA's postgresql scaler would ignore or refuse in the ScaledObject's triggers."""
    problems = []
    for trigger in scaled_object["spec"]["triggers"]:
        if trigger["type"] != "postgresql":
            problems.append(f"unexpected trigger type {trigger['type']!r}")
            continue
        metadata = trigger["metadata"]
        for key in sorted(set(metadata) - POSTGRESQL_TRIGGER_KEYS):
            problems.append(f"the postgresql scaler does not read trigger metadata key {key!r}")
        if "query" not in metadata:
            problems.append("no query")
        for key in ("targetQueryValue", "activationTargetQueryValue"):
            if key in metadata:
                try:
                    float(metadata[key])  # the scaler parses both as float64
                except ValueError:
                    problems.append(f"{key} is not a number: {metadata[key]!r}")
        if float(metadata.get("targetQueryValue", "0")) <= 0:
            problems.append("targetQueryValue must be above 0 (the scaler refuses 0 or a missing one)")
    return problems


def trigger_auth_errors(trigger_auth):
    return [
        f"the postgresql scaler does not read auth parameter {ref['parameter']!r}"
        for ref in trigger_auth["spec"].get("secretTargetRef", [])
        if ref["parameter"] not in POSTGRESQL_AUTH_PARAMS
    ]


def settled_replicas(scaled_object, count):
    """The consumers KEDA and its HPA settle on while the trigger's query returns `count`, from a Deployment
    just created: the emulation (tools/keda_emulation.py) run for 40 evaluations, longer than any window."""
    autoscaler = keda_emulation.Autoscaler(
        keda_emulation.from_manifest(scaled_object), keda_emulation.DEPLOYMENT_DEFAULT_REPLICAS
    )
    for _ in range(40):
        autoscaler.evaluate(autoscaler.next_evaluation(), count)
    return autoscaler.replicas


# ---------------------------------------------------------------------------------------------------------
# Rendering and structure.


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_without_warnings(variant):
    result = kustomize(VARIANTS[variant])
    assert result.returncode == 0, result.stderr
    # kustomize reports deprecated fields (commonLabels, patchesStrategicMerge, ...) on stderr only.
    assert result.stderr == ""


@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_and_names(variant):
    docs = objects(variant)
    names = sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "ConfigMap")
    assert names == sorted(
        [
            ("Namespace", NAMESPACE),
            ("NetworkPolicy", "default-deny-ingress"),
            ("NetworkPolicy", "postgres"),
            ("Secret", SECRET),
            ("Service", "postgres"),
            ("StatefulSet", "postgres"),
            ("Deployment", "job-pusher"),
            ("Deployment", "job-consumer"),
            ("TriggerAuthentication", "keda-trigger-auth-postgresql"),
            ("ScaledObject", "job-consumer-scaler"),
        ]
    )
    # The generated ConfigMap carries a content hash, so the StatefulSet rolls when init.sql changes.
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert re.fullmatch(r"postgres-init-[a-z0-9]{10}", config_map["metadata"]["name"])
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_labels(variant):
    docs = objects(variant)
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == NAMESPACE, doc["metadata"]["name"]
    for workload, template in pod_templates(docs):
        labels = template["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == NAMESPACE
        assert labels["app.kubernetes.io/name"] == workload["metadata"]["name"]
        selector = workload["spec"]["selector"]
        assert matches(selector, labels)
        # Selectors are immutable: kustomize's labels must stay out of them.
        assert "app.kubernetes.io/part-of" not in selector["matchLabels"]


def test_kustomizations_use_current_syntax():
    paths = [ROOT / "kustomization.yaml"]
    for folder in ("k8s", "db"):
        paths += (ROOT / folder).rglob("kustomization.yaml")
    assert len(paths) >= 5  # the root, k8s/base, db/, the component and its overlay
    for path in paths:
        kustomization = yaml.safe_load(path.read_text())
        for deprecated in ("commonLabels", "patchesStrategicMerge", "patchesJson6902", "bases", "vars"):
            assert deprecated not in kustomization, f"{path.relative_to(ROOT)} uses {deprecated}"


def test_scale_to_zero_changes_only_min_replicas():
    base, variant = objects("base"), objects("scale-to-zero")
    assert one(base, "ScaledObject")["spec"]["minReplicaCount"] == 1
    assert one(variant, "ScaledObject")["spec"]["minReplicaCount"] == 0
    one(base, "ScaledObject")["spec"]["minReplicaCount"] = 0
    assert base == variant


# ---------------------------------------------------------------------------------------------------------
# Cross references and the values shared with the rest of the repository.


@pytest.mark.parametrize("variant", VARIANTS)
def test_secret_trigger_authentication_scaled_object_deployment(variant):
    docs = objects(variant)
    assert one(docs, "Secret", SECRET)["metadata"]["name"] == SECRET  # no hash suffix: KEDA looks it up by name

    trigger_auth = one(docs, "TriggerAuthentication", "keda-trigger-auth-postgresql")
    assert trigger_auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": SECRET, "key": URL_KEYS["keda"]}
    ]

    scaled_object = one(docs, "ScaledObject", "job-consumer-scaler")
    (trigger,) = scaled_object["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == trigger_auth["metadata"]["name"]
    assert trigger["authenticationRef"].get("kind", "TriggerAuthentication") == "TriggerAuthentication"

    target = scaled_object["spec"]["scaleTargetRef"]
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target.get("kind", "Deployment") == "Deployment"
    assert one(docs, "Deployment", target["name"])["metadata"]["name"] == "job-consumer"


# The Secret's key for each program's connection string: the environment variable db/passwords.sql reads.
URL_KEYS = {program: f"{program.upper()}_DATABASE_URL" for program in localpg.ROLES}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_program_reads_its_own_roles_connection_string_from_the_one_secret(variant):
    docs = objects(variant)
    data = secret_data(docs)
    for program in ("pusher", "consumer"):
        (container,) = containers(one(docs, "Deployment", f"job-{program}")["spec"]["template"])
        key = URL_KEYS[program]
        assert env(container)["DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": key}}
    for program, key in URL_KEYS.items():
        user = psycopg2.extensions.parse_dsn(data[key])["user"]
        assert user == localpg.ROLES[program][0], f"{key} connects as {user}"
        assert user != data["POSTGRES_USER"], "a program connects as the administrator"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_reference_resolves(variant):
    docs = objects(variant)
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    data = secret_data(docs)
    for workload, template in pod_templates(docs):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for container in containers(template):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, mount
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET and ref["key"] in data, variable


def test_credentials_are_written_in_one_file():
    """Each connection string once, every password in k8s/base/credentials.env only, among kustomize's inputs."""
    inputs = [ROOT / "kustomization.yaml", ROOT / "db" / "kustomization.yaml"]
    inputs += [p for p in (ROOT / "k8s").rglob("*") if p.is_file()]
    credentials = ROOT / "k8s" / "base" / "credentials.env"
    data = secret_data(objects("base"))
    passwords = [data["POSTGRES_PASSWORD"]] + [
        psycopg2.extensions.parse_dsn(data[k])["password"] for k in URL_KEYS.values()
    ]
    uris = []
    for path in inputs:
        text = path.read_text()
        uris += [path] * text.count("postgresql://")
        if path != credentials:
            for password in passwords:
                assert password not in text, f"{path.relative_to(ROOT)} repeats a password"
    assert uris == [credentials] * len(URL_KEYS)
    assert credentials.read_text().count(data["POSTGRES_PASSWORD"]) == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_connection_string_matches_service_and_postgres(variant):
    docs = objects(variant)
    data = secret_data(docs)

    statefulset = one(docs, "StatefulSet", "postgres")
    template = statefulset["spec"]["template"]
    (postgres,) = containers(template)
    (port,) = postgres["ports"]
    service = one(docs, "Service", "postgres")
    assert matches({"matchLabels": service["spec"]["selector"]}, template["metadata"]["labels"])
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])

    for key in URL_KEYS.values():
        dsn = psycopg2.extensions.parse_dsn(data[key])
        assert dsn["host"] == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
        assert int(dsn["port"]) == service_port["port"]
        assert dsn["dbname"] == data["POSTGRES_DB"]
    # Postgres gets the keys of the Secret the image reads, and every program's connection string, which
    # db/passwords.sql reads for the roles' passwords; from the same Secret, under the same names.
    variables = env(postgres)
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", *URL_KEYS.values()):
        assert variables[key]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": key}}


def test_init_sql_configmap_is_db_init_sql_and_passwords_sql():
    docs = objects("base")
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    # The image runs them in the order of their names: the schema and the roles, then the roles' passwords.
    assert sorted(config_map["data"]) == ["init.sql", "passwords.sql"]
    for name in config_map["data"]:
        assert config_map["data"][name].encode() == (ROOT / "db" / name).read_bytes()
    template = one(docs, "StatefulSet", "postgres")["spec"]["template"]
    (volume,) = [v for v in template["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (postgres,) = containers(template)
    (mount,) = [m for m in postgres["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == "/docker-entrypoint-initdb.d"
    assert mount.get("readOnly") is True


def test_postgres_args_are_db_server_settings():
    (postgres,) = containers(one(objects("base"), "StatefulSet", "postgres")["spec"]["template"])
    settings = localpg.server_settings()
    assert settings, "db/server-settings.conf lists no setting"
    assert "command" not in postgres  # the image's entrypoint must run: it initialises the database
    assert postgres["args"] == [arg for name, value in settings for arg in ("-c", f"{name}={value}")]


def test_postgres_keeps_its_data_on_the_claim_where_the_image_puts_it_and_runs_as_the_images_user():
    statefulset = one(objects("base"), "StatefulSet", "postgres")
    template = statefulset["spec"]["template"]
    (postgres,) = containers(template)
    assert postgres["image"] == "postgres:18.1"
    major = int(postgres["image"].split(":")[1].split(".")[0])
    # The official image's volume: /var/lib/postgresql from 18 (PGDATA in 18/docker under it), /data before.
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in postgres["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == expected
    assert "PGDATA" not in env(postgres)  # the image's own default sits under the mount
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    # The two places a read-only root file system would stop the server, on emptyDirs.
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    for path in ("/var/run/postgresql", "/tmp"):
        (name,) = [n for n, p in mounts.items() if p == path]
        assert "emptyDir" in volumes[name]

    pod_security = template["spec"]["securityContext"]
    assert pod_security["runAsUser"] == pod_security["runAsGroup"] == pod_security["fsGroup"] == POSTGRES_IMAGE_UID
    # The probes: test_the_database_probes_ask_over_tcp_for_the_role_and_database_the_secret_creates.


@pytest.mark.parametrize("variant", VARIANTS)
def test_loop_settings_and_grace_period(variant):
    docs = objects(variant)
    (pusher,) = containers(one(docs, "Deployment", "job-pusher")["spec"]["template"])
    assert {k: env(pusher)[k]["value"] for k in ("PUSH_INTERVAL_MIN", "PUSH_INTERVAL_MAX")} == {
        "PUSH_INTERVAL_MIN": "1",
        "PUSH_INTERVAL_MAX": "3",
    }

    template = one(docs, "Deployment", "job-consumer")["spec"]["template"]
    (consumer,) = containers(template)
    times = {k: env(consumer)[k]["value"] for k in ("PROCESS_TIME_MIN", "PROCESS_TIME_MAX")}
    assert times == {"PROCESS_TIME_MIN": "2", "PROCESS_TIME_MAX": "10"}
    longest_job = float(times["PROCESS_TIME_MAX"])
    # A consumer told to stop finishes the job in hand before SIGKILL comes...
    assert template["spec"]["terminationGracePeriodSeconds"] > longest_job
    # ...and the server does not end the session of a consumer that is merely working on a long job.
    idle = postgres_seconds(dict(localpg.server_settings())["idle_in_transaction_session_timeout"])
    assert longest_job < idle


# ---------------------------------------------------------------------------------------------------------
# Hardening.


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_hardened(variant):
    for workload, template in pod_templates(objects(variant)):
        spec = template["spec"]
        where = workload["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False, where
        assert spec.get("enableServiceLinks") is False, where
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(template):
            security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, where
            assert isinstance(security.get("runAsGroup"), int) and security["runAsGroup"] > 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities") == {"drop": ["ALL"]}, where
            assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert not security.get("privileged"), where
            for kind in ("requests", "limits"):
                assert set(container.get("resources", {}).get(kind, {})) >= {"cpu", "memory"}, (where, kind)
            name, _, tag = container["image"].rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, container["image"]
            # Images loaded into kind or minikube are used as they are, never pulled.
            assert container["imagePullPolicy"] == "IfNotPresent"
            # Whatever a container may write goes to an emptyDir or its volume claim.
            for mount in container.get("volumeMounts", []):
                if not mount.get("readOnly"):
                    assert mount["name"] in claims or "emptyDir" in volumes[mount["name"]], (where, mount)


def test_loops_run_as_the_dockerfiles_user():
    docs = objects("base")
    for service, deployment in (("pusher", "job-pusher"), ("consumer", "job-consumer")):
        uid, gid = dockerfile_user(service)
        pod_security = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["securityContext"]
        assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (uid, gid) == (10001, 10001)


def test_images_are_tagged_once_and_match_compose_names():
    docs = objects("base")
    images = {c["image"] for _, t in pod_templates(docs) for c in containers(t)}
    assert images == {"postgres:18.1", "job-pusher:1.1.0", "job-consumer:1.1.0"}
    # Tags come from the kustomization's images: list; the manifests themselves name no tag.
    for path in (ROOT / "k8s" / "base").glob("*.yaml"):
        for line in path.read_text().splitlines():
            if re.match(r"\s*image:", line):
                assert ":" not in line.split("image:", 1)[1], f"{path.name}: {line.strip()}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_lets_in_only_the_loops_and_keda(variant):
    docs = objects(variant)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    templates = {w["metadata"]["name"]: t["metadata"]["labels"] for w, t in pod_templates(docs)}

    # Every pod is covered by some policy; nothing is open by default.
    for name, labels in templates.items():
        assert any(matches(p["spec"]["podSelector"], labels) for p in policies), name
    default_deny = one(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress"]}

    spec = one(docs, "NetworkPolicy", "postgres")["spec"]
    assert matches(spec["podSelector"], templates["postgres"])
    assert [n for n, labels in templates.items() if matches(spec["podSelector"], labels)] == ["postgres"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    (postgres,) = containers(one(docs, "StatefulSet", "postgres")["spec"]["template"])
    assert rule["ports"] == [{"protocol": "TCP", "port": postgres["ports"][0]["containerPort"]}]

    pod_peers = [p["podSelector"] for p in rule["from"] if set(p) == {"podSelector"}]
    allowed = sorted(n for n, labels in templates.items() if any(matches(s, labels) for s in pod_peers))
    assert allowed == ["job-consumer", "job-pusher"]
    (keda,) = [p for p in rule["from"] if "namespaceSelector" in p]
    assert keda["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
    assert keda["podSelector"] == {"matchLabels": {"app": "keda-operator"}}
    assert len(rule["from"]) == len(pod_peers) + 1  # no ipBlock, nothing else


# ---------------------------------------------------------------------------------------------------------
# Schemas: Kubernetes' and KEDA's.


def test_supported_versions_have_schemas():
    from kubernetes_validate.utils import all_versions

    shipped = {".".join(v.split(".")[:2]) for v in all_versions()}
    # kubernetes-validate silently uses an older schema for a version it does not ship.
    assert set(SUPPORTED_KUBERNETES) <= shipped


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_pass_kubernetes_validate_strict(variant, version):
    docs = [d for d in objects(variant) if d["kind"] not in KEDA_KINDS]
    assert docs
    problems = [p for d in docs for p in kubernetes_errors(d, version)]
    assert problems == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_objects_pass_keda_schema_strict(variant):
    docs = objects(variant)
    # Every object is validated by one of the two: the KEDA kinds here, all others by kubernetes-validate.
    keda = [d for d in docs if d["kind"] in KEDA_KINDS]
    assert {d["kind"] for d in keda} == KEDA_KINDS
    assert all(d["apiVersion"] == "keda.sh/v1alpha1" for d in keda)
    assert [p for d in keda for p in keda_errors(d)] == []
    assert scaler_errors(one(docs, "ScaledObject")) == []
    assert trigger_auth_errors(one(docs, "TriggerAuthentication")) == []


def test_validators_catch_the_mistakes_they_are_here_for():
    docs = objects("base")
    scaled_object = one(docs, "ScaledObject")

    # The article's key: KEDA's schema allows any metadata key (a map of strings), so only the scaler's key
    # list notices it.
    typo = copy.deepcopy(scaled_object)
    metadata = typo["spec"]["triggers"][0]["metadata"]
    metadata["activationQueryValue"] = metadata.pop("activationTargetQueryValue")
    assert keda_errors(typo) == []
    assert scaler_errors(typo) == ["the postgresql scaler does not read trigger metadata key 'activationQueryValue'"]

    misspelt = copy.deepcopy(scaled_object)
    misspelt["spec"]["cooldownPeriods"] = misspelt["spec"].pop("cooldownPeriod")
    assert keda_errors(misspelt)

    deep = copy.deepcopy(scaled_object)
    deep["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] = {"stabilizationWindow": 30}
    assert keda_errors(deep)

    quoted = copy.deepcopy(scaled_object)
    quoted["spec"]["minReplicaCount"] = "1"
    assert keda_errors(quoted)

    snake = copy.deepcopy(scaled_object)
    snake["spec"]["min_replica_count"] = snake["spec"].pop("minReplicaCount")
    assert keda_errors(snake)

    trigger_auth = copy.deepcopy(one(docs, "TriggerAuthentication"))
    trigger_auth["spec"]["secretTargetRef"][0]["parameter"] = "connectionString"
    assert keda_errors(trigger_auth) == [] and trigger_auth_errors(trigger_auth)

    deployment = copy.deepcopy(one(docs, "Deployment", "job-consumer"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    assert kubernetes_errors(deployment, SUPPORTED_KUBERNETES[0])
    deployment = copy.deepcopy(one(docs, "Deployment", "job-consumer"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30"
    assert kubernetes_errors(deployment, SUPPORTED_KUBERNETES[-1])


# ---------------------------------------------------------------------------------------------------------
# Scaling: the article's numbers, and what the HPA asks for.


@pytest.mark.parametrize("variant", VARIANTS)
def test_scaled_object_has_the_articles_numbers(variant):
    """The article's numbers, but for the one each variant changes."""
    spec = one(objects(variant), "ScaledObject", "job-consumer-scaler")["spec"]
    assert spec["minReplicaCount"] == {"base": 1, "scale-to-zero": 0, "shorter-wait": 1}[variant]
    assert (spec["maxReplicaCount"], spec["pollingInterval"], spec["cooldownPeriod"]) == (20, 15, 30)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"] == {
        "query": "SELECT COUNT(*) FROM jobs",
        "targetQueryValue": {"shorter-wait": "2"}.get(variant, "5"),
        "activationTargetQueryValue": "2",
    }
    # cooldownPeriod only governs the step to zero; between 1 and N the HPA's own window applies (300 s by
    # default), set here to the article's 30 s.
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 30}
    }


# Queue length -> consumers, in the base (minReplicaCount 1), with scale to zero (activation above 2) and with
# a consumer per 2 jobs (shorter-wait: 3 jobs ask for ceil(3 / 2) = 2; 23 for ceil(11.5) = 12, reached by 5, 10, 12).
EXPECTED_REPLICAS = {
    0: {"base": 1, "scale-to-zero": 0, "shorter-wait": 1},
    1: {"base": 1, "scale-to-zero": 0, "shorter-wait": 1},
    2: {"base": 1, "scale-to-zero": 0, "shorter-wait": 1},
    3: {"base": 1, "scale-to-zero": 1, "shorter-wait": 2},
    23: {"base": 5, "scale-to-zero": 5, "shorter-wait": 12},
    1000: {"base": 20, "scale-to-zero": 20, "shorter-wait": 20},
}


def test_hpa_replicas_for_queue_lengths(db_url):
    """The trigger's own query, run against the real schema, and what the HPA makes of its result."""
    scaled_objects = {v: one(objects(v), "ScaledObject") for v in VARIANTS}
    query = scaled_objects["base"]["spec"]["triggers"][0]["metadata"]["query"]
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM jobs")
        queued = 0
        for length in sorted(EXPECTED_REPLICAS):
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO jobs (payload) SELECT 'job ' || n FROM generate_series(1, %s) AS n", (length - queued,)
                )
                queued = length
                cur.execute(query)
                (count,) = cur.fetchone()
            assert count == length
            replicas = {v: settled_replicas(so, count) for v, so in scaled_objects.items()}
            assert replicas == EXPECTED_REPLICAS[length], f"{length} jobs"
    finally:
        conn.close()


def test_jobs_in_progress_are_counted(db_url):
    """A consumer's claim is an uncommitted DELETE: KEDA's session still counts the job until it is done."""
    consumer = load_loop("consumer")
    query = one(objects("base"), "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]

    worker, keda = psycopg2.connect(db_url), psycopg2.connect(db_url)
    keda.autocommit = True
    try:
        with worker, worker.cursor() as cur:
            cur.execute("DELETE FROM jobs")
            cur.execute("INSERT INTO jobs (payload) VALUES ('a'), ('b'), ('c')")
        with keda.cursor() as cur:
            cur.execute(query)
            assert cur.fetchone() == (3,)
        with worker.cursor() as claim:
            claim.execute(consumer.CLAIM_SQL)
            assert claim.fetchone() is not None
            with keda.cursor() as cur:
                cur.execute(query)
                assert cur.fetchone() == (3,)  # queued plus in progress
            worker.commit()
        with keda.cursor() as cur:
            cur.execute(query)
            assert cur.fetchone() == (2,)
    finally:
        worker.close()
        keda.close()


# ---------------------------------------------------------------------------------------------------------
# checkov, once for both variants.

# A deliberately weak Deployment scanned in the same run: checkov must find failures in it, or the zero
# below would prove nothing.
WEAK_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: weak, namespace: control}
spec:
  selector: {matchLabels: {app: weak}}
  template:
    metadata: {labels: {app: weak}}
    spec:
      containers: [{name: weak, image: "nginx:latest"}]
"""


@pytest.fixture(scope="module")
def checkov_kubernetes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rendered")
    for variant, target in VARIANTS.items():
        result = kustomize(target)
        assert result.returncode == 0, result.stderr
        (folder / f"{variant}.yaml").write_text(result.stdout)
    (folder / "control.yaml").write_text(WEAK_DEPLOYMENT)
    shutil.copy(BURST_JOB, folder / "burst-job.yaml")  # kept out of the base, scanned all the same
    result = subprocess.run(
        [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_kubernetes_reports_no_failed_check(checkov_kubernetes):
    results = checkov_kubernetes["results"]
    assert checkov_kubernetes["summary"]["parsing_errors"] == 0

    def by_file(checks):
        found = {}
        for check in checks:
            found.setdefault(Path(check["file_path"]).stem, []).append(check)
        return found

    failed, passed, skipped = (by_file(results[k]) for k in ("failed_checks", "passed_checks", "skipped_checks"))
    assert failed.get("control"), "checkov found nothing wrong with the weak control Deployment"
    for variant in VARIANTS:
        assert [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed.get(variant, [])] == []
        # Every workload was really scanned.
        scanned = {c["resource"].split(".")[-1] for c in passed[variant]}
        assert {"postgres", "job-pusher", "job-consumer"} <= scanned
        # Each skip carries its reason in the manifest.
        for check in skipped.get(variant, []):
            reason = check["check_result"].get("suppress_comment") or ""
            assert len(reason) > 20, f"{check['check_id']} {check['resource']}: {reason!r}"
    # The same checks are skipped in both variants: the component adds no exception of its own.
    assert sorted((c["check_id"], c["resource"]) for c in skipped["base"]) == sorted(
        (c["check_id"], c["resource"]) for c in skipped["scale-to-zero"]
    )


# ---------------------------------------------------------------------------------------------------------
# k8s/burst-job.yaml: a burst for the cluster, `kubectl create -f`, kept out of the base.

BURST_JOB = ROOT / "k8s" / "burst-job.yaml"


def burst_job():
    (job,) = yaml.safe_load_all(BURST_JOB.read_text())
    return job


def test_burst_job_is_not_in_the_base():
    for variant in VARIANTS:
        assert not [d for d in objects(variant) if d["kind"] == "Job"]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_burst_job_passes_kubernetes_validate_strict(version):
    job = burst_job()
    job["metadata"]["name"] = "job-burst-x"  # what generateName gives it; the schema wants a name
    assert kubernetes_errors(job, version) == []


def test_burst_job_runs_the_pusher_as_its_deployment_does():
    job, docs = burst_job(), objects("base")
    assert job["apiVersion"] == "batch/v1" and job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["backoffLimit"] == 0  # a pusher restarted would push PUSH_COUNT more
    template, pusher = job["spec"]["template"], one(docs, "Deployment", "job-pusher")["spec"]["template"]
    (container,), (deployed,) = containers(template), containers(pusher)
    assert container["image"] == deployed["image"]  # the tag k8s/base/kustomization.yaml sets, written out
    assert container["imagePullPolicy"] == deployed["imagePullPolicy"]
    # Hardened exactly like the pusher's pod.
    for key in ("securityContext", "automountServiceAccountToken", "enableServiceLinks"):
        assert template["spec"][key] == pusher["spec"][key], key
    for key in ("securityContext", "resources"):
        assert container[key] == deployed[key], key
    assert template["spec"]["restartPolicy"] == "Never"
    # It reads the connection string from the key the Deployment reads, and that key exists.
    assert env(container)["DATABASE_URL"] == env(deployed)["DATABASE_URL"]
    ref = env(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == SECRET and ref["key"] in secret_data(docs)
    # The pusher accepts its settings: no pause, and a count.
    settings = {name: value["value"] for name, value in env(container).items() if "value" in value}
    url, low, high, count = load_loop("pusher").read_config({**settings, "DATABASE_URL": "postgresql://x@y/z"})
    assert (low, high) == (0, 0) and count == 200


def test_burst_job_is_let_through_to_postgres():
    template = burst_job()["spec"]["template"]
    policy = one(objects("base"), "NetworkPolicy", "postgres")["spec"]
    (rule,) = policy["ingress"]
    # Same namespace, so a bare podSelector peer applies to it.
    assert any(
        set(peer) == {"podSelector"} and matches(peer["podSelector"], template["metadata"]["labels"])
        for peer in rule["from"]
    )


def test_checkov_reports_no_failed_check_on_the_burst_job(checkov_kubernetes):
    results = checkov_kubernetes["results"]
    files = {
        k: [c for c in results[k] if Path(c["file_path"]).stem == "burst-job"]
        for k in ("failed_checks", "passed_checks", "skipped_checks")
    }
    assert [f"{c['check_id']}: {c['check_name']}" for c in files["failed_checks"]] == []
    assert files["passed_checks"], "checkov did not scan k8s/burst-job.yaml"
    for check in files["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment") or "") > 20, check["check_id"]


# ---------------------------------------------------------------------------------------------------------
# docs/security.md's way to use other credentials: a git-ignored overlay that replaces the Secret, its two files
# taken from the chapter's own commands.


def heredoc(name):
    text = (ROOT / "docs" / "security.md").read_text()
    match = re.search(rf"cat > local/{re.escape(name)} <<'END'\n(.*?)^END$", text, re.S | re.M)
    assert match, f"docs/security.md does not write local/{name}"
    return match.group(1)


LOCAL_CREDENTIALS = heredoc("credentials.env")
LOCAL_KUSTOMIZATION = heredoc("kustomization.yaml").replace("../k8s/base", "{base}")


@pytest.mark.parametrize("variant, base", [("base", "../k8s/base"), ("scale-to-zero", "../k8s/overlays/scale-to-zero")])
def test_local_overlay_replaces_the_credentials(tmp_path, variant, base):
    for part in ("kustomization.yaml", "k8s", "db"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "credentials.env").write_text(LOCAL_CREDENTIALS)
    (tmp_path / "local" / "kustomization.yaml").write_text(LOCAL_KUSTOMIZATION.format(base=base))

    result = subprocess.run(
        [str(KUBECTL), "kustomize", "local"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    expected = dict(line.split("=", 1) for line in LOCAL_CREDENTIALS.splitlines())
    assert secret_data(docs) == expected  # replaced as a whole, under the same name
    assert secret_data(objects("base"))["POSTGRES_PASSWORD"] not in result.stdout
    # Nothing else changes.
    original = objects(variant)
    one(original, "Secret")["data"] = one(docs, "Secret")["data"]
    assert docs == original


# ---------------------------------------------------------------------------------------------------------
# Values checked against the reasons they were chosen for, not against their current numbers.


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_consumer_stopped_mid_job_has_time_to_finish_it_before_sigkill(variant):

    template = one(objects(variant), "Deployment", "job-consumer")["spec"]["template"]
    (consumer,) = containers(template)
    longest_job = float(env(consumer)["PROCESS_TIME_MAX"]["value"])
    grace = template["spec"].get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    assert grace >= longest_job + STOP_MARGIN


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_number_of_consumers_is_left_to_keda(variant):
    # Kubernetes' HPA documentation ("Migrating Deployments and StatefulSets to horizontal autoscaling"): with
    # spec.replicas in the manifest, every `kubectl apply` scales the Deployment back to that number.
    assert "replicas" not in one(objects(variant), "Deployment", "job-consumer")["spec"]


def test_one_database_server_and_one_pusher():
    docs = objects("base")
    statefulset = one(docs, "StatefulSet", "postgres")
    # Each replica would get a volume claim, and so a database, of its own, and the Service would send each
    # client to any of them: a job pushed to one would never reach a consumer connected to another.
    assert statefulset["spec"].get("replicas", 1) == 1
    assert one(docs, "Service", statefulset["spec"]["serviceName"])  # the governing Service the pod is named under
    # The article's pace, one job every 1 to 3 seconds, is one pusher's.
    assert one(docs, "Deployment", "job-pusher")["spec"].get("replicas", 1) == 1


def test_the_database_probes_ask_over_tcp_for_the_role_and_database_the_secret_creates():
    import shlex

    docs = objects("base")
    data = secret_data(docs)
    (postgres,) = containers(one(docs, "StatefulSet", "postgres")["spec"]["template"])
    variables = {
        name: data[v["valueFrom"]["secretKeyRef"]["key"]]
        for name, v in env(postgres).items()
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = postgres[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"] and len(command) == 3, probe
        words = [w for w in shlex.split(command[2]) if w != "exec"]
        assert words[0] == "pg_isready", probe
        # pg_isready's defaults are the OS user's name, postgres, a role the image does not create here: every
        # probe would make the server log a FATAL line.
        assert expand(option(words, "-U", "--username") or "", variables) == data["POSTGRES_USER"], probe
        assert expand(option(words, "-d", "--dbname") or "", variables) == data["POSTGRES_DB"], probe
        # On its first start the image runs initdb and init.sql on a server that listens on its socket only.
        host = option(words, "-h", "--host")
        assert host and not host.startswith("/"), f"{probe} must ask over TCP, as the clients connect"


def test_the_database_may_recover_from_a_crash_before_the_liveness_probe_takes_over():
    (postgres,) = containers(one(objects("base"), "StatefulSet", "postgres")["spec"]["template"])
    # After a crash the server replays the WAL written since its last checkpoint before it accepts a connection;
    # checkpoints come every checkpoint_timeout (PostgreSQL's default 5min, runtime-config-wal), and a busy
    # server can write that much WAL again in that time.
    checkpoint = postgres_seconds(dict(localpg.server_settings()).get("checkpoint_timeout", "5min"))
    probe = postgres["startupProbe"]
    assert probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) >= checkpoint


def test_the_namespace_refuses_pods_that_are_not_hardened():
    # Pod Security Admission's restricted level requires what test_every_container_is_hardened checks (non-root,
    # no privilege escalation, all capabilities dropped, RuntimeDefault seccomp): a later edit that weakens a pod
    # is then refused by the cluster, not merely reported here.
    labels = one(objects("base"), "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def admitted(policy, namespace_labels, pod_labels, port):
    """An emulation of NetworkPolicy ingress: may a pod with these labels, in a namespace with these, connect to
    `port` of the pods the policy selects? Kubernetes' rules (NetworkPolicyPeer, networking.k8s.io/v1): a peer
    with a podSelector only selects pods of the policy's own namespace, with a namespaceSelector only every pod of
    the namespaces it selects, with both the pods that match both; a rule without `from` admits every source, a
    rule without `ports` every port."""
    for rule in policy["spec"].get("ingress", []):
        if "ports" in rule and not any(
            p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in rule["ports"]
        ):
            continue
        if "from" not in rule:
            return True
        for peer in rule["from"]:
            if "ipBlock" in peer:
                continue
            if "namespaceSelector" in peer:
                in_namespace = matches(peer["namespaceSelector"], namespace_labels)
            else:
                in_namespace = namespace_labels.get("kubernetes.io/metadata.name") == policy["metadata"]["namespace"]
            if in_namespace and matches(peer.get("podSelector", {}), pod_labels):
                return True
    return False


def namespace(name):
    # Kubernetes labels every namespace with its own name (kubernetes.io/metadata.name, since 1.21).
    return {"kubernetes.io/metadata.name": name}


def hand_policy(*peers, ports=None):
    rule = {"from": list(peers)} if peers else {}
    if ports:
        rule["ports"] = [{"protocol": "TCP", "port": p} for p in ports]
    return {"metadata": {"namespace": "here"}, "spec": {"ingress": [rule]}}


BOTH = {"namespaceSelector": {"matchLabels": namespace("there")}, "podSelector": {"matchLabels": {"a": "1"}}}


@pytest.mark.parametrize(
    "policy, namespace_name, labels, port, expected",
    [
        (hand_policy({"podSelector": {"matchLabels": {"a": "1"}}}), "here", {"a": "1"}, 5432, True),
        (hand_policy({"podSelector": {"matchLabels": {"a": "1"}}}), "there", {"a": "1"}, 5432, False),
        (hand_policy({"podSelector": {"matchLabels": {"a": "1"}}}), "here", {"a": "2"}, 5432, False),
        (hand_policy({"namespaceSelector": {"matchLabels": namespace("there")}}), "there", {"any": "pod"}, 5432, True),
        (hand_policy({"namespaceSelector": {"matchLabels": namespace("there")}}), "here", {"any": "pod"}, 5432, False),
        (hand_policy(BOTH), "there", {"a": "1"}, 5432, True),
        (hand_policy(BOTH), "there", {"a": "2"}, 5432, False),
        (hand_policy(BOTH), "here", {"a": "1"}, 5432, False),
        (hand_policy({"namespaceSelector": {}}), "anywhere", {}, 5432, True),
        (hand_policy(), "anywhere", {}, 5432, True),
        (hand_policy({"podSelector": {}}, ports=[5432]), "here", {}, 5433, False),
        (hand_policy({"podSelector": {}}, ports=[5432]), "here", {}, 5432, True),
    ],
)
def test_the_network_policy_emulation(policy, namespace_name, labels, port, expected):
    assert admitted(policy, namespace(namespace_name), labels, port) is expected


# The labels of KEDA's pods as its two installs give them: the release manifests (kedacore/keda,
# config/manager/manager.yaml: `app` and `name` on the operator's pods) and the Helm chart (kedacore/charts,
# keda/templates/manager/deployment.yaml, with _helpers.tpl's keda.labels, which mark every KEDA pod as
# part-of keda-operator).
HELM_LABELS = {
    "app.kubernetes.io/component": "operator",
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/instance": "keda",
    "app.kubernetes.io/part-of": "keda-operator",
}
KEDA_PODS = {
    "operator, release manifests": ({"app": "keda-operator", "name": "keda-operator"}, True),
    "operator, Helm chart": (
        {"app": "keda-operator", "name": "keda-operator", "app.kubernetes.io/name": "keda-operator", **HELM_LABELS},
        True,
    ),
    "metrics API server, Helm chart": (
        {
            "app": "keda-operator-metrics-apiserver",
            "app.kubernetes.io/name": "keda-operator-metrics-apiserver",
            **HELM_LABELS,
        },
        False,
    ),
    "admission webhooks, Helm chart": (
        {"app": "keda-admission-webhooks", "app.kubernetes.io/name": "keda-admission-webhooks", **HELM_LABELS},
        False,
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_database_admits_the_loops_and_kedas_operator_as_keda_installs_it_and_no_one_else(variant):
    docs = objects(variant)
    policy = one(docs, "NetworkPolicy", "postgres")
    (postgres,) = containers(one(docs, "StatefulSet", "postgres")["spec"]["template"])
    port = postgres["ports"][0]["containerPort"]
    templates = {w["metadata"]["name"]: t["metadata"]["labels"] for w, t in pod_templates(docs)}

    for name in ("job-pusher", "job-consumer"):
        assert admitted(policy, namespace(NAMESPACE), templates[name], port), name
        assert not admitted(policy, namespace("default"), templates[name], port), f"{name} in another namespace"
    for what, (labels, expected) in KEDA_PODS.items():
        assert admitted(policy, namespace("keda"), labels, port) is expected, what
        assert not admitted(policy, namespace("default"), labels, port), f"{what} outside namespace keda"
        assert not admitted(policy, namespace(NAMESPACE), labels, port), f"{what} in {NAMESPACE}"
    assert not admitted(policy, namespace(NAMESPACE), {"app.kubernetes.io/name": "debug"}, port), "any other pod"
