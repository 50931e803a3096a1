import pytest

from recog import AUGMENTATIONS, DATASETS, MODELS, Registry, UserError


def test_register_and_get():
    registry = Registry("widget")

    @registry.register("round")
    def round_widget():
        return "round"

    @registry.register()
    def square():
        return "square"

    assert registry.get("round")() == "round"
    assert registry.get("square")() == "square"
    assert registry.names() == ["round", "square"]
    assert "round" in registry and len(registry) == 2


def test_duplicate_name_is_refused():
    registry = Registry("widget")
    registry.register("a")(lambda: 1)
    with pytest.raises(UserError, match="widget 'a' is already registered by"):
        registry.register("a")(lambda: 2)


def test_registering_the_same_definition_again_is_harmless():
    registry = Registry("widget")

    def make():
        return 1

    registry.register("a")(make)
    registry.register("a")(make)
    assert registry.names() == ["a"]


def test_unknown_name_lists_close_matches_and_everything():
    registry = Registry("model")
    for name in ("resnet18", "resnet50", "small_cnn"):
        registry.register(name)(lambda: None)
    with pytest.raises(UserError) as error:
        registry.get("resnt50")
    message = str(error.value)
    assert message.startswith("unknown model 'resnt50'; did you mean 'resnet50'")
    assert "Known models: resnet18, resnet50, small_cnn." in message


def test_builtins_are_registered():
    assert "small_cnn" in MODELS
    assert "digits" in DATASETS
    assert {"flip_lr", "pad_crop", "resize", "center_crop"} <= set(AUGMENTATIONS.names())
