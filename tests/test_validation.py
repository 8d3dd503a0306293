"""Checks before any network call: every bad input is a UsageError (a ValueError) naming the argument,
never another exception; every good one passes unchanged. Property tests over names, labels and sources."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bpj import errors, rules, validation
from bpj.local import vertex as emulator
from bpj.testing import configs
from bpj.testing import strategies as bst

LOCATION = "us-central1"

# -- display names ----------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=128))
def test_any_display_name_up_to_128_characters_passes(name):
    assert validation.display_name(name) == name


@given(st.text(min_size=129, max_size=300))
def test_a_longer_display_name_is_refused_naming_the_argument(name):
    with pytest.raises(errors.UsageError, match=r"^job_display_name: must be at most 128 characters"):
        validation.display_name(name)


@pytest.mark.parametrize("bad", ["", None, 3, "\ud800"])
def test_missing_or_broken_display_names_are_usage_errors(bad):
    with pytest.raises(errors.UsageError, match="job_display_name"):
        validation.display_name(bad)


# -- labels: the space of strings ---------------------------------------------------------------------


def _lower_letter(c: str) -> bool:
    return unicodedata.category(c) in ("Ll", "Lo") and c.lower() == c and c.isalnum()


documented = st.characters(categories=["Ll", "Lo", "Nd"]).filter(lambda c: c.lower() == c and c.isalnum()) | (
    st.sampled_from("_-")
)


@given(st.text(documented, max_size=64))
def test_documented_characters_up_to_64_make_a_good_value(text):
    assert validation.label_problem(text, key=False) is None


@given(st.text(documented, min_size=1, max_size=64))
def test_a_key_is_good_exactly_when_it_starts_with_a_letter(text):
    ok = validation.label_problem(text, key=True) is None
    assert ok == _lower_letter(text[0])


@given(st.text(documented, min_size=65, max_size=80), st.booleans())
def test_more_than_64_characters_is_refused(text, key):
    assert "at most 64" in validation.label_problem(text, key=key)


@given(st.text(max_size=70), st.booleans())
def test_any_text_is_either_refused_or_accepted_by_the_emulator_too(text, key):
    problem = validation.label_problem(text, key=key)
    if problem is None:
        assert emulator.label_problem(text, key=key) is None
        assert len(text) <= 64 and text == text.lower()


@given(
    st.text(max_size=20),
    st.sampled_from(["A", "Z", " ", ".", "/", "É", "\n", "@", "Ⅻ"]),
    st.text(max_size=20),
)
def test_uppercase_spaces_and_punctuation_are_refused(before, bad, after):
    for key in (True, False):
        assert validation.label_problem(before + bad + after, key=key) is not None


@pytest.mark.parametrize("good", ["team", "é-tiquette", "日本語", "straße", "a_1-2", "ключ"])
def test_international_lowercase_is_allowed(good):
    assert validation.labels({good: good}) == {good: good}


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=70))
def test_labels_either_pass_whole_or_fail_naming_the_key(labels):
    try:
        assert validation.labels(labels) == labels
    except errors.UsageError as e:
        bad = [
            k
            for k, v in labels.items()
            if validation.label_problem(k, key=True) or validation.label_problem(v, key=False)
        ]
        assert len(labels) > 64 or any(str(e).startswith(f"labels[{k!r}]") for k in bad)


def test_at_most_64_labels_counting_the_request_id():
    many = {f"k{i}": "v" for i in range(64)}
    assert validation.labels(many) == many
    with pytest.raises(errors.UsageError, match="request_id_label=False"):
        validation.labels(many, reserved=1)
    with pytest.raises(errors.UsageError, match="must be a mapping"):
        validation.labels([("a", "b")])


# -- model and job names ------------------------------------------------------------------------------


@given(bst.model_names(location=LOCATION, versions=True))
def test_full_model_names_pass_unchanged(name):
    assert validation.model_name(name, "p", LOCATION) == name


@given(bst.model_names(location=st.sampled_from(["europe-west4", "asia-east1"])))
def test_a_model_elsewhere_is_refused_saying_where(name):
    with pytest.raises(errors.UsageError, match="must run where its model is"):
        validation.model_name(name, "p", LOCATION)


@given(st.from_regex(r"\A[A-Za-z0-9_-]{1,40}(@[a-z0-9-]{1,10})?\Z"))
def test_bare_model_ids_use_the_defaults(model_id):
    assert (
        validation.model_name(model_id, "proj", LOCATION)
        == f"projects/proj/locations/{LOCATION}/models/{model_id}"
    )
    with pytest.raises(errors.UsageError, match="needs a project"):
        validation.model_name(model_id, None, LOCATION)


class HasName:
    resource_name = f"projects/p/locations/{LOCATION}/models/7"


def test_a_model_object_gives_its_resource_name():
    assert validation.model_name(HasName(), None, LOCATION) == HasName.resource_name
    assert validation.model_name("publishers/google/models/gemini-2.0-flash-001", None, LOCATION)


@given(st.text(max_size=60))
def test_any_text_is_a_model_name_or_a_usage_error(text):
    try:
        out = validation.model_name(text, "p", LOCATION)
    except errors.UsageError as e:
        assert str(e).startswith("model_name: ")
    else:
        assert validation.MODEL_NAME.match(out) or validation.PUBLISHER_MODEL.match(out)


@given(bst.job_names())
def test_full_job_names_pass_unchanged(name):
    assert validation.job_name(name, None, LOCATION) == name


@given(st.text(max_size=60))
def test_any_text_is_a_job_name_or_a_usage_error(text):
    try:
        out = validation.job_name(text, "p", LOCATION)
    except errors.UsageError as e:
        assert str(e).startswith("batch_prediction_job_name: ")
    else:
        assert validation.JOB_NAME.match(out)


# -- sources and destinations ---------------------------------------------------------------------------

uris = configs.gcs_uris  # valid by Cloud Storage's rules


@given(st.lists(uris, min_size=1, max_size=5), st.sampled_from([list, tuple, iter, "generator"]))
def test_gcs_source_takes_a_string_or_any_sequence(items, kind):
    value = (u for u in items) if kind == "generator" else kind(items)
    assert validation.gcs_uris(value) == items
    assert validation.gcs_uris(items[0]) == items[:1]


@given(
    st.one_of(st.text(max_size=30), st.lists(st.text(max_size=20), max_size=3), st.binary(), st.integers())
)
def test_any_gcs_source_is_uris_or_a_usage_error_naming_it(value):
    try:
        out = validation.gcs_uris(value)
    except errors.UsageError as e:
        assert str(e).startswith("gcs_source")
    else:
        assert out and all(u.startswith("gs://") for u in out)


@given(bst.project_ids(), st.from_regex(r"\A[A-Za-z0-9_]{1,30}\Z"), st.from_regex(r"\A\w{1,30}\Z"))
def test_bigquery_uris(project, dataset, table):
    assume(project[0].isalnum())
    uri = f"bq://{project}.{dataset}.{table}"
    assert validation.bigquery_source(uri) == uri
    assert validation.bigquery_destination(f"{project}.{dataset}") == f"bq://{project}.{dataset}"
    assert validation.bigquery_destination(f"bq://{project}") == f"bq://{project}"
    for bad in (f"bq://{project}", f"bq://{project}.{dataset}", f"{project}.{dataset}.{table}"):
        with pytest.raises(errors.UsageError, match="bigquery_source: must be bq://project.dataset.table"):
            validation.bigquery_source(bad)
    with pytest.raises(errors.UsageError, match="bigquery_destination_prefix"):
        validation.bigquery_destination(uri)


def build(**overrides):
    args = dict(
        project="p",
        location=LOCATION,
        job_display_name="j",
        model_name="1",
        instances_format="jsonl",
        predictions_format="jsonl",
        gcs_source="gs://bucket/in.jsonl",
        bigquery_source=None,
        gcs_destination_prefix="gs://bucket/out",
        bigquery_destination_prefix=None,
        model_parameters=None,
        machine_type=None,
        accelerator_type=None,
        accelerator_count=None,
        starting_replica_count=None,
        max_replica_count=None,
        generate_explanation=False,
        explanation_metadata=None,
        explanation_parameters=None,
        labels=None,
        encryption_spec_key_name=None,
        batch_size=None,
        service_account=None,
        instance_config=None,
        unmanaged_container_model=None,
        disable_container_logging=False,
    )
    fields = overrides.pop("fields", None)
    args.update(overrides)
    return validation.build_job(**args, fields=fields)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"gcs_source": None}, "gcs_source/bigquery_source: give exactly one"),
        ({"bigquery_source": "bq://p.d.t"}, "gcs_source/bigquery_source: give exactly one"),
        ({"gcs_destination_prefix": None}, "gcs_destination_prefix/bigquery_destination_prefix"),
        ({"instances_format": "parquet"}, "instances_format: must be one of"),
        ({"predictions_format": "bigquery"}, "predictions_format: bigquery needs"),
        ({"accelerator_count": 1}, "accelerator_count: only applies to dedicated resources"),
        (
            {"starting_replica_count": 2, "max_replica_count": 3},
            "starting_replica_count/max_replica_count: only applies to dedicated resources: pass machine_type= too",
        ),
        ({"machine_type": "n1-standard-4", "accelerator_type": "GPU"}, "accelerator_type: must be one of"),
        (
            {"machine_type": "n1-standard-4", "starting_replica_count": 3, "max_replica_count": 2},
            "must not exceed",
        ),
        ({"batch_size": 0}, "batch_size: must be an int from 1 to 2147483647"),
        ({"batch_size": True}, "batch_size"),
        ({"instance_config": {"instance_type": "table"}}, "instance_config.instance_type"),
        ({"instance_config": {"included_fields": ["a"], "excluded_fields": ["b"]}}, "not both"),
        ({"instance_config": {"nope": 1}}, "instance_config: not a valid InstanceConfig"),
        (
            {"instances_format": "csv", "instance_config": {"included_fields": ["a"]}},
            "instance_config.included_fields: need jsonl, bigquery",
        ),
        (
            {"instance_config": {"excluded_fields": ["a", ""]}},
            "instance_config.excluded_fields\\[1\\]: a field name",
        ),
        ({"model_name": None}, "model_name: a model is required"),
        ({"unmanaged_container_model": {"artifact_uri": "gs://b/m"}}, "model_name/unmanaged_container_model"),
        ({"explanation_metadata": {}}, "only apply together with generate_explanation"),
        (
            {"fields": {"colour": 1, "flavour": 2}},
            "colour/flavour: not an argument of create",
        ),
        (
            {"fields": {"gcs_destination": "gs://b/o"}},
            "gcs_destination: .*did you mean gcs_destination_prefix\\?",
        ),
        ({"fields": {"dedicated_resource": {}}}, "dedicated_resource: .*did you mean dedicated_resources\\?"),
        ({"fields": {"state": 4}}, "state: output only"),
        ({"fields": {"display_name": "x"}}, "display_name: also set by an argument"),
        ({"fields": {"input_config": {}}}, "input_config: also set"),
        ({"encryption_spec_key_name": "key"}, "encryption_spec_key_name: must be projects/"),
        ({"model_parameters": {1, 2}}, "model_parameters"),
    ],
)
def test_bad_creates_name_the_argument(overrides, named):
    with pytest.raises(errors.UsageError, match=named.replace("(", r"\(")):
        build(**overrides)


def test_argument_names_name_the_argument_as_the_caller_knows_it():
    flags = {"gcs_source": "--gcs-source", "labels": "--labels", "instance_config.key_field": "--key-field"}
    assert rules.name_of("gcs_source") == "gcs_source"
    assert rules.name_of("machine_type", call=True) == "machine_type="
    with rules.argument_names(flags):
        assert rules.name_of("gcs_source[1]") == "--gcs-source[1]"
        assert rules.name_of("labels['a.b']") == "--labels['a.b']"  # a dot in a key is not a path step
        assert rules.name_of("instance_config.key_field") == "--key-field"
        assert rules.name_of("instance_config.instance_type") == "instance_config.instance_type"
        assert rules.name_of("gcs_source", call=True) == "--gcs-source"
        assert rules.name_of("--labels") == "--labels"  # a display name is no argument: never named twice
        assert rules.name_of("gcs") == "gcs" and rules.name_of("gcs_source_x") == "gcs_source_x"
        with rules.argument_names({"labels": "LABELS"}):
            assert rules.name_of("labels") == "LABELS" and rules.name_of("gcs_source") == "--gcs-source"
        assert rules.name_of("labels") == "--labels"
        with pytest.raises(errors.UsageError) as caught:
            build(gcs_source=None)
    assert str(caught.value).startswith("--gcs-source/bigquery_source: give exactly one of --gcs-source and")
    assert rules.name_of("gcs_source") == "gcs_source"  # the block is over


def test_argument_names_stay_in_their_own_thread():
    import threading

    seen = []
    with rules.argument_names({"labels": "--labels"}):
        t = threading.Thread(target=lambda: seen.append(rules.name_of("labels")))
        t.start()
        t.join()
        assert rules.name_of("labels") == "--labels"
    assert seen == ["labels"]


def test_a_full_create_builds_the_v1_message():
    job = build(
        gcs_source=("gs://bucket/a.jsonl", "gs://bucket/b.jsonl"),
        machine_type="n1-standard-4",
        accelerator_type="NVIDIA_TESLA_T4",
        starting_replica_count=1,
        max_replica_count=4,
        batch_size=16,
        labels={"team": "vision"},
        model_parameters={"threshold": 0.5},
        instance_config={"instanceType": "object", "key_field": "id"},
        disable_container_logging=True,
        service_account="sa@p.iam.gserviceaccount.com",
        fields={"encryption_spec": {"kms_key_name": "projects/p/locations/l/keyRings/r/cryptoKeys/k"}},
    )
    assert job.model == f"projects/p/locations/{LOCATION}/models/1"
    assert list(job.input_config.gcs_source.uris) == ["gs://bucket/a.jsonl", "gs://bucket/b.jsonl"]
    assert job.dedicated_resources.machine_spec.accelerator_count == 1
    assert job.dedicated_resources.max_replica_count == 4
    assert job.manual_batch_tuning_parameters.batch_size == 16
    assert job.instance_config.key_field == "id" and job.instance_config.instance_type == "object"
    assert job.model_parameters.struct_value.fields["threshold"].number_value == 0.5
    assert job.disable_container_logging and job.encryption_spec.kms_key_name.endswith("/k")


def test_bigquery_source_and_destination_imply_the_bigquery_format():
    job = build(
        gcs_source=None,
        bigquery_source="bq://p.d.t",
        gcs_destination_prefix=None,
        bigquery_destination_prefix="p",
    )
    assert (
        job.input_config.instances_format == "bigquery" and job.output_config.predictions_format == "bigquery"
    )
    assert job.output_config.bigquery_destination.output_uri == "bq://p"
    with pytest.raises(errors.UsageError, match="instances_format: a bigquery_source reads format bigquery"):
        build(gcs_source=None, bigquery_source="bq://p.d.t", instances_format="csv")


def test_official_messages_are_accepted_for_message_fields():
    from google.cloud.aiplatform_v1.types import BatchPredictionJob as Official

    cfg = Official.InstanceConfig(instance_type="array", included_fields=["a", "b"])
    job = build(instance_config=cfg)
    assert list(job.instance_config.included_fields) == ["a", "b"]
