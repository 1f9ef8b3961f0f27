"""The demo's side process prepares the image part's feature network; a failure there is a
lost head start, reported, never a lost part."""


def test_preparing_the_feature_network_reports_a_failure_and_returns(monkeypatch, capsys):
    from probgen import demo
    from probgen.eval import features

    def broken(data, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(features, "feature_network", broken)
    demo._prepare_feature_network("digits", {"seed": 0, "smoke": True})
    out = capsys.readouterr().out
    assert "the feature network of digits was not prepared here" in out
    assert "OSError: No space left on device" in out and "its scoring trains it" in out


def test_no_feature_network_for_data_without_images(monkeypatch, capsys):
    from probgen import demo
    from probgen.eval import features

    def unexpected(data, **kwargs):
        raise AssertionError("a feature network was trained for vector data")

    monkeypatch.setattr(features, "feature_network", unexpected)
    demo._prepare_feature_network("ring8", {"seed": 0, "smoke": True})
    assert capsys.readouterr().out == ""
