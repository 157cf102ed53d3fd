from meshcni_example_extension import OPT_OUT, AcmeOptOut


def test_opted_out_pod_is_not_redirected(meshcni_pipeline, pod_factory):
    ext = AcmeOptOut()
    harness = meshcni_pipeline(ext)
    decision = harness.add(pod_factory(annotations={OPT_OUT: "true"}))
    assert not decision.redirect
    assert decision.verdicts[0].rule == "acme-opt-out"
    assert harness.backend.applied == []
    assert ext.outcomes == {"passed": 1}


def test_other_pods_are_still_redirected(meshcni_pipeline, pod_factory):
    ext = AcmeOptOut()
    harness = meshcni_pipeline(ext)
    decision = harness.add(pod_factory())
    assert decision.redirect
    assert len(harness.backend.applied) == 1
    assert ext.outcomes == {"redirected": 1}


def test_enabled_by_name_through_the_entry_point(meshcni_pipeline, pod_factory):
    harness = meshcni_pipeline(extensions=("acme-opt-out",))
    assert not harness.add(pod_factory(annotations={OPT_OUT: "TRUE"})).redirect
